"""Saving a VM as a new image version on the fake-driver stack: the version belongs to the VM
owner's VO, boots, and another VO's image cannot be written."""

from __future__ import annotations

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

from clients.wnodes_client import Client, WnodesRpcError
from deploy.stack.stack import Stack
from wnodes.v1 import image_pb2, virtual_machine_pb2

pytestmark = pytest.mark.integration
State = virtual_machine_pb2.VirtualMachine.State


def test_save_makes_a_version_of_the_owners_vo_that_boots(client: Client, fake_stack: Stack) -> None:
    # Prepare
    vm = client.create_vm("tiny").result(timeout=60)
    source = client.get_image(vm.image_version)

    # Execute
    first = client.save_vm(vm.name, "alice-worker").result(timeout=60)
    client.stop_vm(vm.name).result(timeout=60)
    second = client.save_vm(vm.name, "images/alice-worker").result(timeout=60)

    # Assert
    assert (first.name, second.name) == ("images/alice-worker/versions/1", "images/alice-worker/versions/2")
    assert first.owner_vo == "atlas" and first.visibility == image_pb2.ImageVersion.Visibility.VO
    assert first.state == image_pb2.ImageVersion.State.AVAILABLE
    assert first.disk.sha256 != source.disk.sha256 and vm.name in first.description
    after = client.get_vm(vm.name)
    assert after.state == State.STOPPED and "saved as images/alice-worker/versions/2" in after.state_message
    booted = client.create_vm(second.name).result(timeout=60)  # "alice-worker" is it too, within 1 s
    assert booted.image_version == second.name
    state = fake_stack.state
    assert state is not None
    with Client(state.gateway, user="bob", vo="cms") as bob:
        with pytest.raises(WnodesRpcError) as hidden:
            bob.get_image("alice-worker")
        assert hidden.value.code == grpc.StatusCode.NOT_FOUND
    for name in (vm.name, booted.name):
        client.delete_vm(name).result(timeout=60)


def test_another_vos_image_is_not_writable(client: Client) -> None:
    vm = client.create_vm("tiny").result(timeout=60)
    with pytest.raises(WnodesRpcError) as info:
        client.save_vm(vm.name, "tiny")  # the stack's image, of VO wnodes
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED and info.value.reason == "IMAGE_NOT_OWNED"
    client.delete_vm(vm.name).result(timeout=60)


@pytest.mark.parametrize(
    ("image_name", "reason"),
    [("Bad Name!", "INVALID_IMAGE_NAME"), ("images/x/versions/3", "INVALID_IMAGE_NAME"), ("", "IMAGE_REQUIRED")],
)
def test_bad_image_names_are_invalid(client: Client, image_name: str, reason: str) -> None:
    vm = client.create_vm("tiny").result(timeout=60)
    with pytest.raises(WnodesRpcError) as info:
        client.save_vm(vm.name, image_name)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.reason == reason
    client.delete_vm(vm.name).result(timeout=60)


def test_others_cannot_save_my_vm_or_see_my_save(client: Client, fake_stack: Stack) -> None:
    vm = client.create_vm("tiny").result(timeout=60)
    op = client.save_vm(vm.name, "alice-private")
    state = fake_stack.state
    assert state is not None
    with Client(state.gateway, user="bob", vo="cms") as bob:
        with pytest.raises(WnodesRpcError) as info:
            bob.save_vm(vm.name, "bobs")
        assert info.value.code == grpc.StatusCode.NOT_FOUND
    with grpc.insecure_channel(state.gateway) as channel:
        with pytest.raises(grpc.RpcError) as hidden:
            operations_pb2_grpc.OperationsStub(channel).GetOperation(
                operations_pb2.GetOperationRequest(name=op.name), metadata=(("wnodes-user", "bob"), ("wnodes-vo", "cms"))
            )
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    op.result(timeout=60)
    client.delete_vm(vm.name).result(timeout=60)
