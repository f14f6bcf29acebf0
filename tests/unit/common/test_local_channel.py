"""The local channel behaves as a network would: bytes cross, metadata arrives, an abort is a
real AioRpcError whose google.rpc.Status ``rpc_status.from_call`` reads back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import grpc
import pytest
from grpc_status import rpc_status

from services.common.errors import NotFound, VirtualMachineNotFound
from services.common.grpc_errors import downstream_error, maps_errors
from services.common.grpc_types import Ctx
from services.common.local_channel import LocalChannel, LocalServer
from wnodes.hypervisor.v1 import agent_service_pb2, agent_service_pb2_grpc
from wnodes.imagestore.v1 import imagestore_service_pb2_grpc
from wnodes.v1 import image_pb2, image_service_pb2, virtual_machine_service_pb2


class _Imagestore(imagestore_service_pb2_grpc.ImagestoreServiceServicer):
    def __init__(self) -> None:
        self.kept: list[image_pb2.ImageVersion] = []

    @maps_errors
    async def GetImageVersion(self, request: image_service_pb2.GetImageVersionRequest, context: Ctx) -> image_pb2.ImageVersion:
        if request.name == "images/missing":
            raise NotFound(f"{request.name} does not exist", reason="IMAGE_NOT_FOUND", metadata={"name": request.name})
        user = dict(context.invocation_metadata()).get("wnodes-user", "")
        version = image_pb2.ImageVersion(name=request.name, description=f"asked by {user}")
        self.kept.append(version)
        return version

    @maps_errors
    async def UploadImageVersion(self, request_iterator: AsyncIterator[image_service_pb2.UploadImageVersionRequest],
                                 context: Ctx) -> image_pb2.ImageVersion:
        size = 0
        async for request in request_iterator:
            size += len(request.chunk.data)
        return image_pb2.ImageVersion(disk=image_pb2.Blob(size_bytes=size))


class _Agent(agent_service_pb2_grpc.AgentServiceServicer):
    @maps_errors
    async def Exec(self, request: agent_service_pb2.ExecRequest, context: Ctx) -> AsyncIterator[virtual_machine_service_pb2.ExecVirtualMachineResponse]:
        yield virtual_machine_service_pb2.ExecVirtualMachineResponse(stdout=b"one\n")
        if request.vm_id == "vm-gone":
            raise VirtualMachineNotFound("virtualMachines/vm-gone does not exist")
        yield virtual_machine_service_pb2.ExecVirtualMachineResponse(exit_code=0)


@pytest.fixture
def servicer() -> _Imagestore:
    return _Imagestore()


@pytest.fixture
def imagestore(servicer: _Imagestore) -> imagestore_service_pb2_grpc.ImagestoreServiceAsyncStub:
    server = LocalServer("imagestore")
    imagestore_service_pb2_grpc.add_ImagestoreServiceServicer_to_server(servicer, cast(grpc.aio.Server, server))
    return imagestore_service_pb2_grpc.ImagestoreServiceStub(cast(grpc.aio.Channel, LocalChannel(server)))


async def test_a_unary_call_carries_metadata_and_copies_messages(servicer: _Imagestore,
                                                                 imagestore: imagestore_service_pb2_grpc.ImagestoreServiceAsyncStub) -> None:
    request = image_service_pb2.GetImageVersionRequest(name="images/tiny")
    got = await imagestore.GetImageVersion(request, metadata=(("wnodes-user", "alice"),), timeout=5)
    assert got.description == "asked by alice"
    got.description = "changed by the caller"
    assert servicer.kept[0].description == "asked by alice"  # not the servicer's object


async def test_an_abort_is_a_real_rpc_error_with_its_status(imagestore: imagestore_service_pb2_grpc.ImagestoreServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await imagestore.GetImageVersion(image_service_pb2.GetImageVersionRequest(name="images/missing"))
    err = raised.value
    assert err.code() == grpc.StatusCode.NOT_FOUND and err.details() == "images/missing does not exist"
    status = rpc_status.from_call(cast(grpc.Call, err))
    assert status is not None and status.code == grpc.StatusCode.NOT_FOUND.value[0]
    again = downstream_error(err)
    assert isinstance(again, NotFound) and (again.reason, again.metadata) == ("IMAGE_NOT_FOUND", {"name": "images/missing"})


async def test_a_method_the_servicer_lacks_is_unimplemented(imagestore: imagestore_service_pb2_grpc.ImagestoreServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await imagestore.PublishImageVersion(image_service_pb2.PublishImageVersionRequest(name="images/tiny"))
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_client_stream_reaches_the_servicer(imagestore: imagestore_service_pb2_grpc.ImagestoreServiceAsyncStub) -> None:
    async def chunks() -> AsyncIterator[image_service_pb2.UploadImageVersionRequest]:
        for data in (b"abc", b"de"):
            yield image_service_pb2.UploadImageVersionRequest(chunk=image_service_pb2.UploadImageVersionRequest.Chunk(part="disk", data=data))

    assert (await imagestore.UploadImageVersion(chunks())).disk.size_bytes == 5


async def test_a_server_stream_yields_then_fails_as_over_a_network() -> None:
    server = LocalServer("agent")
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(_Agent(), cast(grpc.aio.Server, server))
    agent = agent_service_pb2_grpc.AgentServiceStub(cast(grpc.aio.Channel, LocalChannel(server)))
    assert [r.stdout async for r in agent.Exec(agent_service_pb2.ExecRequest(vm_id="vm-1"), wait_for_ready=True)] == [b"one\n", b""]
    seen = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for response in agent.Exec(agent_service_pb2.ExecRequest(vm_id="vm-gone")):
            seen.append(response.stdout)
    assert seen == [b"one\n"] and raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert downstream_error(raised.value).reason == "VIRTUAL_MACHINE_NOT_FOUND"
