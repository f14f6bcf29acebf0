"""Membership and the duties that must run on exactly one replica.

Each replica registers ``nameservers/<id>`` under its own etcd lease and keeps it alive. A duty
is led by the replica whose candidacy key (bound to the same lease) is the oldest: when a replica
dies its lease expires, its keys vanish and the next oldest leads, with no lock held in a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

from services.common import records
from services.common.group_commit import GroupCommit
from services.common.keys import Keys
from services.common.records import NameserverRecord, OperationRecord, VmRecord, VmState, VolumeRecord
from services.common.registration import Registration
from services.common.store import Compare, Delete, Entry, Put, Store, TxnItem
from services.nameserver.host_cache import HostCache

LOG = logging.getLogger(__name__)

LEASE_TTL = 3
OPERATION_RETENTION = 3600.0
MIN_SWEEP_PAGE = 500


class Membership:
    """This replica's entry in nameservers/, under the lease its duty candidacies share."""

    def __init__(self, store: Store, keys: Keys, record: NameserverRecord) -> None:
        self._registration = Registration(store, keys.nameserver(record.id), lambda: records.dump(record), LEASE_TTL)

    @property
    def lease(self) -> int:
        return self._registration.lease

    async def start(self) -> None:
        await self._registration.start()

    async def stop(self) -> None:
        await self._registration.stop()


class Duty:
    """Runs ``step`` every ``interval`` seconds while this replica leads the duty."""

    def __init__(
        self, name: str, store: Store, keys: Keys, membership: Membership, member_id: str,
        step: Callable[[], Awaitable[None]], interval: float,
    ) -> None:
        self.name = name
        self._store = store
        self._keys = keys
        self._membership = membership
        self._member_id = member_id
        self._step = step
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.leading = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        key = f"{self._keys.election(self.name)}/{self._member_id}"
        while True:
            try:
                lease = self._membership.lease
                await self._store.txn([Compare(key, 0)], [Put(key, self._member_id.encode(), lease=lease)])
                entries, _ = await self._store.get_prefix(self._keys.election(self.name) + "/")
                leader = min(entries, key=lambda e: e.create_revision) if entries else None
                leading = leader is not None and leader.key == key
                if leading != self.leading:
                    LOG.info("%s duty %s", "leading" if leading else "no longer leading", self.name)
                self.leading = leading
                if leading:
                    await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                LOG.warning("duty %s: %s", self.name, exc)
            await asyncio.sleep(self._interval)


