"""An in-memory CloudBackend for unit tests, contract tests and fuzzing: no etcd, no VMs.

Computes become active at once; actions change state as a real hypervisor eventually would.
Everything is owned by the principal that created it, and only that principal sees it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import TypeVar

from services.common.errors import FailedPrecondition, ImageNotFound, InvalidArgument, NotFound
from services.common.identity import Principal
from services.gateway.occi.backend import (
    Compute,
    ComputeAction,
    ComputeSpec,
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
_ACTION_STATE = {"start": "active", "stop": "inactive", "restart": "active", "suspend": "suspended"}


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
            raise FailedPrecondition(f"no host has {spec.cores} free cores")
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
        compute.state = _ACTION_STATE[action]  # type: ignore[assignment]
        compute.state_message = {"active": "running", "inactive": "stopped", "suspended": "suspended"}[compute.state]
        return replace(compute)

    async def save_compute(self, principal: Principal, compute_id: str, image: str) -> ImageTemplate:
        compute = self._get("compute", principal, compute_id, Compute)
        self.images.setdefault(image, set()).add(principal.vo)
        return ImageTemplate(image, f"saved from {compute.id}")

    # --- storage ---------------------------------------------------------------------------

    async def create_storage(self, principal: Principal, spec: StorageSpec) -> Storage:
        sid = self._new_id("vol")
        storage = Storage(sid, spec.size_gib, "online", "", spec.title, spec.summary)
        self._put("storage", principal, sid, storage)
        return replace(storage)

    async def get_storage(self, principal: Principal, storage_id: str) -> Storage:
        return replace(self._get("storage", principal, storage_id, Storage))

    async def list_storages(self, principal: Principal) -> list[Storage]:
        return [replace(s) for s in self._list("storage", principal, Storage)]

    async def delete_storage(self, principal: Principal, storage_id: str) -> None:
        if any(link.storage_id == storage_id for link in self._list("storagelink", principal, StorageLink)):
            raise FailedPrecondition(f"storage {storage_id} is attached: delete its storage link first")
        self._delete("storage", principal, storage_id)

    async def set_storage_online(self, principal: Principal, storage_id: str, online: bool) -> Storage:
        storage = self._get("storage", principal, storage_id, Storage)
        storage.state = "online" if online else "offline"
        return replace(storage)

    # --- network ---------------------------------------------------------------------------

    async def create_network(self, principal: Principal, spec: NetworkSpec) -> Network:
        nid = self._new_id("net")
        network = Network(nid, "active", "", spec.title, spec.summary, spec.vlan, spec.label,
                          spec.address or "10.200.0.0/24", spec.gateway or "10.200.0.1", spec.allocation or "dynamic")
        self._put("network", principal, nid, network)
        return replace(network)

    async def get_network(self, principal: Principal, network_id: str) -> Network:
        return replace(self._get("network", principal, network_id, Network))

    async def list_networks(self, principal: Principal) -> list[Network]:
        return [replace(n) for n in self._list("network", principal, Network)]

    async def delete_network(self, principal: Principal, network_id: str) -> None:
        if any(nic.network_id == network_id for nic in self._list("networkinterface", principal, NetworkInterface)):
            raise FailedPrecondition(f"network {network_id} has interfaces: delete them first")
        self._delete("network", principal, network_id)

    async def set_network_up(self, principal: Principal, network_id: str, up: bool) -> Network:
        network = self._get("network", principal, network_id, Network)
        network.state = "active" if up else "inactive"
        return replace(network)

    # --- links -----------------------------------------------------------------------------

    async def attach_storage(self, principal: Principal, compute_id: str, storage_id: str, device: str) -> StorageLink:
        self._get("compute", principal, compute_id, Compute)
        self._get("storage", principal, storage_id, Storage)
        link_id = storage_link_id(compute_id, storage_id)
        if link_id in self._store.get("storagelink", {}):
            raise FailedPrecondition(f"storage {storage_id} is already attached to {compute_id}")
        if any(link.device == device and link.compute_id == compute_id for link in self._list("storagelink", principal, StorageLink)):
            raise InvalidArgument(f"device {device} is already used on {compute_id}")
        link = StorageLink(link_id, compute_id, storage_id, device)
        self._put("storagelink", principal, link_id, link)
        return replace(link)

    async def list_storage_links(self, principal: Principal) -> list[StorageLink]:
        return [replace(link) for link in self._list("storagelink", principal, StorageLink)]

    async def detach_storage(self, principal: Principal, link_id: str) -> None:
        self._delete("storagelink", principal, link_id)

    async def create_network_interface(self, principal: Principal, compute_id: str, network_id: str) -> NetworkInterface:
        self._get("compute", principal, compute_id, Compute)
        network = self._get("network", principal, network_id, Network)
        n = next(self._ids)
        used = [nic for nic in self._list("networkinterface", principal, NetworkInterface) if nic.compute_id == compute_id]
        nic = NetworkInterface(f"nic-{n:06d}", compute_id, network_id, f"eth{len(used)}", f"52:54:01:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}",
                               "active", f"10.200.{n >> 8 & 255}.{n & 255 or 1}", network.gateway, "dynamic")
        self._put("networkinterface", principal, nic.id, nic)
        return replace(nic)

    async def list_network_interfaces(self, principal: Principal) -> list[NetworkInterface]:
        return [replace(nic) for nic in self._list("networkinterface", principal, NetworkInterface)]

    async def delete_network_interface(self, principal: Principal, interface_id: str) -> None:
        self._delete("networkinterface", principal, interface_id)
