"""Power actions through the public API on the fake-driver stack: stop, start, restart, suspend,
resume; refused transitions; ownership; the CLI."""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest

from clients.wnodes_client import Client, WnodesRpcError
from deploy.stack.stack import Stack
from tests import stacks
from tests.integration.conftest import venv_bin, wnodes_env
from wnodes.v1 import virtual_machine_pb2

pytestmark = pytest.mark.integration
State = virtual_machine_pb2.VirtualMachine.State


def exec_output(client: Client, name: str, command: str) -> tuple[str, int]:
    out, code = b"", -1
    for msg in client.exec(name, [command]):
        if msg.WhichOneof("payload") == "stdout":
            out += msg.stdout
        elif msg.WhichOneof("payload") == "exit_code":
            code = msg.exit_code
    return out.decode(), code


def test_stop_start_restart_suspend_resume(client: Client, fake_stack: Stack) -> None:
    # Prepare
    vm = client.create_vm("tiny", vcpu_count=2, memory_mib=512).result(timeout=60)
    state = fake_stack.state
    assert state is not None
    host = client.get_hypervisor(vm.hypervisor)

    # Execute / Assert: stop keeps the VM's place and resources
    stopped = client.stop_vm(vm.name).result(timeout=60)
    assert stopped.state == State.STOPPED and stopped.hypervisor == vm.hypervisor
    assert client.get_vm(vm.name).state == State.STOPPED
    assert client.get_hypervisor(vm.hypervisor).vcpus_used == host.vcpus_used
    again = client.stop_vm(vm.name)
    assert again.done and again.result().state == State.STOPPED  # already there: done at once

    started = client.start_vm(vm.name).result(timeout=60)
    assert started.state == State.ACTIVE
    assert exec_output(client, vm.name, "echo back") == ("back\n", 0)

    restarted = client.restart_vm(vm.name).result(timeout=60)
    assert restarted.state == State.ACTIVE and restarted.boot_seconds >= 0

    suspended = client.suspend_vm(vm.name).result(timeout=60)
    assert suspended.state == State.SUSPENDED
    with pytest.raises(WnodesRpcError) as paused:
        exec_output(client, vm.name, "echo no")
    assert paused.value.code == grpc.StatusCode.FAILED_PRECONDITION and paused.value.reason == "VM_NOT_RUNNING"

    resumed = client.resume_vm(vm.name).result(timeout=60)
    assert resumed.state == State.ACTIVE
    assert exec_output(client, vm.name, "echo resumed") == ("resumed\n", 0)

    # A stopped VM is deleted like any other, leaving nothing behind.
    client.stop_vm(vm.name).result(timeout=60)
    client.delete_vm(vm.name).result(timeout=60)
    stacks.check_registry_invariants(state)
    assert not stacks.etcd_prefix(state, "/leases/")


@pytest.mark.parametrize(
    ("prepare", "action", "says"),
    [
        ("stop_vm", "suspend_vm", "nothing in memory to suspend"),
        ("stop_vm", "restart_vm", "start it instead"),
        ("stop_vm", "resume_vm", "start it instead"),
        ("suspend_vm", "restart_vm", "resume it first"),
    ],
)
def test_refused_transitions(client: Client, prepare: str, action: str, says: str) -> None:
    vm = client.create_vm("tiny").result(timeout=60)
    getattr(client, prepare)(vm.name).result(timeout=60)
    with pytest.raises(WnodesRpcError) as info:
        getattr(client, action)(vm.name)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.reason == "INVALID_POWER_TRANSITION" and says in info.value.message
    client.delete_vm(vm.name).result(timeout=60)


def test_others_vms_are_not_found_and_bad_names_are_invalid(client: Client, fake_stack: Stack) -> None:
    vm = client.create_vm("tiny").result(timeout=60)
    state = fake_stack.state
    assert state is not None
    with Client(state.gateway, user="bob", vo="cms") as bob:
        for action in ("stop_vm", "start_vm", "restart_vm", "suspend_vm", "resume_vm"):
            with pytest.raises(WnodesRpcError) as info:
                getattr(bob, action)(vm.name)
            assert info.value.code == grpc.StatusCode.NOT_FOUND, action
    with pytest.raises(WnodesRpcError) as bad:
        client.stop_vm("virtualMachines/Not Valid")
    assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert client.get_vm(vm.name).state == State.ACTIVE
    client.delete_vm(vm.name).result(timeout=60)


def test_cli_power_actions(client: Client, fake_stack: Stack) -> None:
    vm = client.create_vm("tiny").result(timeout=60)

    def wnodes(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([venv_bin("wnodes"), *args], capture_output=True, text=True, env=wnodes_env(fake_stack), timeout=120)

    for action, expected in (("stop", "STOPPED"), ("start", "ACTIVE"), ("suspend", "SUSPENDED"), ("resume", "ACTIVE"), ("restart", "ACTIVE")):
        result = wnodes("vm", action, vm.name, "--output", "json")
        assert result.returncode == 0, result.stderr
        [row] = json.loads(result.stdout)
        assert (row["name"], row["state"]) == (vm.name, expected)
    refused = wnodes("vm", "resume", vm.name.removeprefix("virtualMachines/"))  # a bare id works too
    assert refused.returncode == 0
    wnodes("vm", "stop", vm.name)
    refused = wnodes("vm", "suspend", vm.name)
    assert refused.returncode == 2 and "(FAILED_PRECONDITION, INVALID_POWER_TRANSITION)" in refused.stderr
    assert "Traceback" not in refused.stderr
    client.delete_vm(vm.name).result(timeout=60)
