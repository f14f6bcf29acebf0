"""Saving a running VM on real libvirt + QEMU: the file written before the save is in a VM
booted from the new version, and the saved VM goes on."""

from __future__ import annotations

import time

import pytest

from clients.wnodes_client import Client
from deploy.stack.stack import Stack
from tests.e2e.test_power import domain_state, sh
from wnodes.v1 import virtual_machine_pb2

pytestmark = pytest.mark.e2e
State = virtual_machine_pb2.VirtualMachine.State


def test_saved_disk_boots_with_the_file_in_it(vm_stack: Stack) -> None:
    state = vm_stack.state
    assert state is not None
    with Client(state.gateway, user="alice", vo="atlas") as client:
        vm = client.create_vm("tiny", memory_mib=128).result(timeout=180)
        copy = None
        try:
            # Prepare: written just before the save, so only the guest's sync puts it on disk
            sh(client, vm.name, "echo saved-content > /root/f")

            # Execute
            started = time.monotonic()
            version = client.save_vm(vm.name, "e2e-saved").result(timeout=300)
            save_s = time.monotonic() - started

            # Assert: the VM goes on
            assert client.get_vm(vm.name).state == State.ACTIVE and domain_state(vm_stack, vm.name) == "running"
            assert sh(client, vm.name, "echo still > /root/g; cat /root/f") == "saved-content\n"
            assert version.owner_vo == "atlas" and version.direct_boot.kernel.sha256
            copy = client.create_vm(version.name, memory_mib=128).result(timeout=180)
            assert copy.image_version == version.name
            assert sh(client, copy.name, "cat /root/f; ls /root") == "saved-content\nf\n"
            print(f"\nsave of a running tiny VM: {save_s:.2f}s, {version.disk.size_bytes / 2**20:.1f} MiB")
        finally:
            for name in (vm.name, copy.name if copy else ""):
                if name:
                    client.delete_vm(name).result(timeout=120)
