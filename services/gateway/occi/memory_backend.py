"""An in-memory CloudBackend for unit tests, contract tests and fuzzing: no etcd, no VMs.

It answers as the real API does, so that what passes here means the same against the gateway:
computes become active at once and actions follow the API's power table; storage attaches as
virtio disks vdb ... vdz whose serial is its id (to a suspended compute too; it is detached
from a running or stopped one only); networks without an address get a free /24;
interfaces lease a MAC and an address. Everything is owned by the principal that created it,
and only that principal sees it.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from dataclasses import dataclass, field, replace
from typing import TypeVar

from services.common.errors import AlreadyExists, FailedPrecondition, ImageNotFound, InvalidArgument, NoCapacity, NotFound
from services.common.identity import Principal
from services.gateway.occi.cloud_backend import (
    Compute,
    ComputeAction,
    ComputeSpec,
    ComputeState,
    ImageTemplate,
    Network,
    NetworkInterface,
    NetworkSpec,
    Storage,
    StorageLink,
    StorageSpec,
    storage_link_id,
)

T = TypeVar("T")
DEVICES = tuple(f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz")
# (action, state) -> new state, as services/nameserver/power.py; a missing pair is refused.
_POWER: dict[tuple[str, str], ComputeState] = {
    ("stop", "active"): "inactive", ("stop", "suspended"): "inactive", ("stop", "inactive"): "inactive",
    ("start", "active"): "active", ("start", "suspended"): "active", ("start", "inactive"): "active",
    ("restart", "active"): "active", ("suspend", "active"): "suspended", ("suspend", "suspended"): "suspended",
}  # fmt: skip
_MESSAGES = {"active": "running", "inactive": "stopped", "suspended": "suspended"}


@dataclass
class _Owned:
    owner: tuple[str, str]
    value: object


@dataclass
class MemoryCloudBackend:
    images: dict[str, set[str]] = field(default_factory=lambda: {"tiny": {"*"}, "debian12": {"*"}})
    """Image name -> VOs that may use it ("*": every VO)."""
    max_cores: int = 64
    _store: dict[str, dict[str, _Owned]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # --- helpers ---------------------------------------------------------------------------

    def _put(self, kind: str, principal: Principal, obj_id: str, value: object) -> None:
        self._store.setdefault(kind, {})[obj_id] = _Owned((principal.user, principal.vo), value)

    def _get(self, kind: str, principal: Principal, obj_id: str, cls: type[T]) -> T:
        found = self._store.get(kind, {}).get(obj_id)
        if found is None or found.owner != (principal.user, principal.vo):
            raise NotFound(f"{kind}/{obj_id} does not exist")
        assert isinstance(found.value, cls)
        return found.value

    def _list(self, kind: str, principal: Principal, cls: type[T]) -> list[T]:
        out = []
        for item in self._store.get(kind, {}).values():
            if item.owner == (principal.user, principal.vo):
                assert isinstance(item.value, cls)
                out.append(item.value)
        return out

    def _everyone(self, kind: str, cls: type[T]) -> list[T]:
        return [item.value for item in self._store.get(kind, {}).values() if isinstance(item.value, cls)]

    def _delete(self, kind: str, principal: Principal, obj_id: str) -> None:
        self._get(kind, principal, obj_id, object)
        del self._store[kind][obj_id]

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    # --- images ----------------------------------------------------------------------------

    async def list_images(self, principal: Principal) -> list[ImageTemplate]:
        return [ImageTemplate(name, f"image {name}") for name, vos in sorted(self.images.items()) if "*" in vos or principal.vo in vos]

    # --- compute ---------------------------------------------------------------------------

    async def create_compute(self, principal: Principal, spec: ComputeSpec) -> Compute:
        if spec.image not in {t.image for t in await self.list_images(principal)}:
            raise ImageNotFound(f"image {spec.image!r} does not exist or is not visible to VO {principal.vo!r}")
        if spec.cores > self.max_cores:
            raise NoCapacity(f"cannot place the VM: no hypervisor has {spec.cores} free cores")
        for storage_id in spec.storage_ids:
            self._get("storage", principal, storage_id, Storage)
            if (attached := self._attached(principal, storage_id)) is not None:
                raise FailedPrecondition(f"volumes/{storage_id} is attached to virtualMachines/{attached.compute_id}: detach it first",
                                         reason="VOLUME_ATTACHED")
        cid = self._new_id("vm")
        compute = Compute(cid, spec.image, spec.cores, spec.memory_mib, "active", "running", spec.title, spec.summary,
                          spec.resource_tpl, hostname=f"vwn-{cid[3:]}", ssh_endpoint=f"127.0.0.1:{20000 + int(cid[3:]) % 10000}")
        self._put("compute", principal, cid, compute)
        return replace(compute)

    async def get_compute(self, principal: Principal, compute_id: str) -> Compute:
        return replace(self._get("compute", principal, compute_id, Compute))

    async def list_computes(self, principal: Principal) -> list[Compute]:
        return [replace(c) for c in self._list("compute", principal, Compute)]

    async def update_compute(self, principal: Principal, compute_id: str, title: str, summary: str) -> Compute:
        compute = self._get("compute", principal, compute_id, Compute)
        compute.title, compute.summary = title, summary
        return replace(compute)

    async def delete_compute(self, principal: Principal, compute_id: str) -> None:
        self._delete("compute", principal, compute_id)
        for link in self._list("storagelink", principal, StorageLink):
            if link.compute_id == compute_id:
                self._delete("storagelink", principal, link.id)
        for nic in self._list("networkinterface", principal, NetworkInterface):
            if nic.compute_id == compute_id:
                self._delete("networkinterface", principal, nic.id)

    async def compute_action(self, principal: Principal, compute_id: str, action: ComputeAction) -> Compute:
        compute = self._get("compute", principal, compute_id, Compute)
        new = _POWER.get((action, compute.state))
        if new is None:
            raise FailedPrecondition(f"cannot {action} virtualMachines/{compute_id}: it is {compute.state}",
                                     reason="INVALID_POWER_TRANSITION")
        compute.state, compute.state_message = new, _MESSAGES[new]
        return replace(compute)

    async def save_compute(self, principal: Principal, compute_id: str, image: str) -> ImageTemplate:
        compute = self._get("compute", principal, compute_id, Compute)
        self.images.setdefault(image, set()).add(principal.vo)
        return ImageTemplate(image, f"saved from {compute.id}")

    # --- storage ---------------------------------------------------------------------------

    async def create_storage(self, principal: Principal, spec: StorageSpec) -> Storage:
        sid = self._new_id("vol")
        storage = Storage(sid, spec.size_gib, "online", "", spec.title)
        self._put("storage", principal, sid, storage)
        return replace(storage)

    async def get_storage(self, principal: Principal, storage_id: str) -> Storage:
        return replace(self._get("storage", principal, storage_id, Storage))

    async def list_storages(self, principal: Principal) -> list[Storage]:
        return [replace(s) for s in self._list("storage", principal, Storage)]

    def _attached(self, principal: Principal, storage_id: str) -> StorageLink | None:
        return next((link for link in self._list("storagelink", principal, StorageLink) if link.storage_id == storage_id), None)

    async def delete_storage(self, principal: Principal, storage_id: str) -> None:
        self._get("storage", principal, storage_id, Storage)
        if self._attached(principal, storage_id):
            raise FailedPrecondition(f"volumes/{storage_id} is attached: detach it first", reason="VOLUME_ATTACHED")
        self._delete("storage", principal, storage_id)

    async def set_storage_online(self, principal: Principal, storage_id: str, online: bool) -> Storage:
        storage = self._get("storage", principal, storage_id, Storage)
        if not online and self._attached(principal, storage_id):
            raise FailedPrecondition(f"volumes/{storage_id} is attached: detach it before taking it offline", reason="VOLUME_ATTACHED")
        storage.state = "online" if online else "offline"
        return replace(storage)

    # --- network ---------------------------------------------------------------------------

    async def create_network(self, principal: Principal, spec: NetworkSpec) -> Network:
        if spec.address:
            try:
                net = ipaddress.IPv4Network(spec.address)
            except ValueError as exc:
                raise InvalidArgument(f"cidr {spec.address!r} is not an IPv4 network like 10.20.0.0/24", reason="INVALID_CIDR") from exc
        else:  # like the nameservers: the first /24 of the pool that no network overlaps
            taken = [ipaddress.IPv4Network(n.address) for n in self._everyone("network", Network)]
            net = next(s for s in ipaddress.IPv4Network("10.128.0.0/9").subnets(new_prefix=24) if not any(s.overlaps(t) for t in taken))
        vlans = {n.vlan for n in self._everyone("network", Network)}
        if spec.vlan and spec.vlan in vlans:
            raise AlreadyExists(f"VLAN {spec.vlan} is leased to another network", reason="VLAN_IN_USE")
        nid = self._new_id("net")
        network = Network(nid, "active", "", spec.title, spec.vlan or next(v for v in range(2, 4095) if v not in vlans), str(net),
                          spec.gateway or str(net.network_address + 1), spec.allocation or "dynamic")
        self._put("network", principal, nid, network)
        return replace(network)

    async def get_network(self, principal: Principal, network_id: str) -> Network:
        return replace(self._get("network", principal, network_id, Network))

    async def list_networks(self, principal: Principal) -> list[Network]:
        return [replace(n) for n in self._list("network", principal, Network)]

    async def delete_network(self, principal: Principal, network_id: str) -> None:
        self._get("network", principal, network_id, Network)
        if any(nic.network_id == network_id for nic in self._list("networkinterface", principal, NetworkInterface)):
            raise FailedPrecondition(f"networks/{network_id} has interfaces: delete them first", reason="NETWORK_IN_USE")
        self._delete("network", principal, network_id)

    async def set_network_up(self, principal: Principal, network_id: str, up: bool) -> Network:
        network = self._get("network", principal, network_id, Network)
        network.state = "active" if up else "inactive"
        for nic in self._list("networkinterface", principal, NetworkInterface):
            if nic.network_id == network_id:
                nic.state = network.state
        return replace(network)

    # --- links -----------------------------------------------------------------------------

    async def attach_storage(self, principal: Principal, compute_id: str, storage_id: str, device: str = "") -> StorageLink:
        self._get("compute", principal, compute_id, Compute)
        storage = self._get("storage", principal, storage_id, Storage)
        attached = self._attached(principal, storage_id)
        if attached is not None:
            if attached.compute_id == compute_id:
                return replace(attached)  # as a retried AttachVolume
            raise FailedPrecondition(f"volumes/{storage_id} is attached to virtualMachines/{attached.compute_id}: detach it first",
                                     reason="VOLUME_ATTACHED")
        if storage.state != "online":
            raise FailedPrecondition(f"volumes/{storage_id} is {storage.state}: bring it online first", reason="VOLUME_NOT_ONLINE")
        used = {link.device.removeprefix("/dev/") for link in self._list("storagelink", principal, StorageLink) if link.compute_id == compute_id}
        if device and not re.fullmatch(r"vd[b-z]", device):
            raise InvalidArgument(f"device {device!r} must be one of vdb ... vdz (vda is the root disk)", reason="INVALID_DEVICE")
        if device in used:
            raise FailedPrecondition(f"device {device} of the VM is taken by another volume", reason="DEVICE_IN_USE")
        chosen = device or next((d for d in DEVICES if d not in used), "")
        if not chosen:
            raise FailedPrecondition(f"the VM has {len(DEVICES)} volumes attached: no device left", reason="DEVICE_IN_USE")
        link = StorageLink(storage_link_id(compute_id, storage_id), compute_id, storage_id, f"/dev/{chosen}", serial=storage_id)
        self._put("storagelink", principal, link.id, link)
        return replace(link)

    async def list_storage_links(self, principal: Principal) -> list[StorageLink]:
        return [replace(link) for link in self._list("storagelink", principal, StorageLink)]

    async def detach_storage(self, principal: Principal, link_id: str) -> None:
        link = self._get("storagelink", principal, link_id, StorageLink)
        if self._get("compute", principal, link.compute_id, Compute).state == "suspended":
            raise FailedPrecondition(f"cannot detach volumes from virtualMachines/{link.compute_id} while it is SUSPENDED: "
                                     "a paused guest cannot let go of a disk; start it first", reason="INVALID_VM_STATE")
        self._delete("storagelink", principal, link_id)

    async def create_network_interface(
        self, principal: Principal, compute_id: str, network_id: str, address: str = ""
    ) -> NetworkInterface:
        self._get("compute", principal, compute_id, Compute)
        network = self._get("network", principal, network_id, Network)
        net = ipaddress.IPv4Network(network.address)
        taken = {nic.address for nic in self._everyone("networkinterface", NetworkInterface) if nic.network_id == network_id}
        if address:
            ip = ipaddress.IPv4Address(address) if re.fullmatch(r"[0-9.]+", address) else None
            if ip is None or ip not in net or ip in (net.network_address, net.broadcast_address) or address == network.gateway:
                raise InvalidArgument(f"ip_address {address} is not a free host address of {net}", reason="INVALID_ADDRESS")
            if address in taken:
                raise AlreadyExists(f"{address} is leased to another interface of networks/{network_id}", reason="ADDRESS_IN_USE")
        elif network.allocation == "static":
            raise InvalidArgument(f"networks/{network_id} allocates addresses statically: give the interface's address",
                                  reason="ADDRESS_REQUIRED")
        else:
            address = next((str(ip) for ip in net.hosts() if str(ip) not in taken and str(ip) != network.gateway), "")
            if not address:
                raise FailedPrecondition(f"network {net} has no free address left", reason="NO_FREE_ADDRESS")
        n = next(self._ids)
        used = [nic for nic in self._list("networkinterface", principal, NetworkInterface) if nic.compute_id == compute_id]
        mac = f"52:54:01:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"
        nic = NetworkInterface(f"nic-{n:06d}", compute_id, network_id, f"eth{len(used)}", mac, network.state, address,
                               network.gateway, network.allocation)
        self._put("networkinterface", principal, nic.id, nic)
        return replace(nic)

    async def list_network_interfaces(self, principal: Principal) -> list[NetworkInterface]:
        return [replace(nic) for nic in self._list("networkinterface", principal, NetworkInterface)]

    async def delete_network_interface(self, principal: Principal, interface_id: str) -> None:
        self._delete("networkinterface", principal, interface_id)
