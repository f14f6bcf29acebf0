"""Protobuf <-> registry records: the only place where the nameserver's protos meet its domain."""

from __future__ import annotations

import base64

from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2

from services.common.errors import InvalidArgument
from services.common.grpc_errors import error_to_status
from services.common.image_proto import image_to_proto
from services.common.records import (
    HypervisorRecord,
    NameserverRecord,
    NetworkInterfaceRecord,
    NetworkRecord,
    VmRecord,
    VolumeRecord,
)
from services.nameserver.exec_target import ExecTarget
from services.nameserver.networks import NetworkSpec
from services.nameserver.operations import OperationView
from services.nameserver.power import POWER_KINDS
from services.nameserver.registry import HypervisorView, VmSpec
from wnodes.nameserver.v1 import registry_service_pb2
from wnodes.v1 import common_pb2, hypervisor_pb2, network_pb2, virtual_machine_pb2, virtual_machine_service_pb2, volume_pb2


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def network_spec_from_proto(network: network_pb2.Network) -> NetworkSpec:
    allocation = network_pb2.Network.Allocation.Name(network.allocation) if network.allocation else ""
    return NetworkSpec(title=network.title, vlan=network.vlan, cidr=network.cidr, gateway=network.gateway, allocation=allocation)


def spec_from_request(request: virtual_machine_service_pb2.CreateVirtualMachineRequest) -> VmSpec:
    vm = request.virtual_machine
    if request.user_data and vm.user_data and request.user_data != vm.user_data:
        raise InvalidArgument(
            "user_data is given twice with different bytes (in the request and in virtual_machine): give it once",
            reason="CONFLICTING_USER_DATA",
        )
    return VmSpec(
        image=vm.image,
        vcpu_count=vm.vcpu_count,
        memory_mib=vm.memory_mib,
        labels=dict(vm.labels),
        user_data=request.user_data or vm.user_data,
        bandwidth_mbps=vm.bandwidth_mbps,
        pinned_hypervisor=vm.pinned_hypervisor,
        ssh_public_keys=list(request.ssh_public_keys),
        volumes=[v.volume for v in vm.volumes],
    )


def vm_to_proto(vm: VmRecord) -> virtual_machine_pb2.VirtualMachine:
    return virtual_machine_pb2.VirtualMachine(
        name=vm.name,
        image=vm.image,
        image_version=vm.image_version,
        vcpu_count=vm.vcpu_count,
        memory_mib=vm.memory_mib,
        state=virtual_machine_pb2.VirtualMachine.State.Value(vm.state.value),
        state_message=vm.state_message,
        hypervisor=f"hypervisors/{vm.hypervisor}" if vm.hypervisor else "",
        hostname=vm.hostname,
        mac_address=vm.mac_address,
        owner=common_pb2.Owner(user=vm.owner_user, vo=vm.owner_vo),
        labels={k: v for k, v in vm.labels.items() if not k.startswith("wnodes.")},
        bandwidth_mbps=vm.bandwidth_mbps,
        user_data=base64.b64decode(vm.user_data) if vm.user_data else b"",
        pinned_hypervisor=f"hypervisors/{vm.pinned_hypervisor}" if vm.pinned_hypervisor else "",
        virtualization=vm.virtualization,
        create_time=_ts(vm.create_time),
        update_time=_ts(vm.update_time),
        boot_seconds=vm.boot_seconds,
        etag=str(vm.revision) if vm.revision else "",
        ssh_endpoint=vm.ssh_endpoint,
        volumes=[
            virtual_machine_pb2.VolumeAttachment(volume=f"volumes/{e['volume']}", device=e["device"])
            for e in vm.volumes
            if e.get("state") != "ATTACHING"
        ],
        networks=[
            virtual_machine_pb2.NetworkAttachment(
                network=f"networks/{n['network']}", mac_address=str(n["mac"]), ip_address=str(n["ip"]), vlan=int(n["vlan"])
            )
            for n in vm.networks
        ],
    )


