"""Volumes on real libvirt + QEMU: hot-plugged into a running VM as a virtio disk of the right
size whose serial is the volume's id, its data kept across detach and attach and across a stop
and start, gone from the guest after detach, its file freed after delete."""

from __future__ import annotations

import time

import pytest

from clients.wnodes_client import Client
from deploy.stack.stack import Stack
from tests.e2e.test_power import sh

pytestmark = pytest.mark.e2e

# The guest sees disks by serial: the kernel names virtio disks in the order it finds them.
FIND = 'for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = "{serial}" ] && echo ${{d##*/}} $(cat $d/size); done; true'


def test_hot_plug_a_volume_into_a_running_vm(vm_stack: Stack) -> None:
    state = vm_stack.state
    assert state is not None
    with Client(state.gateway, user="alice", vo="atlas") as client:
        vm = client.create_vm("tiny", memory_mib=128).result(timeout=180)
        volume = client.create_volume(0.0625, title="e2e")  # 64 MiB
        serial = volume.name.removeprefix("volumes/")
        data = vm_stack.dir / "hypervisor" / "volumes" / "hv0" / f"{serial}.qcow2"
        try:
            assert sh(client, vm.name, "ls /sys/block") == "vda\n"

            started = time.monotonic()
            attached = client.attach_volume(volume.name, vm.name).result(timeout=120)
            attach_s = time.monotonic() - started
            assert attached.attachments[0].device == "vdb" and data.exists()
            assert sh(client, vm.name, FIND.format(serial=serial)) == "vdb 131072\n"  # 64 MiB in 512-byte sectors
            sh(client, vm.name, "echo volume-data | dd of=/dev/vdb conv=fsync 2>/dev/null")

            started = time.monotonic()
            client.detach_volume(volume.name).result(timeout=120)
            detach_s = time.monotonic() - started
            assert sh(client, vm.name, "ls /sys/block") == "vda\n"

            client.attach_volume(volume.name, vm.name).result(timeout=120)
            assert sh(client, vm.name, "head -c 12 /dev/vdb") == "volume-data\n"
            client.stop_vm(vm.name).result(timeout=120)
            client.start_vm(vm.name).result(timeout=180)
            assert sh(client, vm.name, FIND.format(serial=serial)) == "vdb 131072\n", "attached at boot after a stop"
            assert sh(client, vm.name, "head -c 12 /dev/vdb") == "volume-data\n"
            client.detach_volume(volume.name).result(timeout=120)
            assert sh(client, vm.name, FIND.format(serial=serial)) == ""
            print(f"\nhot-plug to ACTIVE attachment {attach_s:.2f}s, hot-unplug {detach_s:.2f}s")
        finally:
            client.delete_vm(vm.name).result(timeout=120)
            client.delete_volume(volume.name)
        deadline = time.monotonic() + 20
        while data.exists():
            assert time.monotonic() < deadline, "the deleted volume's data was not freed"
            time.sleep(0.2)
