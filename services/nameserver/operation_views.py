"""How far an operation has got, derived from the records it acts on.

No operation is ever marked done by the nameserver: a create is done when its VM is ACTIVE (or
FAILED), a delete when the VM record is gone, a power action when the agent applied its
generation; a save, an attach or a detach when the agent wrote the outcome into the operation
record. This module reads those records and says which, for every kind, in one place.
"""

from __future__ import annotations

import asyncio
import time

from services.common import records
from services.common.errors import FailedPrecondition, NotFound, VirtualMachineNotFound, VolumeNotFound, error_from_dict
from services.common.identity import Principal
from services.common.keys import Keys
from services.common.names import parse_image, parse_resource_id
from services.common.records import ImageRecord, OperationRecord, VmRecord, VmState, VolumeRecord
from services.common.store import Store
from services.nameserver.access import may_see
from services.nameserver.operations import CREATE_OPERATION, DETACH, VOLUME_KINDS, OperationView, create_operation
from services.nameserver.power import POWER_KINDS

# The longest a WaitOperation waits, and how long when the caller does not say.
MAX_WAIT_SECONDS, DEFAULT_WAIT_SECONDS = 300.0, 30.0


class OperationViews:
    """Operations by name, as views of the records they act on."""

    def __init__(self, store: Store, keys: Keys) -> None:
        self._store = store
        self._keys = keys

    async def load(self, op_id: str) -> OperationRecord | None:
        """The operation's record (a create's is derived from its id: it is stored nowhere)."""
        if op_id.startswith(CREATE_OPERATION):
            return create_operation(op_id.removeprefix(CREATE_OPERATION))
        entry = await self._store.get(self._keys.operation(op_id)) if op_id else None
        return records.load(OperationRecord, entry.value) if entry else None

    async def get(self, op_name: str, principal: Principal) -> OperationView:
        """NotFound for an operation that does not exist or is not the caller's."""
        op_id = parse_resource_id(op_name, "operations") if "/" in op_name else op_name
        op = await self.load(op_id)
        if op is None:
            raise NotFound(f"operations/{op_id} does not exist")
        vm_entry = await self._store.get(self._keys.vm(op.vm_id))
        vm = records.load(VmRecord, vm_entry.value) if vm_entry else None
        owner_hidden = op.owner_user and not may_see(op.owner_user, op.owner_vo, principal)
        if owner_hidden or vm is not None and not may_see(vm.owner_user, vm.owner_vo, principal):
            raise NotFound(f"operations/{op_id} does not exist")
        return await self.view(op, vm)

    async def view(self, op: OperationRecord, vm: VmRecord | None) -> OperationView:
        """The operation as the records say it is now (vm: its VM's record, None if gone)."""
        if op.kind == "delete":
            return OperationView(op, done=vm is None, vm=vm)
        if op.kind in POWER_KINDS:
            return power_view(op, vm)
        if op.kind == "save":
            return await self._save_view(op, vm)
        if op.kind in VOLUME_KINDS:
            return await self._volume_view(op, vm)
        return create_view(op, vm)

    async def wait(self, op_name: str, principal: Principal, timeout: float) -> OperationView:
        """Returns when the operation is done or the timeout (capped) passes."""
        deadline = time.monotonic() + max(0.0, min(timeout or DEFAULT_WAIT_SECONDS, MAX_WAIT_SECONDS))
        while True:
            view = await self.get(op_name, principal)
            left = deadline - time.monotonic()
            if view.done or left <= 0:
                return view
            await self._wait_vm_change(view.op.vm_id, view.vm, min(left, 2.0))

    async def _wait_vm_change(self, vm_id: str, seen: VmRecord | None, timeout: float) -> None:
        entry = await self._store.get(self._keys.vm(vm_id))
        revision = entry.mod_revision if entry else 0
        if seen is not None and (entry is None or records.load(VmRecord, entry.value).state != seen.state):
            return
        try:
            async with asyncio.timeout(timeout):
                async for _ev in self._store.watch_key(self._keys.vm(vm_id), start_revision=revision + 1):
                    return
        except TimeoutError:
            return

    async def _save_view(self, op: OperationRecord, vm: VmRecord | None) -> OperationView:
        """A save is done once its agent wrote the outcome into the operation."""
        if op.error:
            return OperationView(op, True, vm, error_from_dict(op.error, "the save failed"))
        if op.result:
            image, version = parse_image(str(op.result.get("image_version", "")))
            entry = await self._store.get(self._keys.image_version(image, version or 0))
            if entry is None:
                return OperationView(op, True, vm, NotFound(f"{op.result.get('image_version')} no longer exists"))
            return OperationView(op, True, vm, image=records.load(ImageRecord, entry.value))
        if vm is None:
            return OperationView(op, True, None, VirtualMachineNotFound(f"virtualMachines/{op.vm_id} was deleted before the save finished"))
        if vm.state == VmState.FAILED:
            return OperationView(op, True, vm, error_from_dict(vm.error or {}, vm.state_message))
        return OperationView(op, False, vm)

    async def _volume_view(self, op: OperationRecord, vm: VmRecord | None) -> OperationView:
        """An attach or a detach is done once the agent wrote the outcome into the operation."""
        entry = await self._store.get(self._keys.volume(op.target))
        volume = records.load(VolumeRecord, entry.value) if entry else None
        if op.error:
            return OperationView(op, True, vm, error_from_dict(op.error, f"{op.kind} failed"), volume=volume)
        if op.result:
            return OperationView(op, True, vm, volume=volume)
        if volume is None:
            return OperationView(op, True, vm, VolumeNotFound(f"volumes/{op.target} was deleted"))
        if vm is None:
            # The VM went away: whatever was attached to it is released with it.
            return OperationView(op, True, None, None if op.kind == DETACH else FailedPrecondition(
                f"virtualMachines/{op.vm_id} was deleted before {volume.name} was attached", reason="VM_DELETED"
            ), volume=volume)  # fmt: skip
        if vm.state == VmState.FAILED:
            return OperationView(op, True, vm, error_from_dict(vm.error or {}, vm.state_message), volume=volume)
        return OperationView(op, False, vm, volume=volume)


def create_view(op: OperationRecord, vm: VmRecord | None) -> OperationView:
    """A create is done once its VM is ACTIVE, or FAILED."""
    if vm is None:
        return OperationView(op, True, None, VirtualMachineNotFound(f"virtualMachines/{op.vm_id} was deleted before it became active"))
    if vm.state == VmState.ACTIVE:
        return OperationView(op, True, vm)
    if vm.state == VmState.FAILED:
        return OperationView(op, True, vm, error_from_dict(vm.error or {}, vm.state_message))
    return OperationView(op, False, vm)


def power_view(op: OperationRecord, vm: VmRecord | None) -> OperationView:
    """A power action is done once the agent applied its generation (or gave up on it)."""
    if vm is None:
        return OperationView(op, True, None, VirtualMachineNotFound(f"virtualMachines/{op.vm_id} was deleted before the {op.kind} finished"))
    if vm.state == VmState.FAILED:
        return OperationView(op, True, vm, error_from_dict(vm.error or {}, vm.state_message))
    if vm.power_applied < op.generation:
        return OperationView(op, False, vm)
    if vm.power_error and vm.power_error.get("generation") == op.generation:
        return OperationView(op, True, vm, error_from_dict(vm.power_error, f"the {op.kind} failed"))
    return OperationView(op, True, vm)
