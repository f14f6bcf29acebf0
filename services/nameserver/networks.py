"""Networks and network interfaces: records and leases in etcd, nothing on the hypervisors.

A network leases its VLAN id (``leases/vlans/<vlan>``) and, when it is created without a cidr,
the subnet chosen for it from the site's pool (``leases/subnets/<cidr>``); an interface leases
a MAC (in the same ``leases/macs/`` as VMs, so MACs are unique across the farm) and an address
of its network (``leases/addresses/<network>/<ip>``), and is listed in its VM's record. Every
lease is taken in the transaction that writes the record holding it, guarded by the lease key's
absence, like the hostname and MAC leases of VMs: two concurrent requests can never get the same
VLAN, chosen subnet, MAC or address. The hypervisors of this deployment cannot tag frames (the
kernel has no 802.1Q; see docs/decisions.md), so no VM is wired to these networks yet.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from services.common import names, records
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NetworkInterfaceNotFound,
    NetworkNotFound,
    Unavailable,
)
from services.common.identity import Principal
from services.common.keys import Keys
from services.common.pagination import page_by_key
from services.common.records import NetworkInterfaceRecord, NetworkRecord, NetworkState, VmRecord, VmState
from services.common.store import Compare, Delete, Entry, Put, Store
from services.nameserver import addressing, validation
from services.nameserver.access import load_vm, may_see

LOG = logging.getLogger(__name__)

ALLOCATIONS = ("DYNAMIC", "STATIC")
MAX_TITLE = 256
ATTEMPTS = 20


@dataclass(frozen=True)
class NetworkSpec:
    title: str
    vlan: int
    cidr: str
    gateway: str = ""
    allocation: str = ""  # "" means DYNAMIC


def parse_network_name(name: str) -> str:
    return names.parse_minted(name, names.NETWORK)


def parse_interface_name(name: str) -> str:
    return names.parse_minted(name, names.INTERFACE)


def random_mac() -> str:
    # 52:54:00 is QEMU's prefix; the rest random and leased in etcd, so unique across the farm.
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


class NetworkRegistry:
    def __init__(self, store: Store, keys: Keys, pool: addressing.SubnetPool | None = None) -> None:
        self._store = store
        self._keys = keys
        self._pool = pool or addressing.SubnetPool.parse(addressing.DEFAULT_POOL, addressing.DEFAULT_POOL_PREFIX)

    # --- networks -----------------------------------------------------------------------

    async def create(self, spec: NetworkSpec, principal: Principal, request_id: str) -> NetworkRecord:
        """A network with the cidr asked for or, when none is, the first free subnet of the
        site's pool (leased, so two creates never get the same one)."""
        validation.check_request_id(request_id)
        if len(spec.title) > MAX_TITLE or any(not c.isprintable() for c in spec.title):
            raise InvalidArgument(f"title must be at most {MAX_TITLE} printable characters", reason="INVALID_TITLE")
        addressing.check_vlan(spec.vlan)
        asked = addressing.parse_cidr(spec.cidr) if spec.cidr else None
        if asked is None and spec.gateway:
            raise InvalidArgument("a gateway needs its cidr: give both, or neither to have a subnet chosen", reason="INVALID_ADDRESS")
        gateway = addressing.gateway_of(asked, spec.gateway) if asked is not None else ""
        allocation = spec.allocation or "DYNAMIC"
        if allocation not in ALLOCATIONS:
            raise InvalidArgument(f"allocation must be DYNAMIC or STATIC, not {spec.allocation!r}", reason="INVALID_ALLOCATION")
        request_key = self._keys.network_request(request_id) if request_id else ""
        for _ in range(ATTEMPTS):
            if request_key and (existing := await self._store.get(request_key)) is not None:
                return await self.get(existing.value.decode(), principal)
            vlan = spec.vlan or addressing.first_free_vlan(await self._leased_vlans())
            net = asked or self._pool.first_free(await self._cidrs_in_use())
            network = NetworkRecord(
                id=names.new_id(names.NETWORK), title=spec.title, vlan=vlan, cidr=str(net),
                gateway=gateway or addressing.gateway_of(net, ""), allocation=allocation, owner_user=principal.user,
                owner_vo=principal.vo, request_id=request_id, subnet_leased=asked is None,
            )  # fmt: skip
            guards = [Compare(self._keys.vlan_lease(vlan), 0), Compare(self._keys.network(network.id), 0)]
            puts = [Put(self._keys.network(network.id), records.dump(network)), Put(self._keys.vlan_lease(vlan), network.id.encode())]
            if network.subnet_leased:
                guards.append(Compare(self._keys.subnet_lease(network.cidr), 0))
                puts.append(Put(self._keys.subnet_lease(network.cidr), network.id.encode()))
            if request_key:
                guards.append(Compare(request_key, 0))
                puts.append(Put(request_key, network.id.encode()))
            ok, revision = await self._store.txn(guards, puts)
            if ok:
                network.revision = revision
                LOG.info("created %s (VLAN %d, %s%s) for %s/%s", network.name, vlan, network.cidr,
                         " from the site's pool" if network.subnet_leased else "", principal.user, principal.vo)
                return network
            if spec.vlan and await self._store.get(self._keys.vlan_lease(vlan)) is not None:
                raise AlreadyExists(f"VLAN {vlan} is leased to another network: ask for another or for 0 (any)", reason="VLAN_IN_USE")
        raise Unavailable("creating the network kept conflicting with concurrent requests; retry with the same request_id")

    async def _cidrs_in_use(self) -> list[ipaddress.IPv4Network]:
        """Every network's subnet (anyone's: a chosen subnet overlaps none of them) and every
        subnet lease (one being written is not a network record yet)."""
        networks, _ = await self._store.get_prefix(self._keys.network())
        leases, _ = await self._store.get_prefix(self._keys.subnet_lease(), keys_only=True)
        cidrs = [records.load(NetworkRecord, e.value).cidr for e in networks]
        cidrs += [e.key.rsplit("/", 1)[-1].replace("_", "/") for e in leases]
        return [ipaddress.IPv4Network(c) for c in cidrs]

    async def _leased_vlans(self) -> list[int]:
        entries, _ = await self._store.get_prefix(self._keys.vlan_lease(), keys_only=True)
        return [int(e.key.rsplit("/", 1)[-1]) for e in entries]

    async def _load(self, network_id: str, principal: Principal) -> tuple[Entry, NetworkRecord]:
        entry = await self._store.get(self._keys.network(network_id))
        network = records.load(NetworkRecord, entry.value) if entry else None
        if entry is None or network is None or not may_see(network.owner_user, network.owner_vo, principal):
            raise NetworkNotFound(f"networks/{network_id} does not exist")
        network.revision = entry.mod_revision
        return entry, network

    async def get(self, network_id: str, principal: Principal) -> NetworkRecord:
        return (await self._load(network_id, principal))[1]

    async def list_networks(self, principal: Principal, page_size: int, page_token: str) -> tuple[list[NetworkRecord], str]:
        def keep(e: Entry) -> NetworkRecord | None:
            network = records.load(NetworkRecord, e.value)
            network.revision = e.mod_revision
            return network if may_see(network.owner_user, network.owner_vo, principal) else None

        return await page_by_key(self._store, self._keys.network(), keep, page_size, page_token)

    async def delete(self, network_id: str, principal: Principal) -> None:
        while True:
            entry, network = await self._load(network_id, principal)
            if network.interface_count:
                raise FailedPrecondition(
                    f"{network.name} has {network.interface_count} interface(s): delete them first", reason="NETWORK_IN_USE"
                )
            ops: list[Put | Delete] = [Delete(entry.key), Delete(self._keys.vlan_lease(network.vlan))]
            if network.subnet_leased:
                ops.append(Delete(self._keys.subnet_lease(network.cidr)))
            if network.request_id:
                ops.append(Delete(self._keys.network_request(network.request_id)))
            ok, _ = await self._store.txn([Compare(entry.key, entry.mod_revision)], ops)
            if ok:
                LOG.info("deleted %s (VLAN %d freed)", network.name, network.vlan)
                return

    async def set_state(self, network_id: str, principal: Principal, up: bool) -> NetworkRecord:
        while True:
            entry, network = await self._load(network_id, principal)
            network.state, network.update_time = (NetworkState.ACTIVE if up else NetworkState.INACTIVE), time.time()
            ok, revision = await self._store.txn([Compare(entry.key, entry.mod_revision)], [Put(entry.key, records.dump(network))])
            if ok:
                network.revision = revision
                return network

    # --- interfaces ---------------------------------------------------------------------

    async def create_interface(
        self, vm_id: str, network_id: str, ip_address: str, principal: Principal, request_id: str
    ) -> NetworkInterfaceRecord:
        validation.check_request_id(request_id)
        request_key = self._keys.network_interface_request(request_id) if request_id else ""
        for _ in range(ATTEMPTS):
            if request_key and (existing := await self._store.get(request_key)) is not None:
                return await self.get_interface(existing.value.decode(), principal)
            n_entry, network = await self._load(network_id, principal)
            vm_entry, vm = await load_vm(self._store, self._keys, vm_id, principal)
            if vm.state in (VmState.DELETING, VmState.FAILED):
                raise FailedPrecondition(f"{vm.name} is {vm.state}: it cannot get interfaces", reason="INVALID_VM_STATE")
            address = await self._address_for(network, ip_address)
            interface = NetworkInterfaceRecord(
                id=names.new_id(names.INTERFACE), vm_id=vm_id, network_id=network_id, mac_address=random_mac(),
                ip_address=address, owner_user=principal.user, owner_vo=principal.vo, request_id=request_id,
            )  # fmt: skip
            network.interface_count += 1
            network.update_time = vm.update_time = time.time()
            vm.networks.append(_vm_entry(interface, network))
            guards = [
                Compare(n_entry.key, n_entry.mod_revision),
                Compare(vm_entry.key, vm_entry.mod_revision),
                Compare(self._keys.address_lease(network_id, address), 0),
                Compare(self._keys.mac_lease(interface.mac_address), 0),
            ]
            puts = [
                Put(self._keys.network_interface(interface.id), records.dump(interface)),
                Put(self._keys.address_lease(network_id, address), interface.id.encode()),
                Put(self._keys.mac_lease(interface.mac_address), interface.id.encode()),
                Put(n_entry.key, records.dump(network)),
                Put(vm_entry.key, records.dump(vm)),
            ]
            if request_key:
                guards.append(Compare(request_key, 0))
                puts.append(Put(request_key, interface.id.encode()))
            ok, _ = await self._store.txn(guards, puts)
            if ok:
                LOG.info("created %s: %s on %s, %s %s", interface.name, vm.name, network.name, address, interface.mac_address)
                return interface
            if ip_address and await self._store.get(self._keys.address_lease(network_id, address)) is not None:
                raise AlreadyExists(f"{address} is leased to another interface of {network.name}", reason="ADDRESS_IN_USE")
        raise Unavailable("creating the interface kept conflicting with concurrent requests; retry with the same request_id")

    async def _address_for(self, network: NetworkRecord, wanted: str) -> str:
        net = addressing.parse_cidr(network.cidr)
        if wanted:
            address = str(addressing.check_host_address(net, wanted, "ip_address"))
            if address == network.gateway:
                raise InvalidArgument(f"ip_address {address} is the gateway of {network.name}", reason="INVALID_ADDRESS")
            return address
        if network.allocation == "STATIC":
            raise InvalidArgument(f"{network.name} allocates addresses STATICally: give the interface's ip_address", reason="ADDRESS_REQUIRED")
        entries, _ = await self._store.get_prefix(self._keys.address_lease(network.id), keys_only=True)
        return addressing.first_free_address(net, network.gateway, (e.key.rsplit("/", 1)[-1] for e in entries))

    async def _load_interface(self, interface_id: str, principal: Principal) -> NetworkInterfaceRecord:
        entry = await self._store.get(self._keys.network_interface(interface_id))
        interface = records.load(NetworkInterfaceRecord, entry.value) if entry else None
        if interface is None or not may_see(interface.owner_user, interface.owner_vo, principal):
            raise NetworkInterfaceNotFound(f"networkInterfaces/{interface_id} does not exist")
        return interface

    async def get_interface(self, interface_id: str, principal: Principal) -> NetworkInterfaceRecord:
        return await self._load_interface(interface_id, principal)

    async def list_interfaces(
        self, principal: Principal, page_size: int, page_token: str, network_id: str = "", vm_id: str = ""
    ) -> tuple[list[NetworkInterfaceRecord], str]:
        def keep(e: Entry) -> NetworkInterfaceRecord | None:
            interface = records.load(NetworkInterfaceRecord, e.value)
            wanted = (not network_id or interface.network_id == network_id) and (not vm_id or interface.vm_id == vm_id)
            return interface if wanted and may_see(interface.owner_user, interface.owner_vo, principal) else None

        return await page_by_key(self._store, self._keys.network_interface(), keep, page_size, page_token)

    async def network_states(self, network_ids: set[str]) -> dict[str, str]:
        """network id -> state, for interfaces' states (a missing network counts as INACTIVE)."""
        out = {}
        for network_id in network_ids:
            entry = await self._store.get(self._keys.network(network_id))
            out[network_id] = records.load(NetworkRecord, entry.value).state if entry else NetworkState.INACTIVE
        return out

    async def delete_interface(self, interface_id: str, principal: Principal) -> None:
        await self._load_interface(interface_id, principal)
        await self._remove_interface(interface_id)

    async def release_vm(self, vm: VmRecord) -> None:
        """Removes every interface of a VM that is going away (freeing its leases)."""
        for entry in vm.networks:
            await self._remove_interface(str(entry["interface"]), vm.id)

    async def remove_orphans(self, entries: Sequence[Entry]) -> None:
        """Removes those of these interface records whose VM is gone (the reconciler's safety
        net; it hands them over a page at a time)."""
        interfaces = [records.load(NetworkInterfaceRecord, e.value) for e in entries]
        vms = await self._store.get_many([self._keys.vm(i.vm_id) for i in interfaces])
        for interface, vm in zip(interfaces, vms, strict=True):
            if vm is None:
                LOG.warning("%s belonged to virtualMachines/%s, which is gone: removing it", interface.name, interface.vm_id)
                await self._remove_interface(interface.id)

    async def _remove_interface(self, interface_id: str, vm_id: str = "") -> None:
        """Interface, its leases, its entry in its VM and its network's count, in one transaction.
        An interface already gone is only dropped from vm_id's record, if it is still listed."""
        key = self._keys.network_interface(interface_id)
        while True:
            entry = await self._store.get(key)
            if entry is None:
                if vm_id:
                    await self._drop_stale_entry(vm_id, interface_id)
                return
            interface = records.load(NetworkInterfaceRecord, entry.value)
            n_key, vm_key = self._keys.network(interface.network_id), self._keys.vm(interface.vm_id)
            n_entry, vm_entry = await self._store.get(n_key), await self._store.get(vm_key)
            guards = [Compare(key, entry.mod_revision), Compare.unchanged(n_entry, n_key), Compare.unchanged(vm_entry, vm_key)]
            ops: list[Put | Delete] = [
                Delete(key),
                Delete(self._keys.address_lease(interface.network_id, interface.ip_address)),
                Delete(self._keys.mac_lease(interface.mac_address)),
            ]
            if interface.request_id:
                ops.append(Delete(self._keys.network_interface_request(interface.request_id)))
            if n_entry is not None:
                network = records.load(NetworkRecord, n_entry.value)
                network.interface_count = max(0, network.interface_count - 1)
                ops.append(Put(n_key, records.dump(network)))
            if vm_entry is not None:
                vm = records.load(VmRecord, vm_entry.value)
                vm.networks = [n for n in vm.networks if n.get("interface") != interface_id]
                ops.append(Put(vm_key, records.dump(vm)))
            ok, _ = await self._store.txn(guards, ops)
            if ok:
                LOG.info("removed %s (%s and %s freed)", interface.name, interface.ip_address, interface.mac_address)
                return

    async def _drop_stale_entry(self, vm_id: str, interface_id: str) -> None:
        vm_key = self._keys.vm(vm_id)
        while (vm_entry := await self._store.get(vm_key)) is not None:
            vm = records.load(VmRecord, vm_entry.value)
            if not any(n.get("interface") == interface_id for n in vm.networks):
                return
            vm.networks = [n for n in vm.networks if n.get("interface") != interface_id]
            ok, _ = await self._store.txn([Compare(vm_key, vm_entry.mod_revision)], [Put(vm_key, records.dump(vm))])
            if ok:
                return


def _vm_entry(interface: NetworkInterfaceRecord, network: NetworkRecord) -> dict[str, object]:
    return {"interface": interface.id, "network": network.id, "mac": interface.mac_address, "ip": interface.ip_address, "vlan": network.vlan}
