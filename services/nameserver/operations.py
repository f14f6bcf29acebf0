"""Long-running operations as the registry reports them.

An operation record names its kind, its VM and what else it acts on. Whether it is done is
derived from the records it acts on (a create is done when its VM is ACTIVE), or, for work whose
outcome no record shows (a save, a volume attachment), read from the result the agent wrote
into the operation itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.common.errors import WnodesError
from services.common.identity import Principal
from services.common.records import ImageRecord, OperationRecord, VmRecord, VolumeRecord


@dataclass
class OperationView:
    op: OperationRecord
    done: bool
    vm: VmRecord | None
    error: WnodesError | None = None
    # The image version a finished save made.
    image: ImageRecord | None = None
    # The volume a volume operation acts on (its metadata and response).
    volume: VolumeRecord | None = None


CREATE_OPERATION = "create-"
# Kinds of the operations on a VM's volumes (the agent writes their outcome into the record).
ATTACH, DETACH = "attach_volume", "detach_volume"
VOLUME_KINDS = frozenset({ATTACH, DETACH})


def create_operation(vm_id: str) -> OperationRecord:
    """A create's operation is named after its VM and stored nowhere: like every operation it
    is derived from the VM's record, and it has nothing else to hold (one write less per create)."""
    return OperationRecord(id=CREATE_OPERATION + vm_id, kind="create", vm_id=vm_id)


def new_operation(kind: str, vm_id: str, principal: Principal, *, generation: int = 0, target: str = "") -> OperationRecord:
    return OperationRecord(
        id=uuid.uuid4().hex, kind=kind, vm_id=vm_id, generation=generation, target=target,
        owner_user=principal.user, owner_vo=principal.vo,
    )  # fmt: skip
