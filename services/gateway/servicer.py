"""The public gRPC API (wnodes.v1): authenticate, then forward to the internal service that owns
the resource. The gateway keeps no state."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2

from services.common.errors import FailedPrecondition
from services.common.grpc_errors import maps_errors
from services.common.grpc_types import Ctx
from services.common.names import parse_resource_id
from services.gateway.auth import Authenticator
from services.gateway.backends import Backends, call
from wnodes.hypervisor.v1 import agent_service_pb2
from wnodes.v1 import (
    hypervisor_pb2,
    hypervisor_service_pb2,
    hypervisor_service_pb2_grpc,
    image_pb2,
    image_service_pb2,
    image_service_pb2_grpc,
    network_pb2,
    network_service_pb2,
    network_service_pb2_grpc,
    virtual_machine_pb2,
    virtual_machine_service_pb2,
    virtual_machine_service_pb2_grpc,
    volume_pb2,
    volume_service_pb2,
    volume_service_pb2_grpc,
)


class VirtualMachineServicer(virtual_machine_service_pb2_grpc.VirtualMachineServiceServicer):
    def __init__(self, backends: Backends, auth: Authenticator) -> None:
        self._b = backends
        self._auth = auth

    @maps_errors
    async def GetVirtualMachine(self, request: virtual_machine_service_pb2.GetVirtualMachineRequest, context: Ctx) -> virtual_machine_pb2.VirtualMachine:
        return await call(self._auth.authenticate(context), self._b.registry.GetVirtualMachine, request)

    @maps_errors
    async def UpdateVirtualMachine(
        self, request: virtual_machine_service_pb2.UpdateVirtualMachineRequest, context: Ctx
    ) -> virtual_machine_pb2.VirtualMachine:
        return await call(self._auth.authenticate(context), self._b.registry.UpdateVirtualMachine, request)

    @maps_errors
    async def ListVirtualMachines(
        self, request: virtual_machine_service_pb2.ListVirtualMachinesRequest, context: Ctx
    ) -> virtual_machine_service_pb2.ListVirtualMachinesResponse:
        return await call(self._auth.authenticate(context), self._b.registry.ListVirtualMachines, request)

    @maps_errors
    async def CreateVirtualMachine(
        self, request: virtual_machine_service_pb2.CreateVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        principal = self._auth.authenticate(context)
        if not request.request_id:  # so that our own retries stay idempotent
            request.request_id = uuid.uuid4().hex
        return await call(principal, self._b.registry.CreateVirtualMachine, request)

    @maps_errors
    async def DeleteVirtualMachine(
        self, request: virtual_machine_service_pb2.DeleteVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return await call(self._auth.authenticate(context), self._b.registry.DeleteVirtualMachine, request)

    @maps_errors
    async def SaveVirtualMachine(
        self, request: virtual_machine_service_pb2.SaveVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return await call(self._auth.authenticate(context), self._b.registry.SaveVirtualMachine, request)

    @maps_errors
    async def StopVirtualMachine(
        self, request: virtual_machine_service_pb2.StopVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return await call(self._auth.authenticate(context), self._b.registry.StopVirtualMachine, request)

    @maps_errors
    async def StartVirtualMachine(
        self, request: virtual_machine_service_pb2.StartVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return await call(self._auth.authenticate(context), self._b.registry.StartVirtualMachine, request)

    @maps_errors
    async def RestartVirtualMachine(
        self, request: virtual_machine_service_pb2.RestartVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return await call(self._auth.authenticate(context), self._b.registry.RestartVirtualMachine, request)

    @maps_errors
    async def SuspendVirtualMachine(
        self, request: virtual_machine_service_pb2.SuspendVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return await call(self._auth.authenticate(context), self._b.registry.SuspendVirtualMachine, request)

    @maps_errors
    async def ResumeVirtualMachine(
        self, request: virtual_machine_service_pb2.ResumeVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return await call(self._auth.authenticate(context), self._b.registry.ResumeVirtualMachine, request)

    @maps_errors
    async def ExecVirtualMachine(
        self, request: virtual_machine_service_pb2.ExecVirtualMachineRequest, context: Ctx
    ) -> AsyncIterator[virtual_machine_service_pb2.ExecVirtualMachineResponse]:
        principal = self._auth.authenticate(context)
        vm_id = parse_resource_id(request.name, "virtualMachines")
        vm = await call(principal, self._b.registry.GetVirtualMachine, virtual_machine_service_pb2.GetVirtualMachineRequest(name=request.name))
        if not vm.hypervisor:
            raise FailedPrecondition(f"{vm.name} is not placed on a hypervisor ({vm.state_message})", reason="VM_NOT_PLACED")
        if vm.state in (virtual_machine_pb2.VirtualMachine.State.STOPPED, virtual_machine_pb2.VirtualMachine.State.SUSPENDED):
            state = virtual_machine_pb2.VirtualMachine.State.Name(vm.state)
            raise FailedPrecondition(f"{vm.name} is {state}: start or resume it to run commands in it", reason="VM_NOT_RUNNING")
        host = await call(principal, self._b.registry.GetHypervisor, hypervisor_service_pb2.GetHypervisorRequest(name=vm.hypervisor))
        if host.state != hypervisor_pb2.Hypervisor.State.UP:
            raise FailedPrecondition(f"{vm.hypervisor} is down", reason="HYPERVISOR_DOWN")
        agent = self._b.agent(host.endpoint)
        exec_request = agent_service_pb2.ExecRequest(
            vm_id=vm_id, command=request.command, ready_timeout_seconds=request.ready_timeout_seconds, uid=request.uid,
            exec_id=request.exec_id, stdout_offset=request.stdout_offset, stderr_offset=request.stderr_offset,
        )
        # wait_for_ready: an agent that is restarting is waited for (the call is only sent once
        # connected, so this never runs a command twice).
        stream = agent.Exec(exec_request, metadata=principal.to_metadata(), wait_for_ready=True)
        async for response in stream:  # type: ignore[attr-defined]
            yield response


class VolumeServicer(volume_service_pb2_grpc.VolumeServiceServicer):
    def __init__(self, backends: Backends, auth: Authenticator) -> None:
        self._b = backends
        self._auth = auth

    @maps_errors
    async def CreateVolume(self, request: volume_service_pb2.CreateVolumeRequest, context: Ctx) -> volume_pb2.Volume:
        principal = self._auth.authenticate(context)
        if not request.request_id:  # so that our own retries stay idempotent
            request.request_id = uuid.uuid4().hex
        return await call(principal, self._b.registry.CreateVolume, request)

    @maps_errors
    async def GetVolume(self, request: volume_service_pb2.GetVolumeRequest, context: Ctx) -> volume_pb2.Volume:
        return await call(self._auth.authenticate(context), self._b.registry.GetVolume, request)

    @maps_errors
    async def ListVolumes(self, request: volume_service_pb2.ListVolumesRequest, context: Ctx) -> volume_service_pb2.ListVolumesResponse:
        return await call(self._auth.authenticate(context), self._b.registry.ListVolumes, request)

    @maps_errors
    async def DeleteVolume(self, request: volume_service_pb2.DeleteVolumeRequest, context: Ctx) -> empty_pb2.Empty:
        return await call(self._auth.authenticate(context), self._b.registry.DeleteVolume, request)

    @maps_errors
    async def OnlineVolume(self, request: volume_service_pb2.OnlineVolumeRequest, context: Ctx) -> volume_pb2.Volume:
        return await call(self._auth.authenticate(context), self._b.registry.OnlineVolume, request)

    @maps_errors
    async def OfflineVolume(self, request: volume_service_pb2.OfflineVolumeRequest, context: Ctx) -> volume_pb2.Volume:
        return await call(self._auth.authenticate(context), self._b.registry.OfflineVolume, request)

    @maps_errors
    async def AttachVolume(self, request: volume_service_pb2.AttachVolumeRequest, context: Ctx) -> operations_pb2.Operation:
        return await call(self._auth.authenticate(context), self._b.registry.AttachVolume, request)

    @maps_errors
    async def DetachVolume(self, request: volume_service_pb2.DetachVolumeRequest, context: Ctx) -> operations_pb2.Operation:
        return await call(self._auth.authenticate(context), self._b.registry.DetachVolume, request)


class NetworkServicer(network_service_pb2_grpc.NetworkServiceServicer):
    def __init__(self, backends: Backends, auth: Authenticator) -> None:
        self._b = backends
        self._auth = auth

    @maps_errors
    async def CreateNetwork(self, request: network_service_pb2.CreateNetworkRequest, context: Ctx) -> network_pb2.Network:
        principal = self._auth.authenticate(context)
        if not request.request_id:  # so that our own retries stay idempotent
            request.request_id = uuid.uuid4().hex
        return await call(principal, self._b.registry.CreateNetwork, request)

    @maps_errors
    async def GetNetwork(self, request: network_service_pb2.GetNetworkRequest, context: Ctx) -> network_pb2.Network:
        return await call(self._auth.authenticate(context), self._b.registry.GetNetwork, request)

    @maps_errors
    async def ListNetworks(self, request: network_service_pb2.ListNetworksRequest, context: Ctx) -> network_service_pb2.ListNetworksResponse:
        return await call(self._auth.authenticate(context), self._b.registry.ListNetworks, request)

    @maps_errors
    async def DeleteNetwork(self, request: network_service_pb2.DeleteNetworkRequest, context: Ctx) -> empty_pb2.Empty:
        return await call(self._auth.authenticate(context), self._b.registry.DeleteNetwork, request)

    @maps_errors
    async def UpNetwork(self, request: network_service_pb2.UpNetworkRequest, context: Ctx) -> network_pb2.Network:
        return await call(self._auth.authenticate(context), self._b.registry.UpNetwork, request)

    @maps_errors
    async def DownNetwork(self, request: network_service_pb2.DownNetworkRequest, context: Ctx) -> network_pb2.Network:
        return await call(self._auth.authenticate(context), self._b.registry.DownNetwork, request)

    @maps_errors
    async def CreateNetworkInterface(self, request: network_service_pb2.CreateNetworkInterfaceRequest, context: Ctx) -> network_pb2.NetworkInterface:
        principal = self._auth.authenticate(context)
        if not request.request_id:  # so that our own retries stay idempotent
            request.request_id = uuid.uuid4().hex
        return await call(principal, self._b.registry.CreateNetworkInterface, request)

    @maps_errors
    async def GetNetworkInterface(self, request: network_service_pb2.GetNetworkInterfaceRequest, context: Ctx) -> network_pb2.NetworkInterface:
        return await call(self._auth.authenticate(context), self._b.registry.GetNetworkInterface, request)

    @maps_errors
    async def ListNetworkInterfaces(self, request: network_service_pb2.ListNetworkInterfacesRequest, context: Ctx) -> network_service_pb2.ListNetworkInterfacesResponse:
        return await call(self._auth.authenticate(context), self._b.registry.ListNetworkInterfaces, request)

    @maps_errors
    async def DeleteNetworkInterface(self, request: network_service_pb2.DeleteNetworkInterfaceRequest, context: Ctx) -> empty_pb2.Empty:
        return await call(self._auth.authenticate(context), self._b.registry.DeleteNetworkInterface, request)


class ImageServicer(image_service_pb2_grpc.ImageServiceServicer):
    def __init__(self, backends: Backends, auth: Authenticator) -> None:
        self._b = backends
        self._auth = auth

    @maps_errors
    async def GetImageVersion(self, request: image_service_pb2.GetImageVersionRequest, context: Ctx) -> image_pb2.ImageVersion:
        return await call(self._auth.authenticate(context), self._b.imagestore.GetImageVersion, request)

    @maps_errors
    async def ListImageVersions(
        self, request: image_service_pb2.ListImageVersionsRequest, context: Ctx
    ) -> image_service_pb2.ListImageVersionsResponse:
        return await call(self._auth.authenticate(context), self._b.imagestore.ListImageVersions, request)

    @maps_errors
    async def UploadImageVersion(
        self, request_iterator: AsyncIterator[image_service_pb2.UploadImageVersionRequest], context: Ctx
    ) -> image_pb2.ImageVersion:
        principal = self._auth.authenticate(context)
        return await self._b.imagestore.UploadImageVersion(request_iterator, metadata=principal.to_metadata())

    @maps_errors
    async def PublishImageVersion(self, request: image_service_pb2.PublishImageVersionRequest, context: Ctx) -> image_pb2.ImageVersion:
        return await call(self._auth.authenticate(context), self._b.imagestore.PublishImageVersion, request)

    @maps_errors
    async def DeprecateImageVersion(
        self, request: image_service_pb2.DeprecateImageVersionRequest, context: Ctx
    ) -> image_pb2.ImageVersion:
        return await call(self._auth.authenticate(context), self._b.imagestore.DeprecateImageVersion, request)

    @maps_errors
    async def DeleteImageVersion(self, request: image_service_pb2.DeleteImageVersionRequest, context: Ctx) -> image_pb2.ImageVersion:
        return await call(self._auth.authenticate(context), self._b.imagestore.DeleteImageVersion, request)

    @maps_errors
    async def CustomizeImageVersion(
        self, request: image_service_pb2.CustomizeImageVersionRequest, context: Ctx
    ) -> AsyncIterator[image_service_pb2.CustomizeImageVersionProgress]:
        principal = self._auth.authenticate(context)
        async for step in self._b.imagestore.CustomizeImageVersion(request, metadata=principal.to_metadata(), timeout=3600):
            yield step

    @maps_errors
    async def PrefetchImage(self, request: image_service_pb2.PrefetchImageRequest, context: Ctx) -> image_service_pb2.PrefetchImageResponse:
        return await call(self._auth.authenticate(context), self._b.imagestore.PrefetchImage, request)


class HypervisorServicer(hypervisor_service_pb2_grpc.HypervisorServiceServicer):
    def __init__(self, backends: Backends, auth: Authenticator) -> None:
        self._b = backends
        self._auth = auth

    @maps_errors
    async def GetHypervisor(self, request: hypervisor_service_pb2.GetHypervisorRequest, context: Ctx) -> hypervisor_pb2.Hypervisor:
        return await call(self._auth.authenticate(context), self._b.registry.GetHypervisor, request)

    @maps_errors
    async def ListHypervisors(
        self, request: hypervisor_service_pb2.ListHypervisorsRequest, context: Ctx
    ) -> hypervisor_service_pb2.ListHypervisorsResponse:
        return await call(self._auth.authenticate(context), self._b.registry.ListHypervisors, request)

    @maps_errors
    async def ListNameservers(
        self, request: hypervisor_service_pb2.ListNameserversRequest, context: Ctx
    ) -> hypervisor_service_pb2.ListNameserversResponse:
        return await call(self._auth.authenticate(context), self._b.registry.ListNameservers, request)


class OperationsServicer(operations_pb2_grpc.OperationsServicer):  # type: ignore[misc]
    """google.longrunning.Operations: Get and Wait (the others are not offered)."""

    def __init__(self, backends: Backends, auth: Authenticator) -> None:
        self._b = backends
        self._auth = auth

    @maps_errors
    async def GetOperation(self, request: operations_pb2.GetOperationRequest, context: Ctx) -> operations_pb2.Operation:
        return await call(self._auth.authenticate(context), self._b.registry.GetOperation, request)

    @maps_errors
    async def WaitOperation(self, request: operations_pb2.WaitOperationRequest, context: Ctx) -> operations_pb2.Operation:
        wait = request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else 30.0
        return await call(self._auth.authenticate(context), self._b.registry.WaitOperation, request, timeout=wait + 10)
