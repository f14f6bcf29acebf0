"""Power actions on a real libvirt + QEMU VM: a file written before a stop is there after the
start; suspend pauses the domain in memory; restart boots the same disk again."""

from __future__ import annotations

import subprocess
import time

import pytest

from clients.wnodes_client import Client
from deploy.stack.stack import Stack
from wnodes.v1 import virtual_machine_pb2

pytestmark = pytest.mark.e2e
State = virtual_machine_pb2.VirtualMachine.State


def domain_state(stack: Stack, vm_name: str) -> str:
    """virsh's view of the VM's domain ("running", "paused", or "" when there is none)."""
    domain = stack.domain_prefix + vm_name.removeprefix("virtualMachines/")
    out = subprocess.run(["virsh", "-c", "qemu:///system", "domstate", domain], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def sh(client: Client, name: str, command: str) -> str:
    out, code = b"", -1
    for msg in client.exec(name, [command], ready_timeout=120):
        kind = msg.WhichOneof("payload")
        if kind == "stdout":
            out += msg.stdout
        elif kind == "exit_code":
            code = msg.exit_code
    assert code == 0, f"{command!r} exited {code}"
    return out.decode()


def test_power_actions_on_a_real_vm(vm_stack: Stack) -> None:
    state = vm_stack.state
    assert state is not None
    with Client(state.gateway, user="alice", vo="atlas") as client:
        vm = client.create_vm("tiny", memory_mib=128).result(timeout=180)
        try:
            sh(client, vm.name, "echo kept > /root/f")
            boot_id = sh(client, vm.name, "cat /proc/sys/kernel/random/boot_id")

            started = time.monotonic()
            assert client.stop_vm(vm.name).result(timeout=120).state == State.STOPPED
            stop_s = time.monotonic() - started
            assert domain_state(vm_stack, vm.name) == ""
            overlay = vm_stack.dir / "hypervisor" / "run" / "hv0" / vm.name.removeprefix("virtualMachines/") / "disk.qcow2"
            assert overlay.exists(), "a stopped VM keeps its disk"

            started = time.monotonic()
            assert client.start_vm(vm.name).result(timeout=180).state == State.ACTIVE
            start_s = time.monotonic() - started
            assert sh(client, vm.name, "cat /root/f") == "kept\n"
            assert sh(client, vm.name, "cat /proc/sys/kernel/random/boot_id") != boot_id

            assert client.suspend_vm(vm.name).result(timeout=60).state == State.SUSPENDED
            assert domain_state(vm_stack, vm.name) == "paused"
            assert client.resume_vm(vm.name).result(timeout=60).state == State.ACTIVE
            assert domain_state(vm_stack, vm.name) == "running"
            assert sh(client, vm.name, "cat /root/f") == "kept\n"

            before = sh(client, vm.name, "cat /proc/sys/kernel/random/boot_id")
            assert client.restart_vm(vm.name).result(timeout=180).state == State.ACTIVE
            assert sh(client, vm.name, "cat /proc/sys/kernel/random/boot_id") != before
            print(f"\nstop {stop_s:.2f}s, start (to ACTIVE) {start_s:.2f}s")
        finally:
            client.delete_vm(vm.name).result(timeout=120)
        assert domain_state(vm_stack, vm.name) == ""
