"""The public gRPC API end to end in one process: the adapter (servicers built from the
descriptors) -> the gateway core -> the in-process control plane. Every kind of method: unary
forwarding with its traits, the three streams, errors and the authorisation hook."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from grpc_status import rpc_status

from services.common.errors import PermissionDenied
from services.common.grpc_errors import downstream_error
from services.common.identity import Principal
from services.common.local_channel import LocalChannel, LocalServer
from services.gateway.auth import TrustedHeaderAuthenticator
from services.gateway.core import GatewayCore
from services.gateway.servicer import add_public_services
from services.testing.control_plane import ControlPlane, control_plane
from wnodes.v1 import (
    image_pb2,
    image_service_pb2,
    image_service_pb2_grpc,
    virtual_machine_pb2,
    virtual_machine_service_pb2,
    virtual_machine_service_pb2_grpc,
)

ALICE = Principal("alice", "atlas").to_metadata()
BOB = Principal("bob", "cms").to_metadata()
vms = virtual_machine_service_pb2


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    async with control_plane(tmp_path) as plane:
        yield plane


def _gateway(core: GatewayCore) -> grpc.aio.Channel:
    server = LocalServer("gateway")
    add_public_services(cast(grpc.aio.Server, server), core, TrustedHeaderAuthenticator())
    return cast(grpc.aio.Channel, LocalChannel(server))


async def _created_vm(channel: grpc.aio.Channel) -> virtual_machine_pb2.VirtualMachine:
    api = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)
    operations = operations_pb2_grpc.OperationsStub(channel)
    request = vms.CreateVirtualMachineRequest(virtual_machine=virtual_machine_pb2.VirtualMachine(image="images/tiny", vcpu_count=1,
                                                                                                 memory_mib=256))
    op = await api.CreateVirtualMachine(request, metadata=ALICE)
    op = await operations.WaitOperation(operations_pb2.WaitOperationRequest(name=op.name, timeout=duration_pb2.Duration(seconds=5)),
                                        metadata=ALICE)
    assert op.done and not op.HasField("error"), op
    vm = virtual_machine_pb2.VirtualMachine()
    assert op.response.Unpack(vm)
    return vm


async def test_create_wait_exec_and_ownership(plane: ControlPlane) -> None:
    channel = _gateway(plane.core)
    api = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)
    vm = await _created_vm(channel)
    assert vm.state == virtual_machine_pb2.VirtualMachine.State.ACTIVE and vm.hypervisor.startswith("hypervisors/hv-")
    out = [r async for r in api.ExecVirtualMachine(vms.ExecVirtualMachineRequest(name=vm.name, command=["echo hi"]), metadata=ALICE)]
    assert b"".join(r.stdout for r in out) == b"hi\n" and out[-1].exit_code == 0
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.GetVirtualMachine(vms.GetVirtualMachineRequest(name=vm.name), metadata=BOB)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert downstream_error(raised.value).reason == "VIRTUAL_MACHINE_NOT_FOUND"  # the nameserver's ErrorInfo, intact
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in api.ExecVirtualMachine(vms.ExecVirtualMachineRequest(name=vm.name, command=["echo hi"]), metadata=BOB):
            pass
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND  # another's VM takes no commands from bob


async def test_exec_in_a_stopped_vm_is_refused_by_the_farm(plane: ControlPlane) -> None:
    channel = _gateway(plane.core)
    api = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)
    operations = operations_pb2_grpc.OperationsStub(channel)
    vm = await _created_vm(channel)
    op = await api.StopVirtualMachine(vms.StopVirtualMachineRequest(name=vm.name), metadata=ALICE)
    await operations.WaitOperation(operations_pb2.WaitOperationRequest(name=op.name, timeout=duration_pb2.Duration(seconds=5)), metadata=ALICE)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in api.ExecVirtualMachine(vms.ExecVirtualMachineRequest(name=vm.name, command=["echo hi"]), metadata=ALICE):
            pass
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert downstream_error(raised.value).reason == "VM_NOT_RUNNING"


async def test_an_upload_streams_through_and_lists(plane: ControlPlane) -> None:
    images = image_service_pb2_grpc.ImageServiceStub(_gateway(plane.core))
    disk = b"a new disk\n"
    header = image_pb2.ImageVersion(image="mine", visibility=image_pb2.ImageVersion.Visibility.VO, format="qcow2", architecture="x86_64",
                                    state=image_pb2.ImageVersion.AVAILABLE, disk=image_pb2.Blob(sha256=hashlib.sha256(disk).hexdigest(), size_bytes=len(disk)))

    async def messages() -> AsyncIterator[image_service_pb2.UploadImageVersionRequest]:
        yield image_service_pb2.UploadImageVersionRequest(header=header)
        yield image_service_pb2.UploadImageVersionRequest(chunk=image_service_pb2.UploadImageVersionRequest.Chunk(part="disk", data=disk))

    version = await images.UploadImageVersion(messages(), metadata=ALICE)
    assert version.image == "images/mine" and version.owner_vo == "atlas"
    listed = await images.ListImageVersions(image_service_pb2.ListImageVersionsRequest(), metadata=BOB)
    assert "images/mine" not in {v.image for v in listed.image_versions}  # atlas's, not cms's
    assert {"images/tiny", "images/debian12"} <= {v.image for v in listed.image_versions}


async def test_no_identity_is_unauthenticated_and_an_unoffered_method_unimplemented(plane: ControlPlane) -> None:
    channel = _gateway(plane.core)
    api = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.ListVirtualMachines(vms.ListVirtualMachinesRequest())
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rpc_status.from_call(cast(grpc.Call, raised.value)) is not None
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await operations_pb2_grpc.OperationsStub(channel).ListOperations(operations_pb2.ListOperationsRequest(), metadata=ALICE)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


class _DenyCreates:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def authorize(self, principal: Principal, method: str, request: Message | None) -> None:
        self.asked.append((principal.user, method))
        if method.startswith("Create"):
            raise PermissionDenied(f"{principal.user} may not {method}")


async def test_the_authorisation_hook_sees_every_call_and_can_refuse(plane: ControlPlane) -> None:
    policy = _DenyCreates()
    api = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(_gateway(GatewayCore(plane.services, policy)))
    await api.ListVirtualMachines(vms.ListVirtualMachinesRequest(), metadata=ALICE)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.CreateVirtualMachine(vms.CreateVirtualMachineRequest(virtual_machine=virtual_machine_pb2.VirtualMachine(image="images/tiny")),
                                       metadata=ALICE)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert policy.asked == [("alice", "ListVirtualMachines"), ("alice", "CreateVirtualMachine")]
    assert not (await api.ListVirtualMachines(vms.ListVirtualMachinesRequest(), metadata=ALICE)).virtual_machines
