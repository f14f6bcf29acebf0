"""The agent's power handling (services/hypervisor/power.py) on the fake driver, without etcd."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from services.common.records import PowerState, VmRecord, VmState
from services.common.store import Entry
from services.hypervisor.drivers.base import DomainSpec
from services.hypervisor.drivers.fake import FakeDriver
from services.hypervisor.power import PowerActions
from services.hypervisor.tracking import NO_DOMAIN, PAUSED, RUNNING, VmTracker
from services.hypervisor.vm_records import VmRecords
from tests.unit.hypervisor.fake_records import FakeRecords


class Harness:
    def __init__(self, vm: VmRecord) -> None:
        self.driver = FakeDriver()
        self.records = FakeRecords(vm)
        self.vms = VmTracker("h1")
        self.vms.entry(vm.id)
        self.started: list[str] = []
        self.failed: list[str] = []
        self.passes = 0
        self.power = PowerActions(
            "h1", self.driver, cast(VmRecords, self.records), self.vms, sync_timeout=1.0,
            start=self._start, fail=self._fail, request_pass=self._request_pass,
        )

    async def _start(self, vm: VmRecord, entry: Entry) -> None:
        self.started.append(vm.state)

    async def _fail(self, vm: VmRecord, exc: BaseException) -> None:
        self.failed.append(str(exc))

    def _request_pass(self) -> None:
        self.passes += 1

    async def boot(self, vm_id: str) -> None:
        await self.driver.define_and_start(DomainSpec(vm_id, 1, 128, Path("/nonexistent"), "h", "52:54:00:00:00:01"))

    def vm(self, vm_id: str) -> VmRecord:
        return self.records.vms[vm_id]

    def steady(self, vm_id: str) -> Any:
        tracked = self.vms.get(vm_id)
        return tracked.steady[1] if tracked and tracked.steady else None


def asked(state: VmState, power: PowerState, generation: int = 1) -> VmRecord:
    return VmRecord(id="vm-1", image="tiny", image_version="images/tiny/versions/1", vcpu_count=1, memory_mib=128,
                    owner_user="alice", owner_vo="vo", state=state, power=power, power_generation=generation, power_applied=generation - 1)


async def test_stop_ends_the_domain_and_records_the_generation() -> None:
    h = Harness(asked(VmState.ACTIVE, PowerState.STOPPED, generation=3))
    await h.boot("vm-1")
    await h.power.apply(h.vm("vm-1"), h.records.entry("vm-1"))
    assert "vm-1" not in h.driver.domains
    assert (h.vm("vm-1").state, h.vm("vm-1").power_applied, h.steady("vm-1")) == (VmState.STOPPED, 3, NO_DOMAIN)


async def test_suspend_then_resume() -> None:
    h = Harness(asked(VmState.ACTIVE, PowerState.SUSPENDED))
    await h.boot("vm-1")
    await h.power.apply(h.vm("vm-1"), h.records.entry("vm-1"))
    assert "vm-1" in h.driver.paused and h.vm("vm-1").state == VmState.SUSPENDED and h.steady("vm-1") == PAUSED
    h.records.vms["vm-1"].power, h.records.vms["vm-1"].power_generation = PowerState.RUNNING, 2
    await h.power.apply(h.vm("vm-1"), h.records.entry("vm-1"))
    assert "vm-1" not in h.driver.paused and h.vm("vm-1").state == VmState.ACTIVE and h.steady("vm-1") == RUNNING
    assert h.vm("vm-1").power_applied == 2


async def test_start_and_restart_boot_through_the_agent() -> None:
    for state in (VmState.STOPPED, VmState.ACTIVE):
        h = Harness(asked(state, PowerState.RUNNING))
        await h.power.apply(h.vm("vm-1"), h.records.entry("vm-1"))
        assert h.started == [VmState.STARTING]
        assert h.vm("vm-1").state_message == ("restarting" if state == VmState.ACTIVE else "starting")


async def test_a_failed_action_records_what_the_vm_really_is() -> None:
    # Suspending a VM whose domain is gone fails; the VM is recorded as STOPPED, with the error.
    h = Harness(asked(VmState.ACTIVE, PowerState.SUSPENDED, generation=5))
    await h.power.apply(h.vm("vm-1"), h.records.entry("vm-1"))
    vm = h.vm("vm-1")
    assert (vm.state, vm.power, vm.power_applied) == (VmState.STOPPED, PowerState.STOPPED, 5)
    assert vm.power_error["generation"] == 5 and "no domain" in vm.power_error["message"]
    assert vm.state_message.startswith("suspended failed: ")


async def test_a_vm_deleted_meanwhile_asks_for_a_pass() -> None:
    h = Harness(asked(VmState.ACTIVE, PowerState.STOPPED))
    await h.boot("vm-1")
    vm = h.vm("vm-1")
    h.records.vms["vm-1"].state = VmState.DELETING
    await h.power.apply(vm, h.records.entry("vm-1"))
    assert h.passes == 1 and h.steady("vm-1") is None


async def test_kept_suspended_and_kept_stopped() -> None:
    h = Harness(asked(VmState.SUSPENDED, PowerState.SUSPENDED))
    await h.boot("vm-1")
    await h.power.keep_suspended(h.vm("vm-1"))
    assert "vm-1" in h.driver.paused and h.steady("vm-1") == PAUSED
    await h.power.keep_stopped(h.vm("vm-1"))  # a leftover domain of a STOPPED VM goes
    assert "vm-1" not in h.driver.domains and h.steady("vm-1") == NO_DOMAIN
    await h.power.keep_suspended(h.vm("vm-1"))  # its domain is gone: the VM fails
    assert h.failed and "gone" in h.failed[0]
