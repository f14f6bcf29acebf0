"""A hypervisor driver that runs no VMs: for unit and contract tests and for scale simulation.

Domains are entries in a dict. Its guest channel answers like a real guest agent, running a
tiny, safe command language (``echo``, ``exit N``, ``sleep S``, ``uname -r``, ``hostname``,
``cat /etc/os-release``, joined with ``;`` or newlines) instead of executing anything on the host.
It also accepts the agent's contextualisation script (it records the keys and user data it
carries in ``contexts``, as a real guest would write them to authorized_keys).
Failure injection: ``fail_on`` names vm ids whose start fails; ``start_delay`` simulates a boot.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from services.hypervisor.drivers.base import (
    CONTEXTUALISE_HEADER,
    DomainInfo,
    DomainNotFound,
    DomainSpec,
    DriverError,
    ExecEvent,
    ExecutionLost,
    Exit,
    GuestNotReady,
    GuestReady,
    HostForwardUnavailable,
    HostResources,
    Stderr,
    Stdout,
    VolumeSpec,
    check_exec_key,
    new_exec_key,
)

FAKE_KERNEL = "6.1.0-fake"
_B64_ASSIGNMENT = re.compile(r"^(keys_b64|user_data_b64)='([A-Za-z0-9+/=]*)'$", re.MULTILINE)


@dataclass(frozen=True)
class GuestContext:
    """What the agent's contextualisation script handed a fake guest."""

    ssh_public_keys: list[str]
    user_data: bytes


@dataclass
class _FakeExecution:
    """A command's output as a guest would log it: kept until forgotten, followable again."""

    events: list[ExecEvent] = field(default_factory=list)
    error: Exception | None = None
    done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event: ExecEvent) -> None:
        self.events.append(event)
        self._wake()

    def end(self, error: Exception | None = None) -> None:
        self.error = error
        self.done = True
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def follow(self) -> AsyncIterator[ExecEvent]:
        seen = 0
        while True:
            changed = self.changed
            while seen < len(self.events):
                seen += 1
                yield self.events[seen - 1]
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            await changed.wait()


class FakeGuestChannel:
    def __init__(self, driver: FakeDriver, vm_id: str, hostname: str) -> None:
        self._driver = driver
        self._vm_id = vm_id
        self._hostname = hostname

    async def wait_ready(self, timeout: float) -> GuestReady:
        if self._vm_id not in self._driver.domains:
            raise GuestNotReady(f"{self._vm_id}: no such domain")
        return GuestReady(kernel_release=FAKE_KERNEL)

    async def exec(self, command: str, uid: int = 0, key: str = "") -> AsyncIterator[ExecEvent]:
        key = key or new_exec_key()
        check_exec_key(key)
        if self._vm_id not in self._driver.domains:
            raise GuestNotReady(f"{self._vm_id}: no such domain")
        executions = self._driver.executions.setdefault(self._vm_id, {})
        if key in executions:
            raise GuestNotReady(f"{self._vm_id}: execution {key} exists")
        execution = executions[key] = _FakeExecution()
        self._driver.tasks.add(asyncio.create_task(self._run(command, execution)))
        async for event in execution.follow():
            yield event

    async def attach(self, key: str) -> AsyncIterator[ExecEvent]:
        check_exec_key(key)
        execution = self._driver.executions.get(self._vm_id, {}).get(key)
        if execution is None:
            raise ExecutionLost(f"{self._vm_id}: no execution {key}")
        async for event in execution.follow():
            yield event

    async def forget(self, key: str) -> None:
        execution = self._driver.executions.get(self._vm_id, {}).get(key)
        if execution is not None and execution.done:
            del self._driver.executions[self._vm_id][key]

    async def close(self) -> None:
        return None

    async def _run(self, command: str, execution: _FakeExecution) -> None:
        try:
            execution.add(Exit(await self._interpret(command, execution)))
            execution.end()
        except GuestNotReady as exc:
            execution.end(exc)
        finally:
            self._driver.tasks.discard(asyncio.current_task())

    async def _interpret(self, command: str, execution: _FakeExecution) -> int:
        if command.startswith(CONTEXTUALISE_HEADER):
            values = {name: base64.b64decode(value) for name, value in _B64_ASSIGNMENT.findall(command)}
            keys = values.get("keys_b64", b"").decode().splitlines()
            self._driver.contexts[self._vm_id] = GuestContext(keys, values.get("user_data_b64", b""))
            return 0
        code = 0
        for statement in command.replace("\n", ";").split(";"):
            words = shlex.split(statement)
            if not words:
                continue
            if self._vm_id not in self._driver.domains:
                raise GuestNotReady(f"{self._vm_id}: the domain went away")
            match words:
                case ["echo", *rest]:
                    execution.add(Stdout((" ".join(rest) + "\n").encode()))
                    code = 0
                case ["uname", "-r"]:
                    execution.add(Stdout(f"{FAKE_KERNEL}\n".encode()))
                case ["hostname"]:
                    execution.add(Stdout(f"{self._hostname}\n".encode()))
                case ["cat", "/etc/os-release"]:
                    execution.add(Stdout(b'ID=wnodes-fake\nPRETTY_NAME="WNoDeS fake guest"\n'))
                case ["sleep", seconds]:
                    await asyncio.sleep(float(seconds))
                case ["exit", status]:
                    return int(status)
                case ["true"] | ["sync"]:
                    code = 0
                case ["false"]:
                    code = 1
                case _:
                    execution.add(Stderr(f"fake guest: {words[0]}: not found\n".encode()))
                    code = 127
        return code


