"""Where a command for a VM runs: the farm's checks before the gateway streams an exec to an agent.

A VM takes commands once it is placed, while its domain runs (not STOPPED or SUSPENDED), and
only through the agent of a hypervisor that is up. These checks used to live in the gateway;
they are the farm's rules, so every way in (gRPC, OCCI, the grid endpoint to come) gets them here.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import FailedPrecondition
from services.common.records import HypervisorRecord, VmRecord, VmState


@dataclass(frozen=True)
class ExecTarget:
    # The VM's id on its agent ("vm-...").
    vm_id: str
    # The hypervisor's bare name.
    hypervisor: str
    # host:port of that hypervisor's agent.
    agent_endpoint: str


def exec_target(vm: VmRecord, host: HypervisorRecord | None) -> ExecTarget:
    """The agent to send the VM's commands to; FailedPrecondition, saying why, if there is none.

    ``host`` is the record of the VM's hypervisor, None if it has none: an agent keeps its
    record under its lease, so a missing record is a host that is down."""
    if not vm.hypervisor:
        raise FailedPrecondition(f"{vm.name} is not placed on a hypervisor ({vm.state_message})", reason="VM_NOT_PLACED")
    if vm.state in (VmState.STOPPED, VmState.SUSPENDED):
        raise FailedPrecondition(f"{vm.name} is {vm.state}: start or resume it to run commands in it", reason="VM_NOT_RUNNING")
    if host is None:
        raise FailedPrecondition(f"hypervisors/{vm.hypervisor} is down", reason="HYPERVISOR_DOWN")
    return ExecTarget(vm_id=vm.id, hypervisor=vm.hypervisor, agent_endpoint=host.endpoint)
