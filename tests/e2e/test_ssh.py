"""Interactive VMs: a debian12 VM created with a freshly made ed25519 key is reachable over SSH
on 127.0.0.1 as root and as wnodes; a file written over SSH survives stop and start; delete
leaves no domain, no overlay and no bound port."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from clients.wnodes_client import Client
from deploy.stack.stack import Stack
from services.hypervisor.ssh_access import port_is_free, port_of
from tests import stacks
from tests.e2e.test_power import domain_state
from wnodes.v1 import virtual_machine_pb2

pytestmark = pytest.mark.e2e
State = virtual_machine_pb2.VirtualMachine.State


def ssh(key: Path, endpoint: str, command: str, user: str = "root") -> subprocess.CompletedProcess[str]:
    host, port = endpoint.rsplit(":", 1)
    return subprocess.run(
        ["ssh", "-i", str(key), "-p", port, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", f"{user}@{host}", command],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "wnodes-e2e", "-f", str(path)], check=True)
    return path


def test_ssh_into_a_debian12_vm_across_stop_and_start(vm_stack: Stack, key: Path) -> None:
    state = vm_stack.state
    assert state is not None
    public_key = key.with_suffix(".pub").read_text().strip()
    with Client(state.gateway, user="alice", vo="atlas") as client:
        started = time.monotonic()
        user_data = b"#!/bin/sh\necho run >> /root/user-data-runs\n"
        vm = client.create_vm("debian12", memory_mib=512, ssh_public_keys=[public_key], user_data=user_data).result(timeout=300)
        ssh_ready_s = time.monotonic() - started
        vm_dir = vm_stack.dir / "hypervisor" / "run" / "hv0" / vm.name.removeprefix("virtualMachines/")
        try:
            # Prepare / Execute
            assert vm.state == State.ACTIVE and vm.ssh_endpoint.startswith("127.0.0.1:"), vm
            assert client.get_vm(vm.name).ssh_endpoint == vm.ssh_endpoint
            first = ssh(key, vm.ssh_endpoint, "cat /etc/os-release; echo hi > /root/f")

            # Assert
            assert first.returncode == 0, first.stderr
            assert "ID=debian" in first.stdout
            as_user = ssh(key, vm.ssh_endpoint, "id -u; echo $HOME", user="wnodes")
            assert as_user.returncode == 0 and as_user.stdout.split() == ["1000", "/home/wnodes"], as_user
            host_keys = ssh(key, vm.ssh_endpoint, "ls /etc/ssh/ | grep ^ssh_host_")
            assert host_keys.stdout.split() == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]

            started = time.monotonic()
            assert client.stop_vm(vm.name).result(timeout=120).state == State.STOPPED
            stop_s = time.monotonic() - started
            assert domain_state(vm_stack, vm.name) == ""
            assert ssh(key, vm.ssh_endpoint, "true").returncode != 0

            started = time.monotonic()
            again = client.start_vm(vm.name).result(timeout=300)
            start_s = time.monotonic() - started
            assert again.state == State.ACTIVE and again.ssh_endpoint == vm.ssh_endpoint
            kept = ssh(key, vm.ssh_endpoint, "cat /root/f")
            assert (kept.returncode, kept.stdout) == (0, "hi\n"), kept.stderr
            runs = ssh(key, vm.ssh_endpoint, "cat /root/user-data-runs; cat /run/wnodes/user-data")
            assert runs.stdout == "run\n" + user_data.decode(), "user data runs once, on the first boot only"
            print(f"\ndebian12: create to SSH-ready {ssh_ready_s:.1f}s, stop {stop_s:.1f}s, start to SSH-ready {start_s:.1f}s")
        finally:
            client.delete_vm(vm.name).result(timeout=120)

    assert domain_state(vm_stack, vm.name) == ""
    assert not vm_dir.exists(), "the overlay leaked"
    assert port_is_free(port_of(vm.ssh_endpoint)), "the SSH port is still bound"
    assert not [k for k in stacks.etcd_prefix(state, "/vms/") if vm.name.rsplit("/", 1)[-1] in k]


def test_tiny_has_no_ssh_server_and_says_so(vm_stack: Stack, key: Path) -> None:
    state = vm_stack.state
    assert state is not None
    with Client(state.gateway, user="alice", vo="atlas") as client:
        op = client.create_vm("tiny", memory_mib=128, ssh_public_keys=[key.with_suffix(".pub").read_text()])
        with pytest.raises(Exception) as info:
            op.result(timeout=180)
        assert "no SSH server" in str(info.value)
        name = op.metadata.name  # type: ignore[union-attr]
        client.delete_vm(name).result(timeout=120)