class FakeDriver:
    def __init__(
        self,
        vcpu_count: int = 16,
        memory_mib: int = 65536,
        start_delay: float = 0.0,
        fail_on: frozenset[str] = frozenset(),
        taken_ports: frozenset[int] = frozenset(),
    ) -> None:
        self._resources = HostResources(vcpu_count, memory_mib, "fake")
        self._start_delay = start_delay
        self._fail_on = fail_on
        # Host ports "something else" holds: a forward to one fails as QEMU's does.
        self.taken_ports: set[int] = set(taken_ports)
        self.domains: dict[str, DomainSpec] = {}
        self.paused: set[str] = set()
        self._channels: dict[str, FakeGuestChannel] = {}
        # vm id -> execution key -> what the "guest" logged; lives and dies with the domain
        self.executions: dict[str, dict[str, _FakeExecution]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        # vm id -> the last contextualisation its guest received
        self.contexts: dict[str, GuestContext] = {}
        # vm id -> device -> the volume hot-plugged there
        self.volumes: dict[str, dict[str, VolumeSpec]] = {}

    async def host_resources(self) -> HostResources:
        return self._resources

    async def define_and_start(self, spec: DomainSpec) -> None:
        if spec.vm_id in self.domains:
            raise DriverError(f"domain for {spec.vm_id} already exists")
        if spec.vm_id in self._fail_on:
            raise DriverError(f"injected failure starting {spec.vm_id}")
        forwards = spec.user_network.forwards if spec.user_network else ()
        if taken := [f.host_port for f in forwards if f.host_port in self.taken_ports]:
            raise HostForwardUnavailable(f"{spec.vm_id}: host port {taken[0]} is taken")
        if self._start_delay:
            await asyncio.sleep(self._start_delay)
        self.domains[spec.vm_id] = spec
        self.volumes[spec.vm_id] = {v.device: v for v in spec.volumes}

    async def destroy(self, vm_id: str) -> None:
        await self.stop(vm_id)

    async def stop(self, vm_id: str) -> None:
        # The fake keeps no disk: stopping and destroying are the same to it.
        self.domains.pop(vm_id, None)
        self.volumes.pop(vm_id, None)
        self.paused.discard(vm_id)
        self._channels.pop(vm_id, None)
        self.executions.pop(vm_id, None)

    async def suspend(self, vm_id: str) -> None:
        if vm_id not in self.domains:
            raise DomainNotFound(f"no domain for {vm_id}")
        self.paused.add(vm_id)

    async def resume(self, vm_id: str) -> None:
        if vm_id not in self.domains:
            raise DomainNotFound(f"no domain for {vm_id}")
        self.paused.discard(vm_id)

    async def attach_volume(self, vm_id: str, volume: VolumeSpec) -> None:
        if vm_id not in self.domains:
            raise DomainNotFound(f"no domain for {vm_id}")
        attached = self.volumes.setdefault(vm_id, {})
        if any(v.path == volume.path for v in attached.values()):
            return
        if volume.device in attached:
            raise DriverError(f"{vm_id}: device {volume.device} is taken by {attached[volume.device].path}")
        attached[volume.device] = volume

    async def detach_volume(self, vm_id: str, volume: VolumeSpec) -> None:
        attached = self.volumes.get(vm_id, {})
        for device, spec in list(attached.items()):
            if spec.path == volume.path:
                del attached[device]

    async def export_disk(self, vm_id: str, disk: Path, out: Path, *, compress: bool = False) -> None:
        # No disk behind a fake VM: the copy is a placeholder that says where it came from.
        if vm_id in self._fail_on:
            raise DriverError(f"injected failure exporting the disk of {vm_id}")
        out.write_bytes(f"WNoDeS fake disk exported from {vm_id}\n".encode())

    async def list(self) -> list[DomainInfo]:
        return [
            DomainInfo(vm_id=v, running=v not in self.paused, paused=v in self.paused, detail="paused" if v in self.paused else "running")
            for v in self.domains
        ]

    def guest(self, vm_id: str) -> FakeGuestChannel:
        spec = self.domains.get(vm_id)
        channel = self._channels.get(vm_id)
        if channel is None:
            channel = FakeGuestChannel(self, vm_id, spec.hostname if spec else vm_id)
            if spec is not None:
                self._channels[vm_id] = channel
        return channel

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
