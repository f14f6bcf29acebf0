"""Volumes: block storage on demand, as records in etcd.

A volume is created as a record only; its data (a qcow2 file) is made by the agent of the host
of the first VM it is attached to, and stays there (no shared storage in this deployment), so a
volume is pinned to that host. An attachment is an entry in the VM's record (the agent of the
VM's host converges to it: hot-plug, hot-unplug) mirrored in the volume's record; the nameserver
writes both in one transaction, and so does the agent when it is done. Attach and detach are
operations whose outcome the agent writes into the operation.
"""

from __future__ import annotations

import logging
import math
import re
import time

from services.common import names, records
from services.common.errors import FailedPrecondition, InvalidArgument, VolumeNotFound
from services.common.identity import Principal
from services.common.keys import Keys
from services.common.pagination import page_by_key
from services.common.records import AttachmentState, OperationRecord, VmRecord, VmState, VolumeRecord, VolumeState
from services.common.store import Compare, Delete, Entry, Put, Store
from services.nameserver import validation
from services.nameserver.access import load_vm, may_see
from services.nameserver.operation_views import OperationViews
from services.nameserver.operations import ATTACH, DETACH, OperationView, new_operation

LOG = logging.getLogger(__name__)

MAX_SIZE_GIB = 1024.0
MAX_TITLE = 256
# virtio disks after the root disk (vda).
DEVICES = tuple(f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz")
_DEVICE_RE = re.compile(r"^vd[b-z]$")


def parse_volume_name(name: str) -> str:
    """'volumes/vol-0123456789' (or the bare id) -> 'vol-0123456789'."""
    return names.parse_minted(name, names.VOLUME)


def check_volume(title: str, size_gib: float) -> None:
    if len(title) > MAX_TITLE or any(not c.isprintable() for c in title):
        raise InvalidArgument(f"title must be at most {MAX_TITLE} printable characters", reason="INVALID_TITLE")
    if not math.isfinite(size_gib) or not 0 < size_gib <= MAX_SIZE_GIB:
        raise InvalidArgument(f"size_gib must be more than 0 and at most {MAX_SIZE_GIB:g} (got {size_gib:g})", reason="INVALID_SIZE")


def choose_device(wanted: str, used: set[str]) -> str:
    """The device the caller asked for if it is free, else the first free one."""
    if wanted:
        if not _DEVICE_RE.match(wanted):
            raise InvalidArgument(f"device {wanted!r} must be one of vdb ... vdz (vda is the root disk)", reason="INVALID_DEVICE")
        if wanted in used:
            raise FailedPrecondition(f"device {wanted} of the VM is taken by another volume", reason="DEVICE_IN_USE")
        return wanted
    free = [d for d in DEVICES if d not in used]
    if not free:
        raise FailedPrecondition(f"the VM has {len(DEVICES)} volumes attached: no device left", reason="DEVICE_IN_USE")
    return free[0]


class VolumeRegistry:
    def __init__(self, store: Store, keys: Keys, operations: OperationViews) -> None:
        self._store = store
        self._keys = keys
        self._operations = operations

    # --- records ------------------------------------------------------------------------

    async def create(self, title: str, size_gib: float, principal: Principal, request_id: str) -> VolumeRecord:
        validation.check_request_id(request_id)
        check_volume(title, size_gib)
        while True:
            if request_id:
                existing = await self._store.get(self._keys.volume_request(request_id))
                if existing is not None:
                    return await self.get(existing.value.decode(), principal)
            volume = VolumeRecord(
                id=names.new_id(names.VOLUME), title=title, size_gib=size_gib,
                owner_user=principal.user, owner_vo=principal.vo, request_id=request_id,
            )  # fmt: skip
            guards = [Compare(self._keys.volume(volume.id), 0)]
            puts = [Put(self._keys.volume(volume.id), records.dump(volume))]
            if request_id:
                guards.append(Compare(self._keys.volume_request(request_id), 0))
                puts.append(Put(self._keys.volume_request(request_id), volume.id.encode()))
            ok, revision = await self._store.txn(guards, puts)
            if ok:
                volume.revision = revision
                LOG.info("created %s (%g GiB) for %s/%s", volume.name, size_gib, principal.user, principal.vo)
                return volume

    async def _load(self, volume_id: str, principal: Principal) -> tuple[Entry, VolumeRecord]:
        entry = await self._store.get(self._keys.volume(volume_id))
        volume = records.load(VolumeRecord, entry.value) if entry else None
        if entry is None or volume is None or not may_see(volume.owner_user, volume.owner_vo, principal):
            raise VolumeNotFound(f"volumes/{volume_id} does not exist")
        volume.revision = entry.mod_revision
        return entry, volume

    async def get(self, volume_id: str, principal: Principal) -> VolumeRecord:
        return (await self._load(volume_id, principal))[1]

    async def list_volumes(self, principal: Principal, page_size: int, page_token: str) -> tuple[list[VolumeRecord], str]:
        def keep(e: Entry) -> VolumeRecord | None:
            volume = records.load(VolumeRecord, e.value)
            volume.revision = e.mod_revision
            return volume if may_see(volume.owner_user, volume.owner_vo, principal) else None

        return await page_by_key(self._store, self._keys.volume(), keep, page_size, page_token)

    async def delete(self, volume_id: str, principal: Principal) -> None:
        """Deletes the record; the agent of its host frees its data when it sees it gone."""
        while True:
            entry, volume = await self._load(volume_id, principal)
            if volume.attachment:
                raise FailedPrecondition(
                    f"{volume.name} is attached to virtualMachines/{volume.attachment.get('vm')} as "
                    f"{volume.attachment.get('device')}: detach it first",
                    reason="VOLUME_ATTACHED",
                )
            ops: list[Put | Delete] = [Delete(entry.key)]
            if volume.request_id:
                ops.append(Delete(self._keys.volume_request(volume.request_id)))
            ok, _ = await self._store.txn([Compare(entry.key, entry.mod_revision)], ops)
            if ok:
                LOG.info("deleted %s", volume.name)
                return

    async def set_online(self, volume_id: str, principal: Principal, online: bool) -> VolumeRecord:
        while True:
            entry, volume = await self._load(volume_id, principal)
            if not online and volume.attachment:
                raise FailedPrecondition(
                    f"{volume.name} is attached to virtualMachines/{volume.attachment.get('vm')}: detach it before taking it offline",
                    reason="VOLUME_ATTACHED",
                )
            volume.state = VolumeState.ONLINE if online else VolumeState.OFFLINE
            volume.state_message, volume.update_time = "", time.time()
            ok, revision = await self._store.txn([Compare(entry.key, entry.mod_revision)], [Put(entry.key, records.dump(volume))])
            if ok:
                volume.revision = revision
                return volume

    # --- pinning ------------------------------------------------------------------------

    async def pin_for(self, volume_ids: list[str], pinned: str, principal: Principal) -> str:
        """The hypervisor a new VM that is to have these volumes must run on: the one holding
        their data (no shared storage in this deployment), or ``pinned`` (the caller's own pin,
        a bare host name or "") if none has data yet. Pin only: the volumes are attached by
        AttachVolume once the VM runs, so each must be the caller's and free now."""
        hosts = set()
        for volume_id in dict.fromkeys(volume_ids):
            volume = await self.get(volume_id, principal)
            if volume.attachment:
                raise FailedPrecondition(
                    f"{volume.name} is attached to virtualMachines/{volume.attachment.get('vm')}: detach it first "
                    "(a volume is attached to one VM at a time)",
                    reason="VOLUME_ATTACHED",
                )
            if volume.hypervisor:
                hosts.add(volume.hypervisor)
        if len(hosts) > 1:
            raise FailedPrecondition(
                f"the volumes live on {' and '.join(f'hypervisors/{h}' for h in sorted(hosts))} (this deployment has no "
                "shared storage): one VM cannot have them all",
                reason="VOLUME_ON_OTHER_HYPERVISOR",
            )
        host = hosts.pop() if hosts else ""
        if host and pinned and pinned != host:
            raise FailedPrecondition(
                f"the VM is pinned to hypervisors/{pinned}, but its volumes live on hypervisors/{host} (this deployment "
                "has no shared storage): pin it there, or not at all",
                reason="VOLUME_ON_OTHER_HYPERVISOR",
                metadata={"volume_hypervisor": host, "pinned_hypervisor": pinned},
            )
        return host or pinned

    # --- attachments --------------------------------------------------------------------

    async def attach(self, volume_id: str, vm_id: str, device: str, principal: Principal) -> OperationView:
        while True:
            v_entry, volume = await self._load(volume_id, principal)
            vm_entry, vm = await load_vm(self._store, self._keys, vm_id, principal)
            if volume.attachment:
                return await self._attached_already(volume, vm, principal)
            if volume.state != VolumeState.ONLINE:
                raise FailedPrecondition(f"{volume.name} is {volume.state}: bring it online first", reason="VOLUME_NOT_ONLINE")
            # A SUSPENDED (paused) domain takes the disk at once; its guest finds it when it resumes.
            _check_vm_settled(vm, "attach volumes to", (VmState.ACTIVE, VmState.SUSPENDED, VmState.STOPPED))
            if volume.hypervisor and volume.hypervisor != vm.hypervisor:
                raise FailedPrecondition(
                    f"{volume.name} lives on hypervisors/{volume.hypervisor}, where it was first attached (this deployment "
                    f"has no shared storage), and {vm.name} runs on hypervisors/{vm.hypervisor}: attach it to a VM there",
                    reason="VOLUME_ON_OTHER_HYPERVISOR",
                    metadata={"volume_hypervisor": volume.hypervisor, "vm_hypervisor": vm.hypervisor},
                )
            chosen = choose_device(device, {e["device"] for e in vm.volumes})
            op = new_operation(ATTACH, vm_id, principal, target=volume_id)
            vm.volumes.append({"volume": volume_id, "device": chosen, "state": AttachmentState.ATTACHING, "operation": op.id})
            volume.attachment = {"vm": vm_id, "device": chosen, "state": AttachmentState.ATTACHING}
            volume.hypervisor, volume.update_time = vm.hypervisor, time.time()
            if await self._write(vm_entry, vm, v_entry, volume, op):
                LOG.info("attaching %s to %s as %s (%s)", volume.name, vm.name, chosen, op.name)
                return OperationView(op, False, vm, volume=volume)

    async def _attached_already(self, volume: VolumeRecord, vm: VmRecord, principal: Principal) -> OperationView:
        """A retried attach gets the operation in flight (or one done at once); any other is refused."""
        attached_to = volume.attachment.get("vm", "")
        entry = next((e for e in vm.volumes if e["volume"] == volume.id), None)
        if attached_to != vm.id or entry is None or entry["state"] == AttachmentState.DETACHING:
            raise FailedPrecondition(
                f"{volume.name} is attached to virtualMachines/{attached_to}: detach it first (a volume is attached to one VM at a time)",
                reason="VOLUME_ATTACHED",
            )
        op_entry = await self._store.get(self._keys.operation(entry["operation"]))
        if op_entry is not None and entry["state"] == AttachmentState.ATTACHING:
            return await self._operations.view(records.load(OperationRecord, op_entry.value), vm)
        op = new_operation(ATTACH, vm.id, principal, target=volume.id)
        op.result = {"volume": volume.id}
        await self._store.put(self._keys.operation(op.id), records.dump(op))
        return OperationView(op, True, vm, volume=volume)

    async def detach(self, volume_id: str, vm_name: str, principal: Principal) -> OperationView:
        while True:
            v_entry, volume = await self._load(volume_id, principal)
            if not volume.attachment:
                raise FailedPrecondition(f"{volume.name} is not attached to any VM", reason="VOLUME_NOT_ATTACHED")
            vm_id = volume.attachment["vm"]
            if vm_name and vm_name != vm_id:
                raise FailedPrecondition(
                    f"{volume.name} is attached to virtualMachines/{vm_id}, not virtualMachines/{vm_name}", reason="VOLUME_NOT_ATTACHED"
                )
            vm_entry, vm = await load_vm(self._store, self._keys, vm_id, principal)
            entry = next((e for e in vm.volumes if e["volume"] == volume_id), None)
            if entry is None:
                raise FailedPrecondition(f"{volume.name} is being released by {vm.name}; ask again in a moment", reason="VOLUME_BUSY")
            if entry["state"] == AttachmentState.DETACHING:
                op_entry = await self._store.get(self._keys.operation(entry["operation"]))
                if op_entry is not None:
                    return await self._operations.view(records.load(OperationRecord, op_entry.value), vm)
            if entry["state"] == AttachmentState.ATTACHING:
                raise FailedPrecondition(f"{volume.name} is still being attached: detach it once that is done", reason="VOLUME_BUSY")
            if vm.state == VmState.SUSPENDED:
                raise FailedPrecondition(
                    f"cannot detach volumes from {vm.name} while it is SUSPENDED: a paused guest cannot let go of a disk "
                    "(the unplug waits for the guest's ACPI eject); start it first",
                    reason="INVALID_VM_STATE",
                )
            _check_vm_settled(vm, "detach volumes from", (VmState.ACTIVE, VmState.STOPPED))
            op = new_operation(DETACH, vm_id, principal, target=volume_id)
            entry["state"], entry["operation"] = AttachmentState.DETACHING, op.id
            volume.attachment["state"], volume.update_time = AttachmentState.DETACHING, time.time()
            if await self._write(vm_entry, vm, v_entry, volume, op):
                LOG.info("detaching %s from %s (%s)", volume.name, vm.name, op.name)
                return OperationView(op, False, vm, volume=volume)

    async def _write(self, vm_entry: Entry, vm: VmRecord, v_entry: Entry, volume: VolumeRecord, op: OperationRecord) -> bool:
        """VM, volume and operation together, if neither record changed; wakes the VM's agent."""
        vm.update_time = time.time()
        ok, revision = await self._store.txn(
            [Compare(vm_entry.key, vm_entry.mod_revision), Compare(v_entry.key, v_entry.mod_revision)],
            [
                Put(vm_entry.key, records.dump(vm)),
                Put(v_entry.key, records.dump(volume)),
                Put(self._keys.operation(op.id), records.dump(op)),
                Put(self._keys.placement(vm.hypervisor, vm.id), f"{op.kind} {op.id}".encode()),
            ],
        )
        volume.revision = revision
        return ok


def _check_vm_settled(vm: VmRecord, doing: str, states: tuple[VmState, ...]) -> None:
    if vm.state not in states:
        allowed = " or ".join(s.value for s in states)
        raise FailedPrecondition(f"cannot {doing} {vm.name}: it is {vm.state}; it must be {allowed}", reason="INVALID_VM_STATE")
    if vm.power_pending or vm.pending_save:
        raise FailedPrecondition(f"cannot {doing} {vm.name} while a power action or a save is in progress", reason="VM_BUSY")
