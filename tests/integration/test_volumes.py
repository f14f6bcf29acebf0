"""Volumes through the public API on the fake-driver stack: records, attachments, host pinning,
data files on the pinned host, ownership and errors."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from clients.wnodes_client import Client, WnodesRpcError
from deploy.stack.stack import Stack
from wnodes.v1 import volume_pb2

pytestmark = pytest.mark.integration
State = volume_pb2.Volume.State
Attached = volume_pb2.Volume.Attachment.State


def data_file(stack: Stack, volume: volume_pb2.Volume) -> Path:
    host = volume.hypervisor.removeprefix("hypervisors/")
    return stack.dir / "hypervisor" / "volumes" / host / f"{volume.name.removeprefix('volumes/')}.qcow2"


def wait_until(check: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def fails(call: object, code: grpc.StatusCode, reason: str) -> WnodesRpcError:
    with pytest.raises(WnodesRpcError) as info:
        call()  # type: ignore[operator]
    assert (info.value.code, info.value.reason) == (code, reason), info.value
    return info.value


def test_volume_lifecycle(client: Client, fake_stack: Stack) -> None:
    # Prepare
    vm = client.create_vm("tiny").result(timeout=60)
    volume = client.create_volume(0.5, title="scratch")
    assert (volume.state, volume.size_gib, volume.title, volume.hypervisor) == (State.ONLINE, 0.5, "scratch", "")
    assert volume.owner.user == "alice" and not volume.attachments

    # Execute: attach
    attached = client.attach_volume(volume.name, vm.name).result(timeout=60)

    # Assert
    [link] = attached.attachments
    assert (link.virtual_machine, link.device, link.state) == (vm.name, "vdb", Attached.ATTACHED)
    assert attached.hypervisor == vm.hypervisor
    assert [(v.volume, v.device) for v in client.get_vm(vm.name).volumes] == [(volume.name, "vdb")]
    assert data_file(fake_stack, attached).exists(), "the data is made on the VM's host at the first attach"
    fails(lambda: client.delete_volume(volume.name), grpc.StatusCode.FAILED_PRECONDITION, "VOLUME_ATTACHED")
    fails(lambda: client.offline_volume(volume.name), grpc.StatusCode.FAILED_PRECONDITION, "VOLUME_ATTACHED")
    assert client.attach_volume(volume.name, vm.name).result(timeout=60).attachments[0].device == "vdb"  # a retry: same

    # a second volume takes the next device; a taken or bad one is refused
    second = client.create_volume(1)
    fails(lambda: client.attach_volume(second.name, vm.name, device="vdb"), grpc.StatusCode.FAILED_PRECONDITION, "DEVICE_IN_USE")
    fails(lambda: client.attach_volume(second.name, vm.name, device="sda"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DEVICE")
    assert client.attach_volume(second.name, vm.name).result(timeout=60).attachments[0].device == "vdc"

    # detach keeps the data
    detached = client.detach_volume(volume.name, vm.name).result(timeout=60)
    assert not detached.attachments and detached.hypervisor == vm.hypervisor
    assert [v.volume for v in client.get_vm(vm.name).volumes] == [second.name]
    assert data_file(fake_stack, detached).exists()
    fails(lambda: client.detach_volume(volume.name), grpc.StatusCode.FAILED_PRECONDITION, "VOLUME_NOT_ATTACHED")

    # offline volumes cannot be attached
    assert client.offline_volume(volume.name).state == State.OFFLINE
    fails(lambda: client.attach_volume(volume.name, vm.name), grpc.StatusCode.FAILED_PRECONDITION, "VOLUME_NOT_ONLINE")
    assert client.online_volume(volume.name).state == State.ONLINE

    # deleting the VM frees its volumes; deleting a volume frees its data on its host
    client.delete_vm(vm.name).result(timeout=60)
    assert not client.get_volume(second.name).attachments
    for v in (detached, client.get_volume(second.name)):
        client.delete_volume(v.name)
        fails(lambda v=v: client.get_volume(v.name), grpc.StatusCode.NOT_FOUND, "VOLUME_NOT_FOUND")
        wait_until(lambda v=v: not data_file(fake_stack, v).exists())


def test_a_volume_is_pinned_to_its_first_host(client: Client) -> None:
    hosts = [h.name for h in client.list_hypervisors()][:2]
    here = client.create_vm("tiny", pinned_hypervisor=hosts[0]).result(timeout=60)
    there = client.create_vm("tiny", pinned_hypervisor=hosts[1]).result(timeout=60)
    volume = client.create_volume(0.25)
    client.attach_volume(volume.name, here.name).result(timeout=60)
    client.detach_volume(volume.name).result(timeout=60)
    err = fails(lambda: client.attach_volume(volume.name, there.name), grpc.StatusCode.FAILED_PRECONDITION, "VOLUME_ON_OTHER_HYPERVISOR")
    assert "no shared storage" in err.message and hosts[0] in err.message
    for name in (here.name, there.name):
        client.delete_vm(name).result(timeout=60)
    client.delete_volume(volume.name)


def test_attach_to_a_stopped_vm_takes_effect_at_its_start(client: Client) -> None:
    vm = client.create_vm("tiny").result(timeout=60)
    client.stop_vm(vm.name).result(timeout=60)
    volume = client.create_volume(0.25)
    assert client.attach_volume(volume.name, vm.name).result(timeout=60).attachments[0].state == Attached.ATTACHED
    client.start_vm(vm.name).result(timeout=60)
    assert [v.volume for v in client.get_vm(vm.name).volumes] == [volume.name]
    client.suspend_vm(vm.name).result(timeout=60)
    err = fails(lambda: client.detach_volume(volume.name), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_VM_STATE")
    assert "a paused guest cannot let go of a disk" in err.message
    client.delete_vm(vm.name).result(timeout=60)
    client.delete_volume(volume.name)


def test_attach_to_a_suspended_vm_plugs_it_into_the_paused_domain(client: Client, fake_stack: Stack) -> None:
    # Prepare
    vm = client.create_vm("tiny").result(timeout=60)
    client.suspend_vm(vm.name).result(timeout=60)
    volume = client.create_volume(0.25)

    # Execute
    attached = client.attach_volume(volume.name, vm.name).result(timeout=60)

    # Assert: attached at once (the guest sees it when it resumes: tests/e2e/test_occi.py)
    assert (attached.attachments[0].device, attached.attachments[0].state) == ("vdb", Attached.ATTACHED)
    assert data_file(fake_stack, attached).exists()
    client.start_vm(vm.name).result(timeout=60)
    assert [(v.volume, v.device) for v in client.get_vm(vm.name).volumes] == [(volume.name, "vdb")]
    client.detach_volume(volume.name).result(timeout=60)
    client.delete_vm(vm.name).result(timeout=60)
    client.delete_volume(volume.name)


def test_others_volumes_are_not_found(client: Client, fake_stack: Stack) -> None:
    vm = client.create_vm("tiny").result(timeout=60)
    volume = client.create_volume(0.25)
    state = fake_stack.state
    assert state is not None
    with Client(state.gateway, user="bob", vo="cms") as bob:
        assert list(bob.list_volumes()) == []
        for call in (lambda: bob.get_volume(volume.name), lambda: bob.delete_volume(volume.name),
                     lambda: bob.offline_volume(volume.name), lambda: bob.attach_volume(volume.name, vm.name)):  # fmt: skip
            fails(call, grpc.StatusCode.NOT_FOUND, "VOLUME_NOT_FOUND")
        own = bob.create_volume(0.25)
        fails(lambda: bob.attach_volume(own.name, vm.name), grpc.StatusCode.NOT_FOUND, "VIRTUAL_MACHINE_NOT_FOUND")
        bob.delete_volume(own.name)
    client.delete_vm(vm.name).result(timeout=60)
    client.delete_volume(volume.name)


@pytest.mark.parametrize(
    ("size_gib", "reason"), [(0, "INVALID_SIZE"), (-1, "INVALID_SIZE"), (4096, "INVALID_SIZE"), (float("nan"), "INVALID_SIZE")]
)
def test_bad_sizes_are_invalid(client: Client, size_gib: float, reason: str) -> None:
    err = fails(lambda: client.create_volume(size_gib), grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert "size_gib" in err.message


def test_retried_create_and_pages(client: Client) -> None:
    first = client.create_volume(0.25, request_id="vol-retry-1")
    assert client.create_volume(0.25, request_id="vol-retry-1").name == first.name
    made = [first] + [client.create_volume(0.25) for _ in range(4)]
    assert {v.name for v in client.list_volumes(page_size=2)} >= {v.name for v in made}
    fails(lambda: client.get_volume("volumes/not-a-volume"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME")
    for v in made:
        client.delete_volume(v.name)
