"""The OCCI side's port: what the OCCI front end needs from the rest of WNoDeS, a small interface
in OCCI-neutral, protobuf-free terms. Its one implementation, ``core_backend.CoreCloudBackend``,
makes public wnodes.v1 calls through the gateway core.

Contract (tests/contract/occi_backend_contract.py, run on the in-process control plane in
tests/contract and over real processes in tests/integration/test_occi.py):
- every call acts for ``principal`` only: another owner's resource raises ``NotFound``, exactly
  as a missing one does;
- a failed create leaves nothing behind;
- ``delete_*`` of a missing resource raises ``NotFound``; after a delete, ``get_*`` raises it too
  (a VM being torn down, or a volume being detached, is already gone for OCCI);
- a compute that is still booting is waited for (up to a bound) by a power action or a storage
  link: OCCI has no "booting" state;
- what the resource's state forbids raises ``FailedPrecondition`` saying why (restarting a
  stopped compute, deleting attached storage or a network with interfaces, attaching offline
  storage, a device already taken, detaching from a suspended compute); a full farm raises
  ``NoCapacity``;
- ids are lowercase letters, digits and '-', unique per kind;
- storage and networks keep a title, no summary (the API has no field for one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from services.common.identity import Principal

ComputeState = Literal["active", "inactive", "suspended", "error"]
StorageState = Literal["online", "offline", "error"]
NetworkState = Literal["active", "inactive", "error"]
LinkState = Literal["active", "inactive", "error"]
ComputeAction = Literal["start", "stop", "restart", "suspend"]


@dataclass(frozen=True)
class ImageTemplate:
    image: str
    """Catalogue name, e.g. "debian12"."""
    description: str = ""


@dataclass
class ComputeSpec:
    image: str
    cores: int
    memory_mib: int
    title: str = ""
    summary: str = ""
    resource_tpl: str = ""
    """Term of the size template it was made from ("" = explicit cores and memory)."""
    ssh_public_keys: list[str] = field(default_factory=list)
    user_data: bytes = b""
    storage_ids: list[str] = field(default_factory=list)
    """Storage it is created linked to: it must be free, and the compute is placed on the host
    holding its data (this deployment has no shared storage)."""


@dataclass
class Compute:
    id: str
    image: str
    cores: int
    memory_mib: int
    state: ComputeState
    state_message: str = ""
    title: str = ""
    summary: str = ""
    resource_tpl: str = ""
    hostname: str = ""
    ssh_endpoint: str = ""
    architecture: str = "x64"


@dataclass
class StorageSpec:
    size_gib: float
    title: str = ""


@dataclass
class Storage:
    id: str
    size_gib: float
    state: StorageState
    state_message: str = ""
    title: str = ""


@dataclass
class NetworkSpec:
    title: str = ""
    vlan: int | None = None
    """None (or 0): one is chosen."""
    address: str = ""
    """CIDR; "": a free subnet of the site's pool is chosen."""
    gateway: str = ""
    allocation: str = ""
    """Either "dynamic" (the default) or "static" (each interface is created with its address)."""


@dataclass
class Network:
    id: str
    state: NetworkState
    state_message: str = ""
    title: str = ""
    vlan: int | None = None
    address: str = ""
    gateway: str = ""
    allocation: str = ""


@dataclass
class StorageLink:
    id: str
    compute_id: str
    storage_id: str
    device: str
    """The disk's device in the VM's configuration, e.g. "/dev/vdb"."""
    serial: str
    """The disk's serial, by which the guest finds it (/sys/block/vd*/serial)."""
    state: LinkState = "active"
    state_message: str = ""


@dataclass
class NetworkInterface:
    id: str
    compute_id: str
    network_id: str
    interface: str
    mac: str
    state: LinkState = "active"
    address: str = ""
    gateway: str = ""
    allocation: str = "dynamic"


class CloudBackend(Protocol):
    # --- images (os_tpl) ---
    async def list_images(self, principal: Principal) -> list[ImageTemplate]: ...

    # --- compute ---
    async def create_compute(self, principal: Principal, spec: ComputeSpec) -> Compute: ...
    async def get_compute(self, principal: Principal, compute_id: str) -> Compute: ...
    async def list_computes(self, principal: Principal) -> list[Compute]: ...
    async def update_compute(self, principal: Principal, compute_id: str, title: str, summary: str) -> Compute: ...
    async def delete_compute(self, principal: Principal, compute_id: str) -> None: ...
    async def compute_action(self, principal: Principal, compute_id: str, action: ComputeAction) -> Compute: ...
    async def save_compute(self, principal: Principal, compute_id: str, image: str) -> ImageTemplate:
        """Saves the compute's disk as a new version of ``image``; returns its template."""
        ...

    # --- storage ---
    async def create_storage(self, principal: Principal, spec: StorageSpec) -> Storage: ...
    async def get_storage(self, principal: Principal, storage_id: str) -> Storage: ...
    async def list_storages(self, principal: Principal) -> list[Storage]: ...
    async def delete_storage(self, principal: Principal, storage_id: str) -> None: ...
    async def set_storage_online(self, principal: Principal, storage_id: str, online: bool) -> Storage: ...

    # --- network ---
    async def create_network(self, principal: Principal, spec: NetworkSpec) -> Network: ...
    async def get_network(self, principal: Principal, network_id: str) -> Network: ...
    async def list_networks(self, principal: Principal) -> list[Network]: ...
    async def delete_network(self, principal: Principal, network_id: str) -> None: ...
    async def set_network_up(self, principal: Principal, network_id: str, up: bool) -> Network: ...

    # --- links ---
    async def attach_storage(self, principal: Principal, compute_id: str, storage_id: str, device: str = "") -> StorageLink:
        """Attaches the storage as a virtio disk: ``device`` "vdb" ... "vdz", or "" for the first
        free one. A compute that is still booting is waited for (it can take disks once it runs
        or is stopped); the link is returned once the disk is in place or still on its way."""
        ...

    async def list_storage_links(self, principal: Principal) -> list[StorageLink]: ...
    async def detach_storage(self, principal: Principal, link_id: str) -> None: ...
    async def create_network_interface(
        self, principal: Principal, compute_id: str, network_id: str, address: str = ""
    ) -> NetworkInterface:
        """Leases a MAC and an address of the network (``address`` if given: required on a static network)."""
        ...

    async def list_network_interfaces(self, principal: Principal) -> list[NetworkInterface]: ...
    async def delete_network_interface(self, principal: Principal, interface_id: str) -> None: ...


def storage_link_id(compute_id: str, storage_id: str) -> str:
    """A storage link is a volume attachment: its id names both ends ('.' is in no id)."""
    return f"{compute_id}.{storage_id}"
