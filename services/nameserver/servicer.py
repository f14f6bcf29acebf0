"""gRPC edge of the nameserver: protobuf in, registry call, protobuf out. No logic here."""

from __future__ import annotations

from google.longrunning import operations_pb2
from google.protobuf import empty_pb2
from opentelemetry import propagate

from services.common.errors import InvalidArgument
from services.common.grpc_errors import maps_errors
from services.common.grpc_types import Ctx
from services.common.names import parse_resource_id
from services.common.pagination import page_of
from services.common.principal_context import principal_of
from services.common.records import NetworkInterfaceRecord
from services.nameserver import convert
from services.nameserver.networks import parse_interface_name, parse_network_name
from services.nameserver.power import PowerAction
from services.nameserver.registry import Registry
from services.nameserver.volumes import parse_volume_name
from wnodes.nameserver.v1 import registry_service_pb2, registry_service_pb2_grpc
from wnodes.v1 import (
    hypervisor_pb2,
    hypervisor_service_pb2,
    network_pb2,
    network_service_pb2,
    virtual_machine_pb2,
    virtual_machine_service_pb2,
    volume_pb2,
    volume_service_pb2,
)


class RegistryServicer(registry_service_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    @maps_errors
    async def CreateVirtualMachine(
        self, request: virtual_machine_service_pb2.CreateVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        principal = principal_of(context)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        view = await self._registry.create_vm(
            convert.spec_from_request(request), principal, request.request_id, carrier
        )
        return convert.operation_to_proto(view)

    @maps_errors
    async def DeleteVirtualMachine(
        self, request: virtual_machine_service_pb2.DeleteVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        principal = principal_of(context)
        vm_id = parse_resource_id(request.name, "virtualMachines")
        op = await self._registry.delete_vm(vm_id, principal, request.request_id)
        return convert.operation_to_proto(await self._registry.operations.get(op.name, principal))

    @maps_errors
    async def SaveVirtualMachine(
        self, request: virtual_machine_service_pb2.SaveVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        vm_id = parse_resource_id(request.name, "virtualMachines")
        return convert.operation_to_proto(await self._registry.save_vm(vm_id, principal_of(context), request.image_name))

    async def _power(self, name: str, context: Ctx, action: PowerAction) -> operations_pb2.Operation:
        vm_id = parse_resource_id(name, "virtualMachines")
        return convert.operation_to_proto(await self._registry.power_action(vm_id, principal_of(context), action))

    @maps_errors
    async def StopVirtualMachine(
        self, request: virtual_machine_service_pb2.StopVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return await self._power(request.name, context, PowerAction.STOP)

    @maps_errors
    async def StartVirtualMachine(
        self, request: virtual_machine_service_pb2.StartVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return await self._power(request.name, context, PowerAction.START)

    @maps_errors
    async def RestartVirtualMachine(
        self, request: virtual_machine_service_pb2.RestartVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return await self._power(request.name, context, PowerAction.RESTART)

    @maps_errors
    async def SuspendVirtualMachine(
        self, request: virtual_machine_service_pb2.SuspendVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return await self._power(request.name, context, PowerAction.SUSPEND)

    @maps_errors
    async def ResumeVirtualMachine(
        self, request: virtual_machine_service_pb2.ResumeVirtualMachineRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return await self._power(request.name, context, PowerAction.RESUME)

    @maps_errors
    async def GetVirtualMachine(
        self, request: virtual_machine_service_pb2.GetVirtualMachineRequest, context: Ctx
    ) -> virtual_machine_pb2.VirtualMachine:
        vm_id = parse_resource_id(request.name, "virtualMachines")
        return convert.vm_to_proto(await self._registry.get_vm(vm_id, principal_of(context)))

    @maps_errors
    async def ResolveExecTarget(
        self, request: registry_service_pb2.ResolveExecTargetRequest, context: Ctx
    ) -> registry_service_pb2.ExecTarget:
        vm_id = parse_resource_id(request.name, "virtualMachines")
        return convert.exec_target_to_proto(await self._registry.resolve_exec_target(vm_id, principal_of(context)))

    @maps_errors
    async def UpdateVirtualMachine(
        self, request: virtual_machine_service_pb2.UpdateVirtualMachineRequest, context: Ctx
    ) -> virtual_machine_pb2.VirtualMachine:
        vm_id = parse_resource_id(request.virtual_machine.name, "virtualMachines")
        paths = list(request.update_mask.paths)
        if paths != ["labels"]:
            raise InvalidArgument(f"update_mask must be ['labels'] (only labels can change), not {paths}", reason="INVALID_UPDATE_MASK")
        vm = await self._registry.update_vm_labels(
            vm_id, principal_of(context), dict(request.virtual_machine.labels), request.virtual_machine.etag
        )
        return convert.vm_to_proto(vm)

    @maps_errors
    async def ListVirtualMachines(
        self, request: virtual_machine_service_pb2.ListVirtualMachinesRequest, context: Ctx
    ) -> virtual_machine_service_pb2.ListVirtualMachinesResponse:
        vms, token = await self._registry.list_vms(
            principal_of(context), request.page_size, request.page_token, request.hypervisor
        )
        return virtual_machine_service_pb2.ListVirtualMachinesResponse(
            virtual_machines=[convert.vm_to_proto(v) for v in vms], next_page_token=token
        )

    @maps_errors
    async def GetHypervisor(
        self, request: hypervisor_service_pb2.GetHypervisorRequest, context: Ctx
    ) -> hypervisor_pb2.Hypervisor:
        principal_of(context)
        return convert.hypervisor_to_proto(await self._registry.get_hypervisor(request.name))

    @maps_errors
    async def ListHypervisors(
        self, request: hypervisor_service_pb2.ListHypervisorsRequest, context: Ctx
    ) -> hypervisor_service_pb2.ListHypervisorsResponse:
        principal_of(context)
        views = await self._registry.list_hypervisors()
        page, token = page_of(views, request.page_size, request.page_token, default_size=1000)
        return hypervisor_service_pb2.ListHypervisorsResponse(
            hypervisors=[convert.hypervisor_to_proto(v) for v in page], next_page_token=token
        )

    @maps_errors
    async def ListNameservers(
        self, request: hypervisor_service_pb2.ListNameserversRequest, context: Ctx
    ) -> hypervisor_service_pb2.ListNameserversResponse:
        principal_of(context)
        found = await self._registry.list_nameservers()
        return hypervisor_service_pb2.ListNameserversResponse(
            nameservers=[convert.nameserver_to_proto(r, d) for r, d in found]
        )

    # --- volumes --------------------------------------------------------------------------

    @maps_errors
    async def CreateVolume(self, request: volume_service_pb2.CreateVolumeRequest, context: Ctx) -> volume_pb2.Volume:
        volume = await self._registry.volumes.create(
            request.volume.title, request.volume.size_gib, principal_of(context), request.request_id
        )
        return convert.volume_to_proto(volume)

    @maps_errors
    async def GetVolume(self, request: volume_service_pb2.GetVolumeRequest, context: Ctx) -> volume_pb2.Volume:
        return convert.volume_to_proto(await self._registry.volumes.get(parse_volume_name(request.name), principal_of(context)))

    @maps_errors
    async def ListVolumes(self, request: volume_service_pb2.ListVolumesRequest, context: Ctx) -> volume_service_pb2.ListVolumesResponse:
        volumes, token = await self._registry.volumes.list_volumes(principal_of(context), request.page_size, request.page_token)
        return volume_service_pb2.ListVolumesResponse(volumes=[convert.volume_to_proto(v) for v in volumes], next_page_token=token)

    @maps_errors
    async def DeleteVolume(self, request: volume_service_pb2.DeleteVolumeRequest, context: Ctx) -> empty_pb2.Empty:
        await self._registry.volumes.delete(parse_volume_name(request.name), principal_of(context))
        return empty_pb2.Empty()

    @maps_errors
    async def OnlineVolume(self, request: volume_service_pb2.OnlineVolumeRequest, context: Ctx) -> volume_pb2.Volume:
        volume = await self._registry.volumes.set_online(parse_volume_name(request.name), principal_of(context), online=True)
        return convert.volume_to_proto(volume)

    @maps_errors
    async def OfflineVolume(self, request: volume_service_pb2.OfflineVolumeRequest, context: Ctx) -> volume_pb2.Volume:
        volume = await self._registry.volumes.set_online(parse_volume_name(request.name), principal_of(context), online=False)
        return convert.volume_to_proto(volume)

    @maps_errors
    async def AttachVolume(self, request: volume_service_pb2.AttachVolumeRequest, context: Ctx) -> operations_pb2.Operation:
        vm_id = parse_resource_id(request.virtual_machine, "virtualMachines")
        view = await self._registry.volumes.attach(parse_volume_name(request.volume), vm_id, request.device, principal_of(context))
        return convert.operation_to_proto(view)

    @maps_errors
    async def DetachVolume(self, request: volume_service_pb2.DetachVolumeRequest, context: Ctx) -> operations_pb2.Operation:
        vm_id = parse_resource_id(request.virtual_machine, "virtualMachines") if request.virtual_machine else ""
        view = await self._registry.volumes.detach(parse_volume_name(request.volume), vm_id, principal_of(context))
        return convert.operation_to_proto(view)

    # --- networks -------------------------------------------------------------------------

    @maps_errors
    async def CreateNetwork(self, request: network_service_pb2.CreateNetworkRequest, context: Ctx) -> network_pb2.Network:
        spec = convert.network_spec_from_proto(request.network)
        return convert.network_to_proto(await self._registry.networks.create(spec, principal_of(context), request.request_id))

    @maps_errors
    async def GetNetwork(self, request: network_service_pb2.GetNetworkRequest, context: Ctx) -> network_pb2.Network:
        return convert.network_to_proto(await self._registry.networks.get(parse_network_name(request.name), principal_of(context)))

    @maps_errors
    async def ListNetworks(self, request: network_service_pb2.ListNetworksRequest, context: Ctx) -> network_service_pb2.ListNetworksResponse:
        networks, token = await self._registry.networks.list_networks(principal_of(context), request.page_size, request.page_token)
        return network_service_pb2.ListNetworksResponse(networks=[convert.network_to_proto(n) for n in networks], next_page_token=token)

    @maps_errors
    async def DeleteNetwork(self, request: network_service_pb2.DeleteNetworkRequest, context: Ctx) -> empty_pb2.Empty:
        await self._registry.networks.delete(parse_network_name(request.name), principal_of(context))
        return empty_pb2.Empty()

    @maps_errors
    async def UpNetwork(self, request: network_service_pb2.UpNetworkRequest, context: Ctx) -> network_pb2.Network:
        network = await self._registry.networks.set_state(parse_network_name(request.name), principal_of(context), up=True)
        return convert.network_to_proto(network)

    @maps_errors
    async def DownNetwork(self, request: network_service_pb2.DownNetworkRequest, context: Ctx) -> network_pb2.Network:
        network = await self._registry.networks.set_state(parse_network_name(request.name), principal_of(context), up=False)
        return convert.network_to_proto(network)

    @maps_errors
    async def CreateNetworkInterface(
        self, request: network_service_pb2.CreateNetworkInterfaceRequest, context: Ctx
    ) -> network_pb2.NetworkInterface:
        wanted = request.network_interface
        vm_id = parse_resource_id(wanted.virtual_machine, "virtualMachines")
        network_id = parse_network_name(wanted.network)
        principal = principal_of(context)
        interface = await self._registry.networks.create_interface(vm_id, network_id, wanted.ip_address, principal, request.request_id)
        return await self._interface_proto(interface)

    @maps_errors
    async def GetNetworkInterface(
        self, request: network_service_pb2.GetNetworkInterfaceRequest, context: Ctx
    ) -> network_pb2.NetworkInterface:
        interface = await self._registry.networks.get_interface(parse_interface_name(request.name), principal_of(context))
        return await self._interface_proto(interface)

    @maps_errors
    async def ListNetworkInterfaces(
        self, request: network_service_pb2.ListNetworkInterfacesRequest, context: Ctx
    ) -> network_service_pb2.ListNetworkInterfacesResponse:
        network_id = parse_network_name(request.network) if request.network else ""
        vm_id = parse_resource_id(request.virtual_machine, "virtualMachines") if request.virtual_machine else ""
        interfaces, token = await self._registry.networks.list_interfaces(
            principal_of(context), request.page_size, request.page_token, network_id, vm_id
        )
        states = await self._registry.networks.network_states({i.network_id for i in interfaces})
        return network_service_pb2.ListNetworkInterfacesResponse(
            network_interfaces=[convert.interface_to_proto(i, states[i.network_id]) for i in interfaces], next_page_token=token
        )

    @maps_errors
    async def DeleteNetworkInterface(self, request: network_service_pb2.DeleteNetworkInterfaceRequest, context: Ctx) -> empty_pb2.Empty:
        await self._registry.networks.delete_interface(parse_interface_name(request.name), principal_of(context))
        return empty_pb2.Empty()

    async def _interface_proto(self, interface: NetworkInterfaceRecord) -> network_pb2.NetworkInterface:
        states = await self._registry.networks.network_states({interface.network_id})
        return convert.interface_to_proto(interface, states[interface.network_id])

    @maps_errors
    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: Ctx
    ) -> operations_pb2.Operation:
        return convert.operation_to_proto(await self._registry.operations.get(request.name, principal_of(context)))

    @maps_errors
    async def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: Ctx
    ) -> operations_pb2.Operation:
        timeout = request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else 30.0
        view = await self._registry.operations.wait(request.name, principal_of(context), timeout)
        return convert.operation_to_proto(view)
