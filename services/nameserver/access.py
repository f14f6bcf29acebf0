"""Who may see what: a user sees their own resources (an admin sees all); everyone else gets
the answer a missing resource gets, so nothing about another user's resources leaks."""

from __future__ import annotations

from services.common import records
from services.common.errors import VirtualMachineNotFound
from services.common.identity import Principal
from services.common.keys import Keys
from services.common.records import VmRecord
from services.common.store import Entry, Store


def may_see(owner_user: str, owner_vo: str, principal: Principal) -> bool:
    return principal.is_admin or (owner_user, owner_vo) == (principal.user, principal.vo)


async def load_vm(store: Store, keys: Keys, vm_id: str, principal: Principal) -> tuple[Entry, VmRecord]:
    """The VM and its entry (its revision is the etag); VirtualMachineNotFound if it is missing
    or not the caller's."""
    entry = await store.get(keys.vm(vm_id))
    if entry is None:
        raise VirtualMachineNotFound(f"virtualMachines/{vm_id} does not exist")
    vm = records.load(VmRecord, entry.value)
    vm.revision = entry.mod_revision
    if not may_see(vm.owner_user, vm.owner_vo, principal):
        raise VirtualMachineNotFound(f"virtualMachines/{vm_id} does not exist")
    return entry, vm
