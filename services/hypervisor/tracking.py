"""The agent's bookkeeping per VM: the one task handling it, whether its guest takes commands,
and whether it has settled (so that periodic passes can skip it)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from services.common.errors import DeadlineExceeded, FailedPrecondition, VirtualMachineNotFound
from services.hypervisor.drivers.base import DomainInfo, HypervisorDriver

# What a VM's domain looks like to the driver: running, paused, or no domain at all.
RUNNING, PAUSED, NO_DOMAIN = "running", "paused", "none"


def condition_of(info: DomainInfo | None) -> str:
    if info is None:
        return NO_DOMAIN
    return PAUSED if info.paused else RUNNING if info.running else NO_DOMAIN


async def find_domain(driver: HypervisorDriver, vm_id: str) -> DomainInfo | None:
    """The domain of a VM on this host, as the driver reports it; None without one."""
    return next((d for d in await driver.list() if d.vm_id == vm_id), None)


@dataclass
class TrackedVm:
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    failed: str = ""
    # Why commands cannot run in the guest now ("it is STOPPED"); empty when they can.
    unavailable: str = ""
    # A change arrived while the task ran: handle the VM again when it ends.
    dirty: bool = False
    # The newest placement value seen, and the one the running task started from.
    placement: bytes = b""
    handling: bytes = b""
    # (placement value, domain condition) once the VM reached what its record asks for: a
    # periodic pass skips it while both still hold.
    steady: tuple[bytes, str] | None = None


class VmTracker:
    def __init__(self, host: str) -> None:
        self._host = host
        self._vms: dict[str, TrackedVm] = {}

    def __contains__(self, vm_id: object) -> bool:
        return vm_id in self._vms

    def get(self, vm_id: str) -> TrackedVm | None:
        return self._vms.get(vm_id)

    def entry(self, vm_id: str) -> TrackedVm:
        return self._vms.setdefault(vm_id, TrackedVm())

    def forget(self, vm_id: str) -> None:
        self._vms.pop(vm_id, None)

    def all(self) -> list[TrackedVm]:
        return list(self._vms.values())

    def settled(self, vm_id: str, placement: bytes, condition: str) -> bool:
        """Nothing was asked of the VM since it settled, and its domain is as it left it."""
        tracked = self._vms.get(vm_id)
        return tracked is not None and tracked.steady == (placement, condition)

    def steady(self, vm_id: str, condition: str, unavailable: str = "") -> None:
        """The VM reached what its record asks for; its domain is now in condition."""
        tracked = self._vms.get(vm_id)
        if tracked is None:
            return
        tracked.steady = (tracked.handling, condition)
        tracked.unavailable = unavailable
        if condition == RUNNING:
            tracked.ready.set()
        else:
            tracked.ready.clear()

    def unsteady(self, vm_id: str, unavailable: str = "") -> None:
        """The VM is on its way somewhere: commands wait (or fail, with unavailable) until then."""
        tracked = self._vms.get(vm_id)
        if tracked is not None:
            tracked.steady, tracked.unavailable = None, unavailable
            tracked.ready.clear()

    async def wait_ready(self, vm_id: str, timeout: float) -> None:
        """Returns once the VM's guest takes commands; fails at once if it cannot (FAILED,
        STOPPED, SUSPENDED) and with DeadlineExceeded after timeout."""
        try:
            async with asyncio.timeout(timeout):
                tracked = await self._soon(vm_id)
                while not tracked.ready.is_set():
                    if tracked.failed:
                        raise FailedPrecondition(f"virtualMachines/{vm_id} failed: {tracked.failed}", reason="VM_FAILED")
                    if tracked.unavailable:
                        raise FailedPrecondition(f"{tracked.unavailable}: start or resume it first", reason="VM_NOT_RUNNING")
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.2):
                            await tracked.ready.wait()
        except TimeoutError as exc:
            raise DeadlineExceeded(f"virtualMachines/{vm_id} was not ready within {timeout:.0f}s") from exc

    async def _soon(self, vm_id: str, grace: float = 5.0) -> TrackedVm:
        """The VM's entry; an Exec may arrive a moment before the placement's watch event."""
        deadline = time.monotonic() + grace
        while (tracked := self._vms.get(vm_id)) is None:
            if time.monotonic() > deadline:
                raise VirtualMachineNotFound(f"virtualMachines/{vm_id} is not on hypervisor {self._host}")
            await asyncio.sleep(0.02)
        return tracked
