"""Which power actions a VM's state allows, and where each one leads. Pure: no I/O.

    action    from ACTIVE        from SUSPENDED     from STOPPED
    stop      -> STOPPED         -> STOPPED         already there
    start     already there      -> ACTIVE (resume) -> ACTIVE (boots the same disk)
    restart   -> ACTIVE (reboot) refused            refused
    suspend   -> SUSPENDED       already there      refused
    resume    already there      -> ACTIVE          refused

Any other state (PENDING, SCHEDULED, STARTING, DELETING, FAILED, UNKNOWN) refuses every action:
the VM is still being created, is going away, or its host does not answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from services.common.errors import FailedPrecondition
from services.common.records import PowerState, VmRecord, VmState

REASON = "INVALID_POWER_TRANSITION"


class PowerAction(enum.StrEnum):
    STOP = "stop"
    START = "start"
    RESTART = "restart"
    SUSPEND = "suspend"
    RESUME = "resume"


# Operation kinds of power actions (an OperationRecord's kind).
POWER_KINDS = frozenset(a.value for a in PowerAction)


@dataclass(frozen=True)
class PowerPlan:
    # The power state the agent is to converge to.
    target: PowerState
    # The VM is there already: nothing for the agent to do.
    noop: bool = False


_SETTLED = (VmState.ACTIVE, VmState.SUSPENDED, VmState.STOPPED)

# (action, state) -> plan; a missing pair is refused with the reason in _REFUSALS.
_PLANS: dict[tuple[PowerAction, VmState], PowerPlan] = {
    (PowerAction.STOP, VmState.ACTIVE): PowerPlan(PowerState.STOPPED),
    (PowerAction.STOP, VmState.SUSPENDED): PowerPlan(PowerState.STOPPED),
    (PowerAction.STOP, VmState.STOPPED): PowerPlan(PowerState.STOPPED, noop=True),
    (PowerAction.START, VmState.ACTIVE): PowerPlan(PowerState.RUNNING, noop=True),
    (PowerAction.START, VmState.SUSPENDED): PowerPlan(PowerState.RUNNING),
    (PowerAction.START, VmState.STOPPED): PowerPlan(PowerState.RUNNING),
    (PowerAction.RESTART, VmState.ACTIVE): PowerPlan(PowerState.RUNNING),
    (PowerAction.SUSPEND, VmState.ACTIVE): PowerPlan(PowerState.SUSPENDED),
    (PowerAction.SUSPEND, VmState.SUSPENDED): PowerPlan(PowerState.SUSPENDED, noop=True),
    (PowerAction.RESUME, VmState.ACTIVE): PowerPlan(PowerState.RUNNING, noop=True),
    (PowerAction.RESUME, VmState.SUSPENDED): PowerPlan(PowerState.RUNNING),
}

_REFUSALS: dict[tuple[PowerAction, VmState], str] = {
    (PowerAction.RESTART, VmState.SUSPENDED): "resume it first, then restart it",
    (PowerAction.RESTART, VmState.STOPPED): "start it instead",
    (PowerAction.SUSPEND, VmState.STOPPED): "a stopped VM has nothing in memory to suspend; start it first",
    (PowerAction.RESUME, VmState.STOPPED): "only a SUSPENDED VM can be resumed; start it instead",
}


def plan(vm: VmRecord, action: PowerAction) -> PowerPlan:
    """Where the action takes the VM; FailedPrecondition (saying why) if its state forbids it."""
    if vm.state not in _SETTLED:
        raise FailedPrecondition(
            f"cannot {action} {vm.name}: it is {vm.state} ({vm.state_message or 'no detail'}); "
            "power actions need an ACTIVE, SUSPENDED or STOPPED VM",
            reason=REASON,
            metadata={"state": vm.state.value, "action": action.value},
        )
    found = _PLANS.get((action, vm.state))
    if found is None:
        why = _REFUSALS.get((action, vm.state), "")
        raise FailedPrecondition(
            f"cannot {action} {vm.name}: it is {vm.state}" + (f"; {why}" if why else ""),
            reason=REASON,
            metadata={"state": vm.state.value, "action": action.value},
        )
    return found
