"""The records kept in etcd, as plain dataclasses (JSON on the wire).

Shared by the nameserver (which writes requests and placements) and the hypervisor agents (which
write what actually happened). Protobuf conversion lives in each servicer's ``convert.py``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class VmState(enum.StrEnum):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    STARTING = "STARTING"
    ACTIVE = "ACTIVE"
    DELETING = "DELETING"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"
    STOPPED = "STOPPED"
    SUSPENDED = "SUSPENDED"


class PowerState(enum.StrEnum):
    """What a VM's owner wants its domain to be; the agent converges to it."""

    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUSPENDED = "SUSPENDED"


# States in which a VM holds cores and memory on its hypervisor.
HOLDS_RESOURCES = frozenset(
    {VmState.SCHEDULED, VmState.STARTING, VmState.ACTIVE, VmState.DELETING, VmState.UNKNOWN, VmState.STOPPED, VmState.SUSPENDED}
)


@dataclass
class VmRecord:
    id: str
    image: str
    image_version: str
    vcpu_count: int
    memory_mib: int
    owner_user: str
    owner_vo: str
    state: VmState = VmState.PENDING
    state_message: str = ""
    hypervisor: str = ""
    pinned_hypervisor: str = ""
    hostname: str = ""
    mac_address: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    user_data: str = ""  # base64
    # OpenSSH public keys for root and the user wnodes; a VM with keys gets a NIC and an endpoint.
    ssh_public_keys: list[str] = field(default_factory=list)
    # "127.0.0.1:PORT" on its hypervisor, forwarded to the guest's port 22 (set by the agent).
    ssh_endpoint: str = ""
    bandwidth_mbps: int = 0
    request_id: str = ""
    virtualization: str = ""
    create_time: float = field(default_factory=time.time)
    update_time: float = field(default_factory=time.time)
    boot_seconds: float = 0.0
    # W3C traceparent of the request that created it, so the agent's spans join that trace.
    trace_context: dict[str, str] = field(default_factory=dict)
    # Error status of a FAILED VM: {"code": int, "reason": str, "message": str}.
    error: dict[str, Any] = field(default_factory=dict)
    # Power: the nameserver writes the desired state and bumps the generation; the agent carries
    # the action out and sets power_applied to that generation (or records power_error, with the
    # generation it belongs to, if it could not).
    power: str = PowerState.RUNNING
    power_generation: int = 0
    power_applied: int = 0
    power_operation: str = ""
    power_error: dict[str, Any] = field(default_factory=dict)
    # A save asked for and not done yet: {"operation": id, "image": name}.
    pending_save: dict[str, Any] = field(default_factory=dict)
    # Volumes attached or being attached/detached, in attachment order: each
    # {"volume": id, "device": "vdb", "state": AttachmentState, "operation": op id}.
    volumes: list[dict[str, str]] = field(default_factory=list)
    # Interfaces on networks, each {"interface": id, "network": id, "mac": ..., "ip": ..., "vlan": n}.
    networks: list[dict[str, Any]] = field(default_factory=list)
    # The etcd mod_revision it was read at (its etag); not stored.
    revision: int = 0

    @property
    def name(self) -> str:
        return f"virtualMachines/{self.id}"

    @property
    def power_pending(self) -> bool:
        """A power action was asked for and the agent has not carried it out yet."""
        return self.power_applied < self.power_generation


