"""A stand-in for the agent's VmRecords (services/hypervisor/vm_records.py): one dict of records,
transitions applied as the real compare-and-set applies them, no etcd."""

from __future__ import annotations

import copy
from collections.abc import Callable

from services.common import records
from services.common.records import VmRecord, VmState
from services.common.store import Entry


class FakeRecords:
    def __init__(self, *vms: VmRecord) -> None:
        self.vms = {vm.id: copy.deepcopy(vm) for vm in vms}
        self.revision = 1

    def entry(self, vm_id: str) -> Entry:
        self.revision += 1
        return Entry(f"/vms/{vm_id}", records.dump(self.vms[vm_id]), self.revision, self.revision)

    async def transition(
        self, vm_id: str, state: VmState, message: str, *, expect: set[VmState],
        mutate: Callable[[VmRecord], bool] | None = None, known: Entry | None = None,
    ) -> Entry | None:
        vm = self.vms.get(vm_id)
        if vm is None or vm.state not in expect:
            return None
        changed = copy.deepcopy(vm)
        changed.state = state
        if message:
            changed.state_message = message
        if mutate is not None and not mutate(changed):
            return None
        self.vms[vm_id] = changed
        return self.entry(vm_id)
