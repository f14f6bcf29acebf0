"""What an agent writes in etcd about its VMs: state changes (compare-and-set), the release of
a VM's share of the host, a save's outcome. Each is one transaction, retried on conflicts.
State changes and releases go through group commit (shared by the hosts of a process), and a
failed one reads, in the same round trip, what it needs to try again."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from services.common import records
from services.common.group_commit import GroupCommit
from services.common.keys import Keys
from services.common.records import HostUsage, OperationRecord, VmRecord, VmState
from services.common.store import Compare, Delete, Entry, Put, Store, TxnItem


class VmRecords:
    def __init__(self, store: Store, keys: Keys, host: str, commits: GroupCommit | None = None) -> None:
        self._store = store
        self._commits = commits or GroupCommit(store)
        self._keys = keys
        self._host = host

    async def get(self, vm_id: str) -> tuple[Entry, VmRecord] | None:
        entry = await self._commits.get(self._keys.vm(vm_id))
        return (entry, records.load(VmRecord, entry.value)) if entry else None

    async def transition(
        self,
        vm_id: str,
        state: VmState,
        message: str,
        *,
        expect: set[VmState],
        mutate: Callable[[VmRecord], bool] | None = None,
        known: Entry | None = None,
    ) -> Entry | None:
        """Compare-and-set of a VM's state. Returns the record as written, or None if the VM
        left the expected states meanwhile (e.g. it is being deleted). ``known`` is a version
        this agent already holds: tried first, so the common case costs one transaction."""
        entry = known
        while True:
            if entry is None:
                entry = await self._commits.get(self._keys.vm(vm_id))
                if entry is None:
                    return None
            rec = records.load(VmRecord, entry.value)
            if rec.state not in expect:
                return None
            rec.state, rec.update_time = state, time.time()
            if message:
                rec.state_message = message
            if mutate is not None and not mutate(rec):
                return None
            value = records.dump(rec)
            outcome = await self._commits.txn(TxnItem([Compare(entry.key, entry.mod_revision)], [Put(entry.key, value)], reads_on_failure=[entry.key]))
            if outcome.succeeded:
                return Entry(entry.key, value, outcome.revision, entry.create_revision)
            entry = outcome.reads[0]
            if entry is None:
                return None

    async def release(self, vm_id: str, vm: VmRecord | None, *, delete_record: bool) -> None:
        """Frees the VM's cores and memory and its placement; deletes its record and leases when
        asked. One transaction, retried on conflicting usage updates."""
        usage_key = self._keys.usage(self._host)
        entry = await self._commits.get(usage_key)
        while True:
            usage = records.load(HostUsage, entry.value) if entry else HostUsage()
            usage.remove(vm_id)
            ops: list[Put | Delete] = [Put(usage_key, records.dump(usage)), Delete(self._keys.placement(self._host, vm_id))]
            if delete_record:
                ops.append(Delete(self._keys.vm(vm_id)))
                if vm is not None:
                    ops += [Delete(self._keys.mac_lease(vm.mac_address)), Delete(self._keys.hostname_lease(vm.hostname))]
            outcome = await self._commits.txn(TxnItem([Compare.unchanged(entry, usage_key)], ops, reads_on_failure=[usage_key]))
            if outcome.succeeded:
                return
            entry = outcome.reads[0]

    async def finish_save(self, vm_id: str, op_id: str, outcome: dict[str, Any]) -> bool:
        """Clears the VM's pending save and records the outcome ({"result": ...} or
        {"error": ...}) in its operation, together. False if the save was not this one's."""
        op_key = self._keys.operation(op_id)
        while True:
            entry, op_entry = await self._store.get(self._keys.vm(vm_id)), await self._store.get(op_key)
            if entry is None or op_entry is None:
                return False
            vm = records.load(VmRecord, entry.value)
            if vm.pending_save.get("operation") != op_id:
                return False
            op = records.load(OperationRecord, op_entry.value)
            op.result, op.error = outcome.get("result", {}), outcome.get("error", {})
            vm.pending_save, vm.update_time = {}, time.time()
            vm.state_message = f"saved as {op.result['image_version']}" if op.result else f"save failed: {op.error.get('message', '')}"
            ok, _ = await self._store.txn(
                [Compare(entry.key, entry.mod_revision), Compare(op_key, op_entry.mod_revision)],
                [Put(entry.key, records.dump(vm)), Put(op_key, records.dump(op))],
            )
            if ok:
                return True
