"""A hypervisor agent killed with SIGKILL while its VMs run: after its restart, libvirt and the
registry agree and nothing leaked."""

from __future__ import annotations

import subprocess
import time

import pytest

from clients.wnodes_client import Client
from deploy.stack.stack import Stack
from tests import stacks
from tests.e2e.test_run_in_vm import domains
from wnodes.v1 import virtual_machine_pb2

pytestmark = pytest.mark.e2e
ACTIVE = virtual_machine_pb2.VirtualMachine.State.ACTIVE


def exec_output(client: Client, name: str, command: str) -> tuple[str, int]:
    out, code = b"", -1
    for msg in client.exec(name, [command]):
        if msg.WhichOneof("payload") == "stdout":
            out += msg.stdout
        elif msg.WhichOneof("payload") == "exit_code":
            code = msg.exit_code
    return out.decode(), code


def test_agent_sigkill_then_restart_adopts_running_vms(vm_stack: Stack) -> None:
    state = vm_stack.state
    assert state is not None
    with Client(state.gateway, user="alice", vo="atlas") as client:
        ops = [client.create_vm("tiny", memory_mib=192) for _ in range(2)]
        vms = [op.result(timeout=180) for op in ops]
        assert all(v.state == ACTIVE for v in vms)
        # A file written before the crash proves the same guest survives it.
        assert exec_output(client, vms[0].name, "echo before > /tmp/mark; cat /tmp/mark") == ("before\n", 0)
        before = sorted(domains(vm_stack))
        assert len(before) == 2

        vm_stack.kill("hypervisor0")
        # Meanwhile: a domain nobody wants appears on the host (e.g. left by an older crash).
        orphan_dir = vm_stack.dir / "hypervisor" / "run" / "hv0" / "vm-0rphan0000"
        orphan_dir.mkdir(parents=True)
        (orphan_dir / "disk.qcow2").write_bytes(b"junk")
        time.sleep(0)  # no wait for the lease: the restart must cope either way
        vm_stack.restart("hypervisor0")

        deadline = time.monotonic() + 60
        while True:
            current = {v.name: v.state for v in client.list_vms()}
            if all(current.get(v.name) == ACTIVE for v in vms) and not orphan_dir.exists():
                break
            assert time.monotonic() < deadline, f"registry did not settle: {current}"
            time.sleep(0.5)
        assert sorted(domains(vm_stack)) == before, "libvirt and the registry disagree after the restart"
        assert exec_output(client, vms[0].name, "cat /tmp/mark") == ("before\n", 0)
        for v in vms:
            client.delete_vm(v.name).result(timeout=120)
    assert domains(vm_stack) == []
    assert stacks.etcd_prefix(state, "/vms/") == {}
    stacks.check_registry_invariants(state)
    leftover = subprocess.run(["pgrep", "-f", f"{vm_stack.domain_prefix}vm-"], capture_output=True, text=True)
    assert leftover.stdout == "", "a QEMU process outlived its VM"
