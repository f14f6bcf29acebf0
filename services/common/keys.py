"""The etcd key layout, in one place. Every key lives under a root prefix ("/wnodes/v1" by
default) so that several stacks can share one etcd cluster in tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    root: str = "/wnodes/v1"

    def hypervisor(self, host: str = "") -> str:
        """Lease-bound: disappears when the agent stops renewing it."""
        return f"{self.root}/hypervisors/{host}"

    def usage(self, host: str = "") -> str:
        return f"{self.root}/usage/{host}"

    def vm(self, vm_id: str = "") -> str:
        return f"{self.root}/vms/{vm_id}"

    def placements(self, host: str) -> str:
        return f"{self.root}/placements/{host}/"

    def placement(self, host: str, vm_id: str) -> str:
        return f"{self.root}/placements/{host}/{vm_id}"

    def request(self, request_id: str) -> str:
        return f"{self.root}/requests/{request_id}"

    def operation(self, op_id: str = "") -> str:
        return f"{self.root}/operations/{op_id}"

    def volume(self, volume_id: str = "") -> str:
        return f"{self.root}/volumes/{volume_id}"

    def volume_request(self, request_id: str) -> str:
        """The volume a create with this request id made (VM requests sit under requests/)."""
        return f"{self.root}/requests/volumes/{request_id}"

    def network(self, network_id: str = "") -> str:
        return f"{self.root}/networks/{network_id}"

    def network_request(self, request_id: str) -> str:
        return f"{self.root}/requests/networks/{request_id}"

    def network_interface(self, interface_id: str = "") -> str:
        return f"{self.root}/networkInterfaces/{interface_id}"

    def network_interface_request(self, request_id: str) -> str:
        return f"{self.root}/requests/networkInterfaces/{request_id}"

    def vlan_lease(self, vlan: int | None = None) -> str:
        return f"{self.root}/leases/vlans/" + (f"{vlan:04d}" if vlan is not None else "")

    def subnet_lease(self, cidr: str = "") -> str:
        """Subnets chosen from the site's pool: leases/subnets/<address>_<prefix> ("10.128.0.0_24")."""
        return f"{self.root}/leases/subnets/" + cidr.replace("/", "_")

    def address_lease(self, network_id: str, address: str = "") -> str:
        """Addresses leased in one network: leases/addresses/<network id>/<ip>."""
        return f"{self.root}/leases/addresses/{network_id}/{address}"

    def hostname_lease(self, hostname: str) -> str:
        return f"{self.root}/leases/hostnames/{hostname}"

    def mac_lease(self, mac: str) -> str:
        return f"{self.root}/leases/macs/{mac}"

    def nameserver(self, ns_id: str = "") -> str:
        return f"{self.root}/nameservers/{ns_id}"

    def image_version(self, image: str = "", version: int | None = None) -> str:
        if version is None:
            return f"{self.root}/images/{image}/" if image else f"{self.root}/images/"
        return f"{self.root}/images/{image}/{version:08d}"

    def prefetch(self, image: str = "") -> str:
        """A request that hosts warm their caches with an image's newest version."""
        return f"{self.root}/prefetches/{image}"

    def election(self, duty: str) -> str:
        return f"{self.root}/elections/{duty}"