def network_to_proto(network: NetworkRecord) -> network_pb2.Network:
    return network_pb2.Network(
        name=network.name,
        title=network.title,
        vlan=network.vlan,
        cidr=network.cidr,
        gateway=network.gateway,
        allocation=network_pb2.Network.Allocation.Value(network.allocation),
        state=network_pb2.Network.State.Value(network.state),
        owner=common_pb2.Owner(user=network.owner_user, vo=network.owner_vo),
        interface_count=network.interface_count,
        create_time=_ts(network.create_time),
        update_time=_ts(network.update_time),
    )


def interface_to_proto(interface: NetworkInterfaceRecord, network_state: str) -> network_pb2.NetworkInterface:
    return network_pb2.NetworkInterface(
        name=interface.name,
        virtual_machine=f"virtualMachines/{interface.vm_id}",
        network=f"networks/{interface.network_id}",
        mac_address=interface.mac_address,
        ip_address=interface.ip_address,
        state=network_pb2.NetworkInterface.State.Value(network_state),
        owner=common_pb2.Owner(user=interface.owner_user, vo=interface.owner_vo),
        create_time=_ts(interface.create_time),
    )


def volume_to_proto(volume: VolumeRecord) -> volume_pb2.Volume:
    attachments = []
    if volume.attachment:
        attachments.append(volume_pb2.Volume.Attachment(
            virtual_machine=f"virtualMachines/{volume.attachment['vm']}", device=volume.attachment.get("device", ""),
            state=volume_pb2.Volume.Attachment.State.Value(volume.attachment.get("state", "ATTACHED")),
        ))  # fmt: skip
    return volume_pb2.Volume(
        name=volume.name,
        title=volume.title,
        size_gib=volume.size_gib,
        state=volume_pb2.Volume.State.Value(volume.state),
        state_message=volume.state_message,
        owner=common_pb2.Owner(user=volume.owner_user, vo=volume.owner_vo),
        attachments=attachments,
        hypervisor=f"hypervisors/{volume.hypervisor}" if volume.hypervisor else "",
        create_time=_ts(volume.create_time),
        update_time=_ts(volume.update_time),
    )


def operation_to_proto(view: OperationView) -> operations_pb2.Operation:
    op = operations_pb2.Operation(name=view.op.name, done=view.done)
    if view.volume is not None:
        op.metadata.Pack(volume_to_proto(view.volume))
    elif view.vm is not None:
        op.metadata.Pack(vm_to_proto(view.vm))
    if view.done:
        if view.error is not None:
            op.error.CopyFrom(error_to_status(view.error))
        elif view.image is not None:
            op.response.Pack(image_to_proto(view.image))
        elif view.volume is not None:
            op.response.Pack(volume_to_proto(view.volume))
        elif view.vm is not None and (view.op.kind == "create" or view.op.kind in POWER_KINDS):
            op.response.Pack(vm_to_proto(view.vm))
        else:
            packed = any_pb2.Any()
            packed.Pack(empty_pb2.Empty())
            op.response.CopyFrom(packed)
    return op


def hypervisor_to_proto(view: HypervisorView) -> hypervisor_pb2.Hypervisor:
    rec = view.record or HypervisorRecord(name=view.name, endpoint="", vcpu_count=0, memory_mib=0, virtualization="")
    return hypervisor_pb2.Hypervisor(
        name=f"hypervisors/{view.name}",
        virtualization=rec.virtualization,
        vcpu_count=rec.vcpu_count,
        memory_mib=rec.memory_mib,
        vcpus_used=view.usage.vcpus_used,
        memory_mib_used=view.usage.memory_mib_used,
        vm_count=len(view.usage.vms),
        state=hypervisor_pb2.Hypervisor.State.UP if view.up else hypervisor_pb2.Hypervisor.State.DOWN,
        cached_images=rec.cached_images,
        endpoint=rec.endpoint,
        register_time=_ts(rec.register_time) if view.record else None,
    )


def exec_target_to_proto(target: ExecTarget) -> registry_service_pb2.ExecTarget:
    return registry_service_pb2.ExecTarget(
        vm_id=target.vm_id, hypervisor=f"hypervisors/{target.hypervisor}", agent_endpoint=target.agent_endpoint
    )


def nameserver_to_proto(rec: NameserverRecord, duties: list[str]) -> hypervisor_pb2.Nameserver:
    return hypervisor_pb2.Nameserver(
        name=f"nameservers/{rec.id}", endpoint=rec.endpoint, duties=duties, start_time=_ts(rec.start_time)
    )
