"""A burst of creates while a nameserver replica or an etcd member is killed with SIGKILL:
every accepted request ends ACTIVE or cleanly FAILED, none is lost or doubled, no host is
overbooked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from clients.wnodes_client import Client, WnodesRpcError
from deploy.stack.stack import Stack
from tests import stacks
from wnodes.v1 import virtual_machine_pb2

pytestmark = pytest.mark.integration
ACTIVE = virtual_machine_pb2.VirtualMachine.State.ACTIVE


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # 20 hosts x 4 vCPUs = 80 vCPUs for 50 requests of 2: some must be refused for capacity.
    s = stacks.start(tmp_path_factory.mktemp("faults"), "fake", 20, fake_vcpus=4, fake_memory_mib=8192)
    yield s
    s.down()


def burst(stack: Stack, kill: str, n: int = 50) -> dict[str, int]:
    state = stack.state
    assert state is not None
    accepted: list[tuple[str, object]] = []
    refused: list[WnodesRpcError] = []
    lock = threading.Lock()
    killed = threading.Event()

    client = Client(state.gateway, user="alice", vo="atlas")

    def one(i: int) -> None:
        try:
            op = client.create_vm("tiny", vcpu_count=2, memory_mib=512)
        except WnodesRpcError as err:
            with lock:
                refused.append(err)
            return
        with lock:
            accepted.append((op.name, op))
            if len(accepted) == 10 and not killed.is_set():
                killed.set()
                stack.kill(kill)

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(one, range(n)))
    assert killed.is_set(), "the kill never happened"
    outcomes = {"active": 0, "failed": 0}
    for _name, op in accepted:
        try:
            vm = op.result(timeout=120)  # type: ignore[attr-defined]
            assert vm.state == ACTIVE
            outcomes["active"] += 1
        except WnodesRpcError:
            outcomes["failed"] += 1
    unexpected = [e for e in refused if e.code.name != "RESOURCE_EXHAUSTED"]
    assert not unexpected, f"requests refused for other reasons than capacity: {unexpected}"
    assert len({name for name, _ in accepted}) == len(accepted), "two requests got the same operation"
    inv = stacks.check_registry_invariants(state)
    vms = stacks.etcd_prefix(state, "/vms/").values()
    assert inv.vms == len(accepted), f"{len(accepted)} accepted but {inv.vms} VMs in the registry"
    assert sum(v["state"] == "ACTIVE" for v in vms) == outcomes["active"]
    assert sum(v["vcpu_count"] for v in vms if v["state"] == "ACTIVE") <= 80
    client.close()
    return {"accepted": len(accepted), "refused": len(refused), **outcomes}


def test_burst_while_a_nameserver_replica_dies(stack: Stack) -> None:
    result = burst(stack, "nameserver1")
    assert result["accepted"] + result["refused"] == 50
    assert result["active"] >= 30  # 80 vCPUs hold 40 VMs of 2; the rest are refused cleanly


def test_burst_while_an_etcd_member_dies(stack: Stack) -> None:
    result = burst(stack, "etcd2")
    assert result["accepted"] + result["refused"] == 50
    assert result["active"] >= 30
    stack.restart("etcd2", wait=False)
    state = stack.state
    assert state is not None
    deadline = time.monotonic() + 30
    from deploy.stack import etcd_cluster

    while not etcd_cluster.healthy(state.etcd_endpoints):
        assert time.monotonic() < deadline, "etcd2 did not rejoin"
        time.sleep(0.2)


def test_duties_move_to_another_replica_when_the_leader_dies(stack: Stack) -> None:
    state = stack.state
    assert state is not None
    with Client(state.gateway, user="ops", vo="wnodes", roles=["admin"]) as admin:
        leaders = [n.name for n in admin.list_nameservers() if "reconciler" in n.duties]
        assert len(leaders) == 1
        leader = leaders[0].removeprefix("nameservers/ns")
        stack.kill(f"nameserver{leader}")
        deadline = time.monotonic() + 15
        while True:
            now = [n.name for n in admin.list_nameservers() if "reconciler" in n.duties]
            if now and now != leaders:
                break
            assert time.monotonic() < deadline, f"no replica took the reconciler over: {now}"
            time.sleep(0.2)
        assert len(now) == 1


def test_vms_of_a_dead_hypervisor_become_unknown(stack: Stack) -> None:
    state = stack.state
    assert state is not None
    with Client(state.gateway, user="alice", vo="atlas") as client:
        vm = client.create_vm("tiny").result(timeout=60)
        stack.kill("hypervisor0")  # all 20 simulated hosts die with their process
        deadline = time.monotonic() + 20
        while client.get_vm(vm.name).state != virtual_machine_pb2.VirtualMachine.State.UNKNOWN:
            assert time.monotonic() < deadline, "the VM never became UNKNOWN"
            time.sleep(0.2)
        assert "stopped reporting" in client.get_vm(vm.name).state_message
        # The fake driver's domains died with the process: the restarted agent reports the VM
        # FAILED (its domain is gone) rather than pretending it runs, and frees its resources.
        stack.restart("hypervisor0")
        deadline = time.monotonic() + 30
        while client.get_vm(vm.name).state != virtual_machine_pb2.VirtualMachine.State.FAILED:
            assert time.monotonic() < deadline, client.get_vm(vm.name)
            time.sleep(0.2)
        client.delete_vm(vm.name).result(timeout=60)
    stacks.check_registry_invariants(state)
