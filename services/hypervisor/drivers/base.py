"""The hypervisor driver contract.

A driver turns a ``DomainSpec`` into a running guest and back, and gives access to the guest's
channel. The post-conditions in the docstrings are part of the contract and are checked by
``tests/contract/test_hypervisor_driver.py`` for every implementation:

- ``define_and_start`` either leaves a running domain or nothing at all;
- ``destroy`` is idempotent: destroying a domain that does not exist is not an error;
- ``stop`` ends and undefines the domain but keeps the VM's disk and files, so that
  ``define_and_start`` of the same spec boots the same disk again; it is idempotent too;
- ``suspend`` pauses a domain in memory and ``resume`` continues it; each is a no-op on a domain
  already in that state and raises DomainNotFound for a missing one;
- ``export_disk`` writes a flat copy of a VM's disk and leaves the domain as it found it
  (running, paused or absent); on failure it leaves no copy;
- ``attach_volume`` and ``detach_volume`` are idempotent: a volume already attached (the same
  file) stays attached, one not attached stays detached;
- ``list`` shows only the domains this driver owns (its name prefix), so an agent never touches
  a domain that is not WNoDeS's.

Drivers never import grpc or generated protobuf code: the agent converts at its edge.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class DriverError(Exception):
    """A driver operation failed; the message says what and why."""


class DomainNotFound(DriverError):
    """No domain with that VM id exists on this host."""


class GuestNotReady(DriverError):
    """The guest did not give its ready signal in time, or its channel is gone."""


class ExecutionLost(DriverError):
    """The guest does not know the execution asked for (it rebooted, or forgot it)."""


class HostForwardUnavailable(DriverError):
    """define_and_start: a host port of the user network's forwards could not be bound (something
    else took it since it was chosen). Nothing was started; the caller may choose another port."""


@dataclass(frozen=True)
class NetworkSpec:
    """One network attachment (room for issue-level network work: VLAN, bridge, QoS)."""

    mac_address: str
    bridge: str = ""
    vlan: int = 0
    bandwidth_mbps: int = 0


@dataclass(frozen=True)
class PortForward:
    """A TCP port of the host forwarded to a port of the guest."""

    host_port: int
    guest_port: int
    host_address: str = "127.0.0.1"


@dataclass(frozen=True)
class UserNetworkSpec:
    """A virtio NIC on QEMU's user-mode network (slirp): the guest is 10.0.2.15/24 behind the
    gateway 10.0.2.2 and reaches nothing else (restrict=on); only the forwards reach the guest.
    Needs no bridge, no tap and no privileges: interactive access on any host."""

    mac_address: str
    forwards: tuple[PortForward, ...] = ()


@dataclass(frozen=True)
class VolumeSpec:
    """A block device attached besides the root disk."""

    path: Path
    device: str
    read_only: bool = False
    # Seen by the guest (/sys/block/vdX/serial): how it finds the volume whatever it names it.
    serial: str = ""


@dataclass(frozen=True)
class DomainSpec:
    """Everything a driver needs to start one VM. Pure data, no policy."""

    vm_id: str
    vcpu_count: int
    memory_mib: int
    # The VM's own copy-on-write overlay over the cached image (the agent creates it).
    disk_path: Path
    hostname: str
    mac_address: str
    # Direct kernel boot; None boots the disk's bootloader.
    kernel_path: Path | None = None
    initrd_path: Path | None = None
    cmdline: str = ""
    networks: tuple[NetworkSpec, ...] = ()
    volumes: tuple[VolumeSpec, ...] = ()
    user_network: UserNetworkSpec | None = None


@dataclass(frozen=True)
class DomainInfo:
    vm_id: str
    running: bool
    # Suspended in memory (``running`` is then False).
    paused: bool = False
    # Driver-specific detail ("running", "shutoff", "crashed", ...), for logs and errors.
    detail: str = ""


@dataclass(frozen=True)
class HostResources:
    vcpu_count: int
    memory_mib: int
    # "kvm" (hardware virtualisation), "qemu" (TCG emulation) or "fake".
    virtualization: str


@dataclass(frozen=True)
class Stdout:
    data: bytes


@dataclass(frozen=True)
class Stderr:
    data: bytes


@dataclass(frozen=True)
class Exit:
    code: int


ExecEvent = Stdout | Stderr | Exit

_EXEC_KEY = re.compile(r"^[0-9a-f]{32}$")

# First line of the agent's contextualisation script (services/hypervisor/ssh_access.py), which
# carries ``keys_b64='...'`` and ``user_data_b64='...'`` lines: a fake guest recognises it.
CONTEXTUALISE_HEADER = "# wnodes: contextualise"


def new_exec_key() -> str:
    """A fresh execution key: 32 random hex digits, so it cannot collide with anything in output."""
    return secrets.token_hex(16)


def check_exec_key(key: str) -> None:
    if not _EXEC_KEY.match(key):
        raise ValueError(f"an execution key is 32 lowercase hex digits, not {key!r}")


@dataclass(frozen=True)
class GuestReady:
    """The guest's ready signal: it booted and its agent listens on the channel."""

    kernel_release: str
    extra: dict[str, str] = field(default_factory=dict)


