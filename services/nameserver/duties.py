"""Membership and the duties that must run on exactly one replica.

Each replica registers ``nameservers/<id>`` under its own etcd lease and keeps it alive. A duty
is led by the replica whose candidacy key (bound to the same lease) is the oldest: when a replica
dies its lease expires, its keys vanish and the next oldest leads, with no lock held in a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from services.common import records
from services.common.keys import Keys
from services.common.records import NameserverRecord, OperationRecord, VmRecord, VmState, VolumeRecord
from services.common.registration import Registration
from services.common.store import Compare, Delete, EtcdStore, Put

LOG = logging.getLogger(__name__)

LEASE_TTL = 3
OPERATION_RETENTION = 3600.0


class Membership:
    """This replica's entry in nameservers/, under the lease its duty candidacies share."""

    def __init__(self, store: EtcdStore, keys: Keys, record: NameserverRecord) -> None:
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
        self, name: str, store: EtcdStore, keys: Keys, membership: Membership, member_id: str,
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
    """

    def __init__(
        self, store: EtcdStore, keys: Keys, delete_vm: Callable[[str], Awaitable[object]],
        remove_orphan_interfaces: Callable[[set[str]], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._keys = keys
        self._delete_vm = delete_vm
        self._remove_orphan_interfaces = remove_orphan_interfaces

    async def step(self) -> None:
        live = {e.key.rsplit("/", 1)[-1] for e in (await self._store.get_prefix(self._keys.hypervisor(), keys_only=True))[0]}
        vms, _ = await self._store.get_prefix(self._keys.vm())
        present = set()
        for e in vms:
            vm = records.load(VmRecord, e.value)
            present.add(vm.id)
            expire = vm.labels.get("expire_time", "")
            if expire.replace(".", "", 1).isdigit() and float(expire) < time.time() and vm.state != VmState.DELETING:
                LOG.info("%s expired (expire_time %s): deleting it", vm.name, expire)
                await self._delete_vm(vm.id)
                continue
            if vm.hypervisor and vm.hypervisor not in live and vm.state in (VmState.SCHEDULED, VmState.STARTING, VmState.ACTIVE):
                vm.state_message = f"hypervisor {vm.hypervisor} stopped reporting (was {vm.state})"
                vm.state, vm.update_time = VmState.UNKNOWN, time.time()
                ok, _ = await self._store.txn([Compare(e.key, e.mod_revision)], [Put(e.key, records.dump(vm))])
                if ok:
                    LOG.warning("%s is UNKNOWN: %s", vm.name, vm.state_message)
        await self._free_orphaned_volumes(present)
        if self._remove_orphan_interfaces is not None:
            await self._remove_orphan_interfaces(present)
        ops, _ = await self._store.get_prefix(self._keys.operation())
        now = time.time()
        for e in ops:
            op = records.load(OperationRecord, e.value)
            if now - op.create_time > OPERATION_RETENTION and op.vm_id not in present:
                await self._store.txn([Compare(e.key, e.mod_revision)], [Delete(e.key)])

    async def _free_orphaned_volumes(self, present: set[str]) -> None:
        volumes, _ = await self._store.get_prefix(self._keys.volume())
        for e in volumes:
            volume = records.load(VolumeRecord, e.value)
            vm_id = volume.attachment.get("vm", "")
            if not volume.attachment or vm_id in present:
                continue
            volume.attachment = {}
            # Guarded by the VM's absence too: a VM made since the scan above keeps its volume.
            ok, _ = await self._store.txn(
                [Compare(e.key, e.mod_revision), Compare(self._keys.vm(vm_id), 0)], [Put(e.key, records.dump(volume))]
            )
            if ok:
                LOG.warning("%s was attached to virtualMachines/%s, which is gone: freed it", volume.name, vm_id)
