"""The power-action table (services/nameserver/power.py)."""

from __future__ import annotations

import pytest

from services.common.errors import FailedPrecondition
from services.common.records import PowerState, VmRecord, VmState
from services.nameserver.power import PowerAction, PowerPlan, plan


def vm(state: VmState) -> VmRecord:
    return VmRecord(id="vm-1", image="images/tiny", image_version="images/tiny/versions/1", vcpu_count=1, memory_mib=256,
                    owner_user="alice", owner_vo="atlas", state=state)


@pytest.mark.parametrize(
    ("action", "state", "expected"),
    [
        (PowerAction.STOP, VmState.ACTIVE, PowerPlan(PowerState.STOPPED)),
        (PowerAction.STOP, VmState.SUSPENDED, PowerPlan(PowerState.STOPPED)),
        (PowerAction.STOP, VmState.STOPPED, PowerPlan(PowerState.STOPPED, noop=True)),
        (PowerAction.START, VmState.STOPPED, PowerPlan(PowerState.RUNNING)),
        (PowerAction.START, VmState.SUSPENDED, PowerPlan(PowerState.RUNNING)),
        (PowerAction.START, VmState.ACTIVE, PowerPlan(PowerState.RUNNING, noop=True)),
        (PowerAction.RESTART, VmState.ACTIVE, PowerPlan(PowerState.RUNNING)),
        (PowerAction.SUSPEND, VmState.ACTIVE, PowerPlan(PowerState.SUSPENDED)),
        (PowerAction.SUSPEND, VmState.SUSPENDED, PowerPlan(PowerState.SUSPENDED, noop=True)),
        (PowerAction.RESUME, VmState.SUSPENDED, PowerPlan(PowerState.RUNNING)),
        (PowerAction.RESUME, VmState.ACTIVE, PowerPlan(PowerState.RUNNING, noop=True)),
    ],
)
def test_allowed_transitions(action: PowerAction, state: VmState, expected: PowerPlan) -> None:
    assert plan(vm(state), action) == expected


@pytest.mark.parametrize(
    ("action", "state", "says"),
    [
        (PowerAction.RESTART, VmState.STOPPED, "start it instead"),
        (PowerAction.RESTART, VmState.SUSPENDED, "resume it first"),
        (PowerAction.SUSPEND, VmState.STOPPED, "nothing in memory"),
        (PowerAction.RESUME, VmState.STOPPED, "start it instead"),
    ],
)
def test_refused_transitions_say_what_to_do(action: PowerAction, state: VmState, says: str) -> None:
    with pytest.raises(FailedPrecondition) as info:
        plan(vm(state), action)
    assert says in info.value.message and info.value.reason == "INVALID_POWER_TRANSITION"


@pytest.mark.parametrize("state", [VmState.PENDING, VmState.SCHEDULED, VmState.STARTING, VmState.DELETING, VmState.FAILED, VmState.UNKNOWN])
@pytest.mark.parametrize("action", list(PowerAction))
def test_unsettled_states_refuse_every_action(action: PowerAction, state: VmState) -> None:
    with pytest.raises(FailedPrecondition) as info:
        plan(vm(state), action)
    assert f"it is {state}" in info.value.message
    assert info.value.metadata == {"state": state.value, "action": action.value}