class GuestChannel(Protocol):
    """The host end of a guest's channel (virtio-serial here; vsock where the host has it).

    Never the network: the channel works for guests that have no network at all.
    """

    async def wait_ready(self, timeout: float) -> GuestReady:
        """Returns once the guest signalled readiness; raises GuestNotReady after timeout."""
        ...

    def exec(self, command: str, uid: int = 0, key: str = "") -> AsyncIterator[ExecEvent]:
        """Runs a shell command in the guest as uid, under key (new_exec_key() if empty).

        Yields Stdout and Stderr chunks as the guest writes them, then exactly one Exit. The
        command runs on in the guest if the caller stops listening; commands may run
        concurrently.
        """
        ...

    def attach(self, key: str) -> AsyncIterator[ExecEvent]:
        """Follows an execution started earlier, maybe through another channel object or by an
        agent process that has since died: all its output from the start, then its Exit.
        Raises ExecutionLost if the guest does not know it."""
        ...

    async def forget(self, key: str) -> None:
        """Lets the guest drop an ended execution's output. Best effort: never raises."""
        ...

    async def close(self) -> None:
        """Releases the host end; the guest keeps running."""
        ...


class HypervisorDriver(Protocol):
    """A hypervisor backend. See the module docstring for the contract."""

    async def host_resources(self) -> HostResources:
        """What the host offers to guests."""
        ...

    async def define_and_start(self, spec: DomainSpec) -> None:
        """Defines and starts the domain. On failure nothing is left behind and DriverError is
        raised; a domain with that vm_id already running is an error (DriverError). A host port
        of spec.user_network's forwards that cannot be bound is HostForwardUnavailable."""
        ...

    async def destroy(self, vm_id: str) -> None:
        """Stops the domain at once and undefines it, and removes the files the driver keeps
        for it. A missing domain is not an error."""
        ...

    async def stop(self, vm_id: str) -> None:
        """Stops the domain at once and undefines it, keeping the VM's disk and files (a later
        define_and_start boots the same disk). The caller syncs the guest first if it cares
        about what the guest has not written yet. A missing domain is not an error."""
        ...

    async def suspend(self, vm_id: str) -> None:
        """Pauses the domain in memory: its vCPUs stop, its memory and devices stay. A paused
        domain stays paused; a missing one raises DomainNotFound."""
        ...

    async def resume(self, vm_id: str) -> None:
        """Continues a paused domain where it stopped. A running domain stays running; a
        missing one raises DomainNotFound."""
        ...

    async def attach_volume(self, vm_id: str, volume: VolumeSpec) -> None:
        """Hot-plugs the volume into the domain as volume.device. A volume already attached
        (the same file) is left as it is; DomainNotFound if the domain does not exist."""
        ...

    async def detach_volume(self, vm_id: str, volume: VolumeSpec) -> None:
        """Hot-unplugs the volume (the same file) and returns once the domain let it go;
        DriverError if the guest does not release it. A volume not attached, or a missing
        domain, is not an error."""
        ...

    async def export_disk(self, vm_id: str, disk: Path, out: Path, *, compress: bool = False) -> None:
        """Writes to out a flat, self-contained qcow2 copy of the VM's disk (the overlay with
        everything under it), consistent: a running domain is paused for the copy and goes on
        afterwards; a paused or stopped one is copied as it is. What the guest holds only in its
        own memory is not in the copy (sync the guest first). On failure out does not exist."""
        ...

    async def list(self) -> list[DomainInfo]:
        """The domains this driver owns on this host, running or not."""
        ...

    def guest(self, vm_id: str) -> GuestChannel:
        """The guest channel of a domain. The same object is returned for the same vm_id while
        the domain exists, so readiness seen once is remembered."""
        ...

    async def close(self) -> None:
        """Releases connections; running domains keep running."""
        ...
