"""`wnodes run` against real libvirt + QEMU guests."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from deploy.stack.stack import Stack
from tests import stacks
from tests.e2e.conftest import env_for, wnodes_bin

pytestmark = pytest.mark.e2e


def run(stack: Stack, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([wnodes_bin(), "run", *args], capture_output=True, text=True, env=env_for(stack), timeout=timeout)


def domains(stack: Stack) -> list[str]:
    """The libvirt domains of this stack's VMs."""
    out = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True, text=True, check=True)
    return [d for d in out.stdout.split() if d.startswith(stack.domain_prefix)]


def test_prints_the_guest_kernel_not_the_hosts(vm_stack: Stack) -> None:
    result = run(vm_stack, "--image", "tiny", "--", "uname", "-r")
    assert result.returncode == 0, result.stderr
    guest = result.stdout.strip()
    assert guest.startswith("6.1.") and guest.endswith("-amd64")
    assert guest != os.uname().release


def test_exit_status_comes_out(vm_stack: Stack) -> None:
    result = run(vm_stack, "--image", "tiny", "--", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_five_concurrent_runs_then_no_domain_left(vm_stack: Stack) -> None:
    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(lambda i: run(vm_stack, "--image", "tiny", "--", f"echo run-{i}; hostname"), range(5)))
    for i, r in enumerate(results):
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"run-{i}\nvwn-")
    assert len({r.stdout.splitlines()[1] for r in results}) == 5, "two runs shared a VM"
    assert domains(vm_stack) == []
    state = vm_stack.state
    assert state is not None
    assert stacks.etcd_prefix(state, "/vms/") == {}
    run_dir = vm_stack.dir / "hypervisor" / "run" / "hv0"
    assert [p.name for p in run_dir.iterdir()] == [], "overlays or sockets leaked"


def test_debian12_worker_node(vm_stack: Stack) -> None:
    result = run(vm_stack, "--image", "debian12", "--memory", "512", "--", "grep ^ID= /etc/os-release; uname -r")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "ID=debian"