class Reconciler:
    """The registry's housekeeping, run by one replica at a time.

    - VMs on a hypervisor whose lease expired become UNKNOWN (the agent restores them);
    - VMs whose label ``expire_time`` (Unix seconds) has passed are deleted (an idle VM kept for
      recycling by a batch system's policy lives until then);
    - finished operations and their request ids are forgotten after a retention time;
    - a volume still marked attached to a VM that no longer exists is freed, and network
      interfaces of such a VM are removed with their leases (the VM's deletion frees both;
      this catches a VM record removed any other way).

    None of it reads the whole registry per step (100,000 VMs: 70 MB of JSON every 2 s). Dead
    hosts come from the replica's watch-fed host cache (a host with VMs and no record), checked
    against etcd before anything is written; only their VMs are read, once per change of their
    usage record. VMs, operations, volumes and interfaces are swept with a cursor, a page per
    step sized so that a whole sweep takes about ``sweep_seconds`` whatever the registry's size:
    an expire_time is honoured, and an orphaned volume or interface freed, within that, and a
    small registry is still swept whole at every step.
    """

    def __init__(
        self, store: Store, keys: Keys, delete_vm: Callable[[str], Awaitable[object]], hosts: HostCache,
        step_interval: float = 2.0, sweep_seconds: float = 60.0,
        remove_orphan_interfaces: Callable[[list[Entry]], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._keys = keys
        self._delete_vm = delete_vm
        self._remove_orphan_interfaces = remove_orphan_interfaces
        self._hosts = hosts
        self._steps_per_sweep = max(1.0, sweep_seconds / max(step_interval, 0.1))
        # dead host -> mod_revision of the usage record whose VMs were marked UNKNOWN
        self._marked: dict[str, int] = {}
        self._commits = GroupCommit(store)
        self._vm_sweep = _Sweep(keys.vm())
        self._op_sweep = _Sweep(keys.operation())
        self._volume_sweep = _Sweep(keys.volume())
        self._interface_sweep = _Sweep(keys.network_interface())

    async def step(self) -> None:
        await self._mark_vms_of_dead_hosts()
        await self._expire_vms()
        await self._forget_operations()
        await self._free_orphaned_volumes()
        await self._remove_orphan_interfaces_step()

    async def _mark_vms_of_dead_hosts(self) -> None:
        for name in [n for n in self._marked if n in self._hosts.hypervisors]:
            del self._marked[name]  # it came back
        suspects = [
            (name, usage, entry) for name, (usage, entry) in list(self._hosts.usage.items())
            if usage.vms and name not in self._hosts.hypervisors and self._marked.get(name) != entry.mod_revision
        ]
        if not suspects:
            return
        # The cache may lag behind etcd: a host is dead only if etcd says so too.
        present = await self._store.get_many([self._keys.hypervisor(name) for name, _, _ in suspects])
        for (name, usage, entry), record in zip(suspects, present, strict=True):
            if record is not None:
                continue
            vm_entries = await self._store.get_many([self._keys.vm(vm_id) for vm_id in usage.vms])
            # A whole agent process can die (thousands of hosts): its VMs are marked together.
            await asyncio.gather(*(self._mark_unknown(name, e) for e in vm_entries if e is not None))
            self._marked[name] = entry.mod_revision

    async def _mark_unknown(self, host: str, e: Entry) -> None:
        vm = records.load(VmRecord, e.value)
        if vm.hypervisor != host or vm.state not in (VmState.SCHEDULED, VmState.STARTING, VmState.ACTIVE):
            return
        vm.state_message = f"hypervisor {vm.hypervisor} stopped reporting (was {vm.state})"
        vm.state, vm.update_time = VmState.UNKNOWN, time.time()
        outcome = await self._commits.txn(TxnItem([Compare(e.key, e.mod_revision)], [Put(e.key, records.dump(vm))]))
        if outcome.succeeded:
            LOG.warning("%s is UNKNOWN: %s", vm.name, vm.state_message)

    async def _expire_vms(self) -> None:
        for e in await self._vm_sweep.next_page(self._store, self._steps_per_sweep):
            if b'"expire_time"' not in e.value:  # most VMs: no need to decode them
                continue
            vm = records.load(VmRecord, e.value)
            expire = vm.labels.get("expire_time", "")
            if expire.replace(".", "", 1).isdigit() and float(expire) < time.time() and vm.state != VmState.DELETING:
                LOG.info("%s expired (expire_time %s): deleting it", vm.name, expire)
                await self._delete_vm(vm.id)

    async def _forget_operations(self) -> None:
        now = time.time()
        old = []
        for e in await self._op_sweep.next_page(self._store, self._steps_per_sweep):
            op = records.load(OperationRecord, e.value)
            if now - op.create_time > OPERATION_RETENTION:
                old.append((e, op))
        if not old:
            return
        vms = await self._store.get_many([self._keys.vm(op.vm_id) for _, op in old])
        for (e, _op), vm in zip(old, vms, strict=True):
            if vm is None:
                await self._store.txn([Compare(e.key, e.mod_revision)], [Delete(e.key)])

    async def _free_orphaned_volumes(self) -> None:
        attached = []
        for e in await self._volume_sweep.next_page(self._store, self._steps_per_sweep):
            volume = records.load(VolumeRecord, e.value)
            if volume.attachment.get("vm", ""):
                attached.append((e, volume))
        if not attached:
            return
        vms = await self._store.get_many([self._keys.vm(v.attachment["vm"]) for _, v in attached])
        for (e, volume), vm in zip(attached, vms, strict=True):
            if vm is not None:
                continue
            vm_id = volume.attachment["vm"]
            volume.attachment = {}
            # Guarded by the VM's absence too: a VM made since the read above keeps its volume.
            ok, _ = await self._store.txn(
                [Compare(e.key, e.mod_revision), Compare(self._keys.vm(vm_id), 0)], [Put(e.key, records.dump(volume))]
            )
            if ok:
                LOG.warning("%s was attached to virtualMachines/%s, which is gone: freed it", volume.name, vm_id)

    async def _remove_orphan_interfaces_step(self) -> None:
        if self._remove_orphan_interfaces is None:
            return
        entries = await self._interface_sweep.next_page(self._store, self._steps_per_sweep)
        if entries:
            await self._remove_orphan_interfaces(entries)


class _Sweep:
    """A cursor over a prefix that reads one page per step, sized so a whole pass takes a
    given number of steps."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._after = ""
        self._page = 0

    async def next_page(self, store: Store, steps_per_sweep: float) -> list[Entry]:
        if not self._after:  # a new pass: size its pages from the prefix's size now
            self._page = max(MIN_SWEEP_PAGE, math.ceil(await store.count_prefix(self._prefix) / steps_per_sweep))
        entries, _ = await store.get_prefix(self._prefix, start_after=self._after, limit=self._page)
        self._after = entries[-1].key if len(entries) == self._page else ""
        return entries
