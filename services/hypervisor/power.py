"""The agent's power handling: carrying out the power action a VM record asks for, and keeping
a SUSPENDED or STOPPED VM so.

The nameserver writes the power state the owner wants and a new generation in the VM record;
the agent stops (syncing the guest's file systems first), suspends, resumes, starts or restarts
the domain, and records the generation it carried out. An action that cannot be carried out
leaves the VM as it is and records why (power_error), with the state the VM is really in.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from services.common import records, telemetry
from services.common.errors import FailedPrecondition, WnodesError, error_to_dict
from services.common.records import PowerState, VmRecord, VmState
from services.common.store import Entry
from services.hypervisor.drivers.base import DriverError, HypervisorDriver
from services.hypervisor.guest_tasks import sync_guest
from services.hypervisor.tracking import NO_DOMAIN, PAUSED, RUNNING, VmTracker, condition_of, find_domain
from services.hypervisor.vm_records import VmRecords

LOG = logging.getLogger(__name__)
TRACER = telemetry.tracer(__name__)
# How the agent boots a VM (a start or restart is a boot of its disk) and fails one.
Start = Callable[[VmRecord, Entry], Awaitable[None]]
Fail = Callable[[VmRecord, BaseException], Awaitable[None]]


class PowerActions:
    """Power for the VMs of one host (the agent's ``Agent`` hands its VMs to it)."""

    def __init__(
        self, host: str, driver: HypervisorDriver, records: VmRecords, vms: VmTracker, *, sync_timeout: float,
        start: Start, fail: Fail, request_pass: Callable[[], None],
    ) -> None:
        self._host = host
        self._driver = driver
        self._records = records
        self._vms = vms
        self._sync_timeout = sync_timeout
        self._start = start
        self._fail = fail
        self._request_pass = request_pass

    async def apply(self, vm: VmRecord, entry: Entry) -> None:
        """Carries out the power action the record asks for (one generation), or records why not."""
        generation = vm.power_generation
        target = PowerState(vm.power)
        try:
            with TRACER.start_as_current_span("hypervisor.power", attributes={"vm": vm.name, "target": target.value}):
                if target == PowerState.STOPPED:
                    self._vms.unsteady(vm.id, f"{vm.name} is stopping")
                    await sync_guest(self._driver, vm, await find_domain(self._driver, vm.id), self._sync_timeout)
                    await self._driver.stop(vm.id)
                    if await self._settle(vm, VmState.STOPPED, "stopped", generation):
                        self._vms.steady(vm.id, NO_DOMAIN, f"{vm.name} is STOPPED")
                elif target == PowerState.SUSPENDED:
                    self._vms.unsteady(vm.id, f"{vm.name} is being suspended")
                    await self._driver.suspend(vm.id)
                    if await self._settle(vm, VmState.SUSPENDED, "suspended", generation):
                        self._vms.steady(vm.id, PAUSED, f"{vm.name} is SUSPENDED")
                elif vm.state == VmState.SUSPENDED:
                    await self._driver.resume(vm.id)
                    if await self._settle(vm, VmState.ACTIVE, "resumed", generation):
                        self._vms.steady(vm.id, RUNNING)
                else:  # start a STOPPED VM or restart an ACTIVE one: boot its disk again
                    doing = "restarting" if vm.state == VmState.ACTIVE else "starting"
                    self._vms.unsteady(vm.id)
                    starting = await self._records.transition(vm.id, VmState.STARTING, doing, expect={VmState.ACTIVE, VmState.STOPPED}, known=entry)
                    if starting is not None:
                        await self._start(records.load(VmRecord, starting.value), starting)
                    return
            LOG.info("%s: %s done on %s", vm.name, target.value.lower(), self._host)
        except (DriverError, WnodesError) as exc:
            await self._failed(vm, generation, exc)

    async def keep_suspended(self, vm: VmRecord) -> None:
        """A SUSPENDED VM: its domain must be there, paused."""
        domain = await find_domain(self._driver, vm.id)
        if domain is None:
            await self._fail(vm, DriverError(f"the suspended domain of {vm.name} is gone (the host restarted?)"))
            return
        if not domain.paused:
            await self._driver.suspend(vm.id)
        self._vms.steady(vm.id, PAUSED, f"{vm.name} is SUSPENDED")

    async def keep_stopped(self, vm: VmRecord) -> None:
        """A STOPPED VM: no domain (a leftover one, e.g. from an agent that died mid-stop, goes)."""
        if await find_domain(self._driver, vm.id) is not None:
            await self._driver.stop(vm.id)
        self._vms.steady(vm.id, NO_DOMAIN, f"{vm.name} is STOPPED")

    async def _settle(self, vm: VmRecord, state: VmState, message: str, generation: int) -> bool:
        def applied(rec: VmRecord) -> bool:
            rec.power_applied = max(rec.power_applied, generation)
            return True

        done = await self._records.transition(
            vm.id, state, message, expect={VmState.ACTIVE, VmState.SUSPENDED, VmState.STOPPED}, mutate=applied
        )
        if done is None:
            self._request_pass()  # deleted or failed meanwhile: the next pass cleans up
        return done is not None

    async def _failed(self, vm: VmRecord, generation: int, exc: BaseException) -> None:
        """The action could not be carried out: the VM stays as it is and the operation fails."""
        err = exc if isinstance(exc, WnodesError) else FailedPrecondition(str(exc), reason="POWER_ACTION_FAILED")
        LOG.error("%s: %s failed on %s: %s", vm.name, vm.power.lower(), self._host, err.message)
        condition = condition_of(await find_domain(self._driver, vm.id))
        # What the VM is now, whatever was asked.
        state, power_state = {
            RUNNING: (VmState.ACTIVE, PowerState.RUNNING),
            PAUSED: (VmState.SUSPENDED, PowerState.SUSPENDED),
            NO_DOMAIN: (VmState.STOPPED, PowerState.STOPPED),
        }[condition]

        def record(rec: VmRecord) -> bool:
            rec.power, rec.power_applied = power_state, max(rec.power_applied, generation)
            rec.power_error = {**error_to_dict(err), "generation": generation}
            return True

        await self._records.transition(
            vm.id, state, f"{vm.power.lower()} failed: {err.message}", mutate=record,
            expect={VmState.ACTIVE, VmState.SUSPENDED, VmState.STOPPED},
        )
        self._vms.steady(vm.id, condition, "" if condition == RUNNING else f"{vm.name} is {state}")
