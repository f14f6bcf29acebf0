"""The control plane on a real 3-member etcd cluster with 3 nameserver replicas and 20 simulated
hosts (fake driver): the CLI's answers, errors, idempotency and placement."""

from __future__ import annotations

import subprocess
import uuid

import grpc
import pytest

from clients.wnodes_client import Client, WnodesRpcError
from deploy.stack.stack import Stack
from tests import stacks
from tests.integration.conftest import venv_bin, wnodes_env
from wnodes.v1 import virtual_machine_pb2

pytestmark = pytest.mark.integration
ACTIVE = virtual_machine_pb2.VirtualMachine.State.ACTIVE


def wnodes(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([venv_bin("wnodes"), *args], capture_output=True, text=True, env=wnodes_env(stack), timeout=120)


def test_run_streams_output_and_exit_code(fake_stack: Stack) -> None:
    result = wnodes(fake_stack, "run", "--image", "tiny", "--", "echo hello; exit 3")
    assert result.stdout == "hello\n"
    assert result.returncode == 3
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "reason"),
    [
        (["--image", "no-such-image"], "NOT_FOUND", "IMAGE_NOT_FOUND"),
        (["--image", "tiny", "--cpus", "0"], "INVALID_ARGUMENT", "INVALID_VCPU_COUNT"),
        (["--image", "tiny", "--memory", "99999999999"], "INVALID_ARGUMENT", "INVALID_MEMORY"),
        (["--image", "Bad Name!"], "INVALID_ARGUMENT", "INVALID_IMAGE_NAME"),
        (["--image", "tiny", "--cpus", "64"], "RESOURCE_EXHAUSTED", "NO_HYPERVISOR_CAPACITY"),
    ],
)
def test_bad_input_gets_a_clear_error(fake_stack: Stack, args: list[str], code: str, reason: str) -> None:
    result = wnodes(fake_stack, "run", *args, "--", "true")
    assert result.returncode != 0
    assert f"({code}, {reason})" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_capacity_names_the_reason(client: Client) -> None:
    with pytest.raises(WnodesRpcError) as info:
        client.create_vm("tiny", vcpu_count=2, memory_mib=1024 * 1024)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1048576 MiB of free memory" in info.value.message


def test_retried_create_never_makes_two_vms(client: Client, fake_stack: Stack) -> None:
    request_id = uuid.uuid4().hex
    first = client.create_vm("tiny", request_id=request_id)
    second = client.create_vm("tiny", request_id=request_id)
    assert first.name == second.name
    vm = first.result(timeout=60)
    assert vm.state == ACTIVE
    state = fake_stack.state
    assert state is not None
    same = [v for v in stacks.etcd_prefix(state, "/vms/").values() if v["request_id"] == request_id]
    assert len(same) == 1
    client.delete_vm(vm.name).result(timeout=60)


def test_vm_lifecycle_and_ownership(client: Client, fake_stack: Stack) -> None:
    vm = client.create_vm("tiny", vcpu_count=2, memory_mib=512, labels={"purpose": "test"}).result(timeout=60)
    assert vm.state == ACTIVE and vm.hypervisor.startswith("hypervisors/sim-")
    assert vm.owner.user == "alice" and vm.owner.vo == "atlas"
    assert vm.mac_address.startswith("52:54:00:") and vm.hostname
    assert [v.name for v in client.list_vms()] == [vm.name]
    state = fake_stack.state
    assert state is not None
    with Client(state.gateway, user="bob", vo="cms") as bob:
        assert list(bob.list_vms()) == []
        with pytest.raises(WnodesRpcError) as info:
            bob.get_vm(vm.name)
        assert info.value.code == grpc.StatusCode.NOT_FOUND
    client.delete_vm(vm.name).result(timeout=60)
    with pytest.raises(WnodesRpcError) as gone:
        client.get_vm(vm.name)
    assert gone.value.reason == "VIRTUAL_MACHINE_NOT_FOUND"
    stacks.check_registry_invariants(state)
    assert not [k for k in stacks.etcd_prefix(state, "/leases/")], "leases leaked"


def test_list_pages(client: Client) -> None:
    ops = [client.create_vm("tiny") for _ in range(5)]
    names = {op.result(timeout=60).name for op in ops}
    assert {v.name for v in client.list_vms(page_size=2)} == names
    for name in names:
        client.delete_vm(name).result(timeout=60)


def test_admin_cli_json(fake_stack: Stack) -> None:
    import json

    result = subprocess.run(
        [venv_bin("wnodes-admin"), "--stack-dir", str(fake_stack.dir), "--output", "json", "hypervisors", "list"],
        capture_output=True, text=True, timeout=60,
    )
    hosts = json.loads(result.stdout)
    assert len(hosts) == 20 and all(h["state"] == "UP" for h in hosts)
    status = subprocess.run(
        [venv_bin("wnodes-admin"), "--stack-dir", str(fake_stack.dir), "--output", "json", "stack", "status"],
        capture_output=True, text=True, timeout=60,
    )
    procs = json.loads(status.stdout)
    assert {p["kind"] for p in procs} == {"etcd", "nameserver", "imagestore", "hypervisor", "gateway"}
    assert all(p["alive"] and p["pid"] > 0 for p in procs)
    ns = subprocess.run(
        [venv_bin("wnodes-admin"), "--stack-dir", str(fake_stack.dir), "--output", "json", "nameservers", "list"],
        capture_output=True, text=True, timeout=60,
    )
    replicas = json.loads(ns.stdout)
    assert len(replicas) == 3
    assert sum("reconciler" in r.get("duties", []) for r in replicas) == 1
