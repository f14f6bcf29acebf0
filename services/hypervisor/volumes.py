"""A host's side of volumes: their data files, and attachments converged to the VM records.

A VM record's ``volumes`` entries say what is wanted (ATTACHING, ATTACHED, DETACHING); this
module makes the data file on first use (a sparse qcow2 in the host's volume directory, where it
stays: the volume is pinned here), hot-plugs or hot-unplugs it when the VM's domain exists (a
STOPPED VM gets its volumes when it boots), and records the outcome in the VM record, the
volume record and the operation in one transaction. Files of volumes whose record is gone are
removed by collect_garbage, so a deleted volume's data is freed by the agent of its host.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from services.common import records
from services.common.errors import FailedPrecondition, WnodesError, error_to_dict
from services.common.keys import Keys
from services.common.records import AttachmentState, OperationRecord, VmRecord, VolumeRecord, VolumeState
from services.common.store import Compare, Put, Store
from services.hypervisor.drivers.base import DriverError, HypervisorDriver, VolumeSpec
from services.hypervisor.drivers.qemu_img import create_volume

LOG = logging.getLogger(__name__)

# How an attach or detach ended, for _finish.
ATTACHED, DETACHED, ATTACH_FAILED, DETACH_FAILED = "attached", "detached", "attach failed", "detach failed"


def pending(vm: VmRecord) -> bool:
    """Whether some volume of the VM waits to be attached or detached."""
    return any(e.get("state") != AttachmentState.ATTACHED for e in vm.volumes)


class VolumeAttacher:
    def __init__(self, store: Store, keys: Keys, driver: HypervisorDriver, volume_dir: Path) -> None:
        self._store = store
        self._keys = keys
        self._driver = driver
        self._dir = volume_dir

    def path(self, volume_id: str) -> Path:
        return self._dir / f"{volume_id}.qcow2"

    def boot_specs(self, vm: VmRecord) -> tuple[VolumeSpec, ...]:
        """The volumes a (re)booting domain starts with: those already attached."""
        return tuple(
            VolumeSpec(self.path(e["volume"]), e["device"], serial=e["volume"])
            for e in vm.volumes
            if e.get("state") == AttachmentState.ATTACHED
        )

    async def converge(self, vm: VmRecord, live: bool) -> None:
        """Carries out the VM's pending attachments; live: its domain exists (hot-plug now)."""
        for entry in list(vm.volumes):
            if entry.get("state") == AttachmentState.ATTACHING:
                await self._attach(vm, entry, live)
            elif entry.get("state") == AttachmentState.DETACHING:
                await self._detach(vm, entry, live)

    async def _attach(self, vm: VmRecord, entry: dict[str, str], live: bool) -> None:
        volume_id = entry["volume"]
        failure: WnodesError | None = None
        data_failed = False
        try:
            volume = await self._volume(volume_id)
            if volume is None:
                raise FailedPrecondition(f"volumes/{volume_id} was deleted", reason="VOLUME_DELETED")
            path = self.path(volume_id)
            if not path.exists():
                self._dir.mkdir(parents=True, exist_ok=True)
                data_failed = True
                await create_volume(path, volume.size_mib)
                data_failed = False
                LOG.info("created the data of %s (%d MiB) on this host", volume.name, volume.size_mib)
            if live:
                await self._driver.attach_volume(vm.id, VolumeSpec(path, entry["device"], serial=volume_id))
        except (DriverError, WnodesError) as exc:
            failure = exc if isinstance(exc, WnodesError) else FailedPrecondition(str(exc), reason="VOLUME_ATTACH_FAILED")
            LOG.error("%s: attaching volumes/%s failed: %s", vm.name, volume_id, failure.message)
        await self._finish(vm.id, entry, ATTACH_FAILED if failure else ATTACHED, failure, volume_broken=data_failed)

    async def _detach(self, vm: VmRecord, entry: dict[str, str], live: bool) -> None:
        failure: WnodesError | None = None
        try:
            if live:
                await self._driver.detach_volume(vm.id, VolumeSpec(self.path(entry["volume"]), entry["device"], serial=entry["volume"]))
        except DriverError as exc:
            failure = FailedPrecondition(str(exc), reason="VOLUME_DETACH_FAILED")
            LOG.error("%s: detaching volumes/%s failed: %s", vm.name, entry["volume"], failure.message)
        await self._finish(vm.id, entry, DETACH_FAILED if failure else DETACHED, failure)

    async def _finish(
        self, vm_id: str, entry: dict[str, str], outcome: str, failure: WnodesError | None, *, volume_broken: bool = False
    ) -> None:
        """Records how an attach or detach ended: VM entry, volume and operation together."""
        volume_id, op_id = entry["volume"], entry.get("operation", "")
        vm_key, volume_key, op_key = self._keys.vm(vm_id), self._keys.volume(volume_id), self._keys.operation(op_id)
        while True:
            vm_entry, volume_entry, op_entry = await self._store.get(vm_key), await self._store.get(volume_key), await self._store.get(op_key)
            if vm_entry is None:
                return  # the VM is gone: release() dealt with its volumes
            vm = records.load(VmRecord, vm_entry.value)
            mine = next((e for e in vm.volumes if e["volume"] == volume_id and e.get("operation") == op_id), None)
            if mine is None:
                return  # someone else finished it
            compares, puts = [Compare(vm_key, vm_entry.mod_revision)], []
            if outcome in (ATTACHED, DETACH_FAILED):
                mine["state"] = AttachmentState.ATTACHED
            else:
                vm.volumes.remove(mine)
            puts.append(Put(vm_key, records.dump(vm)))
            if volume_entry is not None:
                volume = records.load(VolumeRecord, volume_entry.value)
                if volume.attachment.get("vm") == vm_id:
                    volume.attachment = {**volume.attachment, "state": AttachmentState.ATTACHED} if mine in vm.volumes else {}
                if volume_broken and failure is not None:
                    volume.state, volume.state_message = VolumeState.ERROR, failure.message
                compares.append(Compare(volume_key, volume_entry.mod_revision))
                puts.append(Put(volume_key, records.dump(volume)))
            if op_entry is not None:
                op = records.load(OperationRecord, op_entry.value)
                op.result, op.error = ({}, error_to_dict(failure)) if failure else ({"volume": volume_id}, {})
                compares.append(Compare(op_key, op_entry.mod_revision))
                puts.append(Put(op_key, records.dump(op)))
            ok, _ = await self._store.txn(compares, puts)
            if ok:
                LOG.info("virtualMachines/%s: volumes/%s %s", vm_id, volume_id, outcome)
                return

    async def release(self, vm: VmRecord) -> None:
        """The VM is going away: its volumes are free again (their data stays); operations in
        flight on them end (a detach is done, an attach failed)."""
        for entry in vm.volumes:
            failure = None if entry.get("state") == AttachmentState.DETACHING else FailedPrecondition(
                f"{vm.name} was deleted before volumes/{entry['volume']} was attached", reason="VM_DELETED"
            )  # fmt: skip
            await self._free(vm.id, entry, failure)

    async def _free(self, vm_id: str, entry: dict[str, str], failure: WnodesError | None) -> None:
        volume_key, op_key = self._keys.volume(entry["volume"]), self._keys.operation(entry.get("operation", ""))
        while True:
            volume_entry, op_entry = await self._store.get(volume_key), await self._store.get(op_key)
            compares, puts = [], []
            if volume_entry is not None:
                volume = records.load(VolumeRecord, volume_entry.value)
                if volume.attachment.get("vm") == vm_id:
                    volume.attachment = {}
                    compares.append(Compare(volume_key, volume_entry.mod_revision))
                    puts.append(Put(volume_key, records.dump(volume)))
            if op_entry is not None and entry.get("state") != AttachmentState.ATTACHED:
                op = records.load(OperationRecord, op_entry.value)
                if not op.result and not op.error:
                    op.result, op.error = ({}, error_to_dict(failure)) if failure else ({"volume": entry["volume"]}, {})
                    compares.append(Compare(op_key, op_entry.mod_revision))
                    puts.append(Put(op_key, records.dump(op)))
            if not puts:
                return
            ok, _ = await self._store.txn(compares, puts)
            if ok:
                return

    async def collect_garbage(self) -> None:
        """Frees the data of volumes that no longer exist."""
        if not self._dir.exists():
            return
        for path in self._dir.glob("vol-*.qcow2"):
            if await self._store.get(self._keys.volume(path.stem)) is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                LOG.info("freed the data of deleted volumes/%s", path.stem)

    async def _volume(self, volume_id: str) -> VolumeRecord | None:
        entry = await self._store.get(self._keys.volume(volume_id))
        return records.load(VolumeRecord, entry.value) if entry else None