class VolumeState(enum.StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    ERROR = "ERROR"


class AttachmentState(enum.StrEnum):
    ATTACHING = "ATTACHING"
    ATTACHED = "ATTACHED"
    DETACHING = "DETACHING"


@dataclass
class VolumeRecord:
    """A block volume. The VM record's ``volumes`` entry is the truth about an attachment (the
    agent converges to it); ``attachment`` mirrors it here, written in the same transactions."""

    id: str
    title: str
    size_gib: float
    owner_user: str
    owner_vo: str
    state: str = VolumeState.ONLINE
    state_message: str = ""
    # The host its data lives on: set at its first attachment, never changed.
    hypervisor: str = ""
    # {"vm": vm id, "device": "vdb"} while attached (or being attached or detached).
    attachment: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    create_time: float = field(default_factory=time.time)
    update_time: float = field(default_factory=time.time)
    revision: int = 0

    @property
    def name(self) -> str:
        return f"volumes/{self.id}"

    @property
    def size_mib(self) -> int:
        """The size of its data: size_gib rounded up to whole MiB."""
        return max(1, math.ceil(self.size_gib * 1024 - 1e-9))


class NetworkState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


@dataclass
class NetworkRecord:
    """A network segment: a subnet on a VLAN leased in etcd (leases/vlans/<vlan>)."""

    id: str
    title: str
    vlan: int
    cidr: str
    gateway: str
    allocation: str  # DYNAMIC | STATIC
    owner_user: str
    owner_vo: str
    state: str = NetworkState.ACTIVE
    # Kept in the record (not counted from the leases) so that creating an interface changes
    # the network's revision: a delete guarded by that revision cannot miss a new interface.
    interface_count: int = 0
    request_id: str = ""
    # The cidr was chosen from the site's pool and leased (leases/subnets/...): freed with it.
    subnet_leased: bool = False
    create_time: float = field(default_factory=time.time)
    update_time: float = field(default_factory=time.time)
    revision: int = 0

    @property
    def name(self) -> str:
        return f"networks/{self.id}"


@dataclass
class NetworkInterfaceRecord:
    """A VM's interface on a network; its MAC and address are leased (leases/macs/...,
    leases/addresses/<network>/<ip>) and it is listed in the VM's record too."""

    id: str
    vm_id: str
    network_id: str
    mac_address: str
    ip_address: str
    owner_user: str
    owner_vo: str
    request_id: str = ""
    create_time: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return f"networkInterfaces/{self.id}"


@dataclass
class HypervisorRecord:
    name: str
    endpoint: str
    vcpu_count: int
    memory_mib: int
    virtualization: str
    cached_images: list[str] = field(default_factory=list)
    register_time: float = field(default_factory=time.time)


@dataclass
class HostUsage:
    """Cores and memory promised on one host. Placement compares this key's revision."""

    vcpus_used: int = 0
    memory_mib_used: int = 0
    vms: dict[str, list[int]] = field(default_factory=dict)  # vm id -> [vcpus, memory_mib]

    def add(self, vm_id: str, vcpus: int, memory_mib: int) -> None:
        if vm_id in self.vms:
            return
        self.vms[vm_id] = [vcpus, memory_mib]
        self.vcpus_used += vcpus
        self.memory_mib_used += memory_mib

    def remove(self, vm_id: str) -> None:
        held = self.vms.pop(vm_id, None)
        if held is not None:
            self.vcpus_used -= held[0]
            self.memory_mib_used -= held[1]


@dataclass
class OperationRecord:
    id: str
    kind: str  # "create" | "delete" | "save" | a power action ("stop", "start", "restart", "suspend", "resume")
    vm_id: str
    create_time: float = field(default_factory=time.time)
    # A power action's generation: done once the VM's power_applied reaches it.
    generation: int = 0
    # Who asked: only they (and admins) see it, even once its VM is gone. Empty on old records.
    owner_user: str = ""
    owner_vo: str = ""
    # What else it acts on (a save's image name, a volume's id).
    target: str = ""
    # Set by whoever finishes work the VM's record does not show (a save): the outcome, e.g.
    # {"image_version": "images/x/versions/2"}, or the error as {"code", "reason", "message"}.
    result: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"operations/{self.id}"


@dataclass
class NameserverRecord:
    id: str
    endpoint: str
    start_time: float = field(default_factory=time.time)


def dump(record: Any) -> bytes:
    # Records are flat dataclasses of JSON values, so their __dict__ serialises as it is
    # (dataclasses.asdict deep-copies every nested dict first: most of a placement's CPU).
    data = vars(record)
    if "revision" in data:
        data = {k: v for k, v in data.items() if k != "revision"}
    omit = _OMITTABLE.get(type(record))
    if omit:
        # The records written per VM leave out optional fields that are empty ("", {}, []):
        # load() gives them their defaults back. A third less to write, replicate and store.
        data = {k: v for k, v in data.items() if not (k in omit and (v == "" or v == {} or v == []))}
    return json.dumps(data, separators=(",", ":")).encode()


def load(cls: type[T], raw: bytes) -> T:
    data = json.loads(raw)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    obj = cls(**{k: v for k, v in data.items() if k in names})
    if isinstance(obj, VmRecord):
        obj.state = VmState(obj.state)
    elif isinstance(obj, VolumeRecord):
        obj.state = VolumeState(obj.state)
    return obj


def _with_defaults(cls: type) -> frozenset[str]:
    return frozenset(
        f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    )


# Optional fields of these records are left out of their JSON when empty (see dump).
_OMITTABLE: dict[type, frozenset[str]] = {VmRecord: _with_defaults(VmRecord), OperationRecord: _with_defaults(OperationRecord)}


@dataclass
class BlobRef:
    sha256: str
    size_bytes: int


@dataclass
class ImageRecord:
    """One version of an image, as the imagestore registers it."""

    image: str
    version: int
    owner_vo: str
    visibility: str = "PUBLIC"  # PRIVATE | VO | PUBLIC
    architecture: str = "x86_64"
    format: str = "qcow2"
    disk: dict[str, Any] = field(default_factory=dict)  # BlobRef as dict
    kernel: dict[str, Any] = field(default_factory=dict)
    initrd: dict[str, Any] = field(default_factory=dict)
    cmdline: str = ""
    state: str = "AVAILABLE"
    description: str = ""
    owner_user: str = ""
    create_time: float = field(default_factory=time.time)
    customizations: list[str] = field(default_factory=list)  # what was applied to the source, for people

    @property
    def name(self) -> str:
        return f"images/{self.image}/versions/{self.version}"

    def visible_to(self, vo: str, is_admin: bool = False, user: str = "") -> bool:
        """PUBLIC: everyone; VO: members of the owner VO; PRIVATE: the uploader only (in the
        owner VO). A DELETED version is visible to admins only: it is kept as a tombstone so
        its number is never reused, not as something to use."""
        if is_admin:
            return True
        if self.state == "DELETED":
            return False
        if self.visibility == "PUBLIC":
            return True
        if self.visibility == "PRIVATE":
            return self.owner_vo == vo and bool(user) and self.owner_user == user
        return self.owner_vo == vo


@dataclass
class PrefetchRecord:
    """Hosts should hold the newest AVAILABLE version of image in their caches (and keep
    following it as new versions are published). hosts empty: every host."""

    image: str
    hosts: list[str] = field(default_factory=list)
    requested_by: str = ""
    create_time: float = field(default_factory=time.time)

    def addresses(self, host: str) -> bool:
        return not self.hosts or host in self.hosts
