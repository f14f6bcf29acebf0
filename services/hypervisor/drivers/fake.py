"""A hypervisor driver that runs no VMs: for unit and contract tests and for scale simulation.

Domains are entries in a dict. Its guest channel answers like a real guest agent, running a
tiny, safe command language (``echo``, ``exit N``, ``sleep S``, ``uname -r``, ``hostname``,
``cat /etc/os-release``, joined with ``;`` or newlines) instead of executing anything on the host.
Failure injection: ``fail_on`` names vm ids whose start fails; ``start_delay`` simulates a boot.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator

from services.hypervisor.drivers.base import (
    DomainInfo,
    DomainSpec,
    DriverError,
    ExecEvent,
    Exit,
    GuestNotReady,
    GuestReady,
    HostResources,
    Stderr,
    Stdout,
)

FAKE_KERNEL = "6.1.0-fake"


class FakeGuestChannel:
    def __init__(self, driver: FakeDriver, vm_id: str, hostname: str) -> None:
        self._driver = driver
        self._vm_id = vm_id
        self._hostname = hostname
        self._lock = asyncio.Lock()

    async def wait_ready(self, timeout: float) -> GuestReady:
        if self._vm_id not in self._driver.domains:
            raise GuestNotReady(f"{self._vm_id}: no such domain")
        return GuestReady(kernel_release=FAKE_KERNEL)

    async def exec(self, command: str, uid: int = 0) -> AsyncIterator[ExecEvent]:
        async with self._lock:
            code = 0
            for statement in command.replace("\n", ";").split(";"):
                words = shlex.split(statement)
                if not words:
                    continue
                if self._vm_id not in self._driver.domains:
                    raise GuestNotReady(f"{self._vm_id}: the domain went away")
                match words:
                    case ["echo", *rest]:
                        yield Stdout((" ".join(rest) + "\n").encode())
                        code = 0
                    case ["uname", "-r"]:
                        yield Stdout(f"{FAKE_KERNEL}\n".encode())
                    case ["hostname"]:
                        yield Stdout(f"{self._hostname}\n".encode())
                    case ["cat", "/etc/os-release"]:
                        yield Stdout(b'ID=wnodes-fake\nPRETTY_NAME="WNoDeS fake guest"\n')
                    case ["sleep", seconds]:
                        await asyncio.sleep(float(seconds))
                    case ["exit", status]:
                        yield Exit(int(status))
                        return
                    case ["true"]:
                        code = 0
                    case ["false"]:
                        code = 1
                    case _:
                        yield Stderr(f"fake guest: {words[0]}: not found\n".encode())
                        code = 127
            yield Exit(code)

    async def close(self) -> None:
        return None


class FakeDriver:
    def __init__(
        self,
        vcpu_count: int = 16,
        memory_mib: int = 65536,
        start_delay: float = 0.0,
        fail_on: frozenset[str] = frozenset(),
    ) -> None:
        self._resources = HostResources(vcpu_count, memory_mib, "fake")
        self._start_delay = start_delay
        self._fail_on = fail_on
        self.domains: dict[str, DomainSpec] = {}
        self._channels: dict[str, FakeGuestChannel] = {}

    async def host_resources(self) -> HostResources:
        return self._resources

    async def define_and_start(self, spec: DomainSpec) -> None:
        if spec.vm_id in self.domains:
            raise DriverError(f"domain for {spec.vm_id} already exists")
        if spec.vm_id in self._fail_on:
            raise DriverError(f"injected failure starting {spec.vm_id}")
        if self._start_delay:
            await asyncio.sleep(self._start_delay)
        self.domains[spec.vm_id] = spec

    async def destroy(self, vm_id: str) -> None:
        self.domains.pop(vm_id, None)
        self._channels.pop(vm_id, None)

    async def list(self) -> list[DomainInfo]:
        return [DomainInfo(vm_id=v, running=True, detail="running") for v in self.domains]

    def guest(self, vm_id: str) -> FakeGuestChannel:
        spec = self.domains.get(vm_id)
        channel = self._channels.get(vm_id)
        if channel is None:
            channel = FakeGuestChannel(self, vm_id, spec.hostname if spec else vm_id)
            if spec is not None:
                self._channels[vm_id] = channel
        return channel

    async def close(self) -> None:
        return None
