"""The records kept in etcd, as plain dataclasses (JSON on the wire).

Shared by the nameserver (which writes requests and placements) and the hypervisor agents (which
write what actually happened). Protobuf conversion lives in each servicer's ``convert.py``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
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
    # The etcd mod_revision it was read at (its etag); not stored.
    revision: int = 0

    @property
    def name(self) -> str:
        return f"virtualMachines/{self.id}"

    @property
    def power_pending(self) -> bool:
        """A power action was asked for and the agent has not carried it out yet."""
        return self.power_applied < self.power_generation


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

    @property
    def name(self) -> str:
        return f"images/{self.image}/versions/{self.version}"

    def visible_to(self, vo: str, is_admin: bool = False) -> bool:
        return is_admin or self.visibility == "PUBLIC" or self.owner_vo == vo
