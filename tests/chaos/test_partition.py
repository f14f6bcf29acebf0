"""A hypervisor cut off from the control plane: its agent runs in a network namespace of its own,
joined to the host's loopback by a bridge (tests/chaos/bridge.py) that the test stops (the cut)
and resumes. Its lease expires, its VMs become UNKNOWN, nothing is placed on it or twice; when
the link returns it reconciles without a duplicate VM and without killing a VM that should live."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.wnodes_client import Client
from deploy.stack import processes
from deploy.stack.stack import Stack
from tests import stacks
from wnodes.v1 import hypervisor_pb2, virtual_machine_pb2

pytestmark = pytest.mark.integration
ACTIVE = virtual_machine_pb2.VirtualMachine.State.ACTIVE
UNKNOWN = virtual_machine_pb2.VirtualMachine.State.UNKNOWN
UP = hypervisor_pb2.Hypervisor.State.UP
REPO = Path(__file__).resolve().parents[2]


def wait_for(what: str, check, timeout: float = 45.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.3)


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def cut_off(tmp_path: Path) -> Iterator[tuple[Stack, str, list[subprocess.Popen[bytes]], Path]]:
    """A fake-driver stack (3 simulated hosts) plus a fourth host, "part", behind the bridge."""
    stack = stacks.start(tmp_path, "fake", 3, fake_vcpus=4, fake_memory_mib=4096)
    state = stack.state
    assert state is not None
    netns = f"wnodes-part-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
        sockets = tmp_path / "bridge"
        sockets.mkdir()
        ports = [endpoint.rsplit(":", 1)[1] for endpoint in state.etcd_endpoints]
        py = [sys.executable, "-m", "tests.chaos.bridge"]
        procs.append(spawn([*py, "host", str(sockets), *ports], tmp_path / "bridge-host.log"))
        wait_for("the host half of the bridge listens", lambda: all((sockets / f"{p}.sock").exists() for p in ports), 15)
        procs.append(spawn(["ip", "netns", "exec", netns, *py, "guest", str(sockets), *ports], tmp_path / "bridge-guest.log"))
        agent = state.proc("hypervisor0").argv
        argv = [a for a in agent]
        argv[argv.index("--host") + 1] = "part"
        argv[argv.index("--simulate") + 1] = "1"
        argv[argv.index("--state-dir") + 1] = str(tmp_path / "part-state")
        argv[argv.index("--listen") + 1] = f"127.0.0.1:{processes.free_port()}"
        procs.append(spawn(["ip", "netns", "exec", netns, *argv, "--lease-ttl", "3"], tmp_path / "agent-part.log"))
        yield stack, netns, procs, tmp_path
    finally:
        for proc in reversed(procs):
            with_signal(proc, signal.SIGCONT)
            proc.kill()
            proc.wait(10)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        stack.down()


def with_signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)


def test_a_cut_off_hypervisor_reconciles_without_duplicates_or_losses(
    cut_off: tuple[Stack, str, list[subprocess.Popen[bytes]], Path],
) -> None:
    stack, _netns, procs, tmp = cut_off
    bridges = procs[:2]
    state = stack.state
    assert state is not None
    with Client(state.gateway, user="alice", vo="atlas") as client:
        wait_for("host 'part' is up behind the bridge", lambda: any(h.name == "hypervisors/part" and h.state == UP for h in client.list_hypervisors()))
        pinned = [client.create_vm("tiny", 1, 128, pinned_hypervisor="hypervisors/part") for _ in range(3)]
        before = {vm.name for vm in (op.result(timeout=60) for op in pinned)}
        assert all(client.get_vm(n).hypervisor == "hypervisors/part" for n in before)

        for bridge in bridges:  # the cut
            with_signal(bridge, signal.SIGSTOP)
        wait_for("host 'part' is down", lambda: client.get_hypervisor("part").state != UP)
        wait_for("its VMs are UNKNOWN", lambda: all(client.get_vm(n).state == UNKNOWN for n in before))
        elsewhere = [client.create_vm("tiny", 1, 128).result(timeout=60) for _ in range(4)]
        assert all(vm.hypervisor != "hypervisors/part" for vm in elsewhere), "a VM was placed on a host nobody hears"
        stacks.check_registry_invariants(state)

        for bridge in bridges:  # the link returns
            with_signal(bridge, signal.SIGCONT)
        wait_for("host 'part' is up again", lambda: client.get_hypervisor("part").state == UP)
        wait_for("its VMs are ACTIVE again", lambda: all(client.get_vm(n).state == ACTIVE for n in before))

        vms = {vm.name: vm for vm in client.list_vms()}
        on_part = {n for n, vm in vms.items() if vm.hypervisor == "hypervisors/part"}
        assert on_part == before, f"the cut-off host came back with {on_part}, not {before}"
        stacks.check_registry_invariants(state)
        log = (tmp / "agent-part.log").read_text()
        assert "destroying" not in log, "the agent destroyed a VM that should live:\n" + log[-3000:]
        for name in vms:
            client.delete_vm(name).result(timeout=60)
    assert stacks.etcd_prefix(state, "/vms/") == {}
    assert stacks.etcd_prefix(state, "/leases/") == {}
