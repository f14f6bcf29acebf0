"""OCCI's CloudBackend over the gateway core: every method is one or a few public wnodes.v1
calls (``core.call(principal, "<Method>", request)``), with the caller's Principal, so that OCCI
goes through the same authorisation as every other way in and ownership is enforced where it
always is: in the nameservers. No farm rule is repeated here: what a state forbids, which
hypervisor a compute with storage must run on, which device a disk gets, the nameservers decide.

OCCI answers synchronously, the API partly with operations. Where the answer depends on the
outcome (attach, detach, a power action, save, delete), the backend waits on the operation the
way the gateway's Operations service does (WaitOperation on the nameservers), up to
``operation_wait`` seconds; an operation that failed raises its error, one still running
answers with the state so far (a compute still "inactive: starting", a link "inactive:
attaching"). Errors keep their code and message (``downstream_error``); http_errors.py maps the
code to the HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TypeVar

from google.longrunning import operations_pb2
from google.protobuf import duration_pb2, empty_pb2
from google.protobuf.message import Message

from services.common.errors import InvalidArgument, NotFound, Unavailable, VirtualMachineNotFound
from services.common.grpc_errors import status_to_error
from services.common.identity import Principal
from services.gateway.core import GatewayCore
from services.gateway.occi import proto_convert as pc
from services.gateway.occi.cloud_backend import (
    Compute,
    ComputeAction,
    ComputeSpec,
    ImageTemplate,
    Network,
    NetworkInterface,
    NetworkSpec,
    Storage,
    StorageLink,
    StorageSpec,
)
from wnodes.v1 import (
    image_pb2,
    image_service_pb2,
    network_pb2,
    network_service_pb2,
    virtual_machine_pb2,
    virtual_machine_service_pb2,
    volume_pb2,
    volume_service_pb2,
)

LOG = logging.getLogger(__name__)
PAGE = 1000
WAIT_CHUNK = 30.0
"""Seconds of one WaitOperation call (the nameservers hold it until the operation is done)."""
M = TypeVar("M", bound=Message)
VM = virtual_machine_pb2.VirtualMachine
vms = virtual_machine_service_pb2
_NAMES_FROM_ATTRIBUTES = frozenset({"CreateVirtualMachine", "CreateVolume", "CreateNetwork", "SaveVirtualMachine"})
_ALLOCATIONS = {"": network_pb2.Network.Allocation.DYNAMIC, "dynamic": network_pb2.Network.Allocation.DYNAMIC,
                "static": network_pb2.Network.Allocation.STATIC}


class CoreCloudBackend:
    def __init__(self, core: GatewayCore, operation_wait: float = 60.0) -> None:
        self._core = core
        self._wait_for = operation_wait
        """Seconds a request waits for the operation it started before answering with the state so far."""

    # --- plumbing --------------------------------------------------------------------------

    async def _call(self, principal: Principal, method: str, request: Message, response_type: type[M]) -> M:
        try:
            return await self._core.call_as(principal, method, request, response_type)
        except InvalidArgument as exc:
            # OCCI locations are opaque: one whose id the API cannot even parse names nothing
            # (404), as a well-formed id of nothing does. Names OCCI makes from attributes
            # (an image to save as, a create's fields) keep their 400.
            if exc.reason == "INVALID_NAME" and method not in _NAMES_FROM_ATTRIBUTES:
                raise NotFound(exc.message) from exc
            raise

    async def _wait(self, principal: Principal, op: operations_pb2.Operation, seconds: float | None = None) -> operations_pb2.Operation:
        """The operation once done, or as it stands after ``seconds``; its error is raised."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._wait_for if seconds is None else seconds)
        while not op.done and (left := deadline - loop.time()) > 0:
            chunk = min(left, WAIT_CHUNK)
            request = operations_pb2.WaitOperationRequest(name=op.name, timeout=duration_pb2.Duration(seconds=max(1, round(chunk))))
            op = await self._call(principal, "WaitOperation", request, operations_pb2.Operation)
        if op.done and op.HasField("error"):
            raise status_to_error(op.error)
        return op

    @staticmethod
    def _payload(op: operations_pb2.Operation, cls: type[M]) -> M | None:
        """The operation's response once done, else its metadata (the resource so far)."""
        packed = op.response if op.done and op.HasField("response") else op.metadata
        out = cls()
        return out if packed.Is(cls.DESCRIPTOR) and packed.Unpack(out) else None

    # --- images ----------------------------------------------------------------------------

    async def list_images(self, principal: Principal) -> list[ImageTemplate]:
        latest: dict[str, image_pb2.ImageVersion] = {}
        token = ""
        while True:
            request = image_service_pb2.ListImageVersionsRequest(page_size=PAGE, page_token=token)
            response = await self._call(principal, "ListImageVersions", request, image_service_pb2.ListImageVersionsResponse)
            for v in response.image_versions:
                if v.state != image_pb2.ImageVersion.State.AVAILABLE:
                    continue
                image = v.image.removeprefix("images/")
                if image not in latest or v.version > latest[image].version:
                    latest[image] = v
            token = response.next_page_token
            if not token:
                break
        return [ImageTemplate(name, v.description or f"image {name}") for name, v in sorted(latest.items())]

    # --- compute ---------------------------------------------------------------------------

    async def create_compute(self, principal: Principal, spec: ComputeSpec) -> Compute:
        """Storage linked at create is named in the VM's volumes: the nameservers check it is
        free and pin the VM to the hypervisor holding its data; OCCI attaches it afterwards."""
        labels = {k: v for k, v in ((pc.TITLE_LABEL, spec.title), (pc.SUMMARY_LABEL, spec.summary),
                                    (pc.RESOURCE_TPL_LABEL, spec.resource_tpl)) if v}
        volumes = [virtual_machine_pb2.VolumeAttachment(volume=f"volumes/{storage_id}") for storage_id in spec.storage_ids]
        vm = VM(image=f"images/{spec.image}", vcpu_count=spec.cores, memory_mib=spec.memory_mib, labels=labels, volumes=volumes)
        request = vms.CreateVirtualMachineRequest(virtual_machine=vm, request_id=uuid.uuid4().hex,
                                                  ssh_public_keys=spec.ssh_public_keys, user_data=spec.user_data)
        op = await self._call(principal, "CreateVirtualMachine", request, operations_pb2.Operation)
        created = self._payload(op, VM)
        if created is None:
            raise Unavailable(f"{op.name} carries no virtual machine")
        return pc.compute_from_vm(created)

    async def _vm(self, principal: Principal, compute_id: str) -> virtual_machine_pb2.VirtualMachine:
        request = vms.GetVirtualMachineRequest(name=f"virtualMachines/{compute_id}")
        vm = await self._call(principal, "GetVirtualMachine", request, VM)
        if pc.is_deleting(vm):  # for OCCI a deleted compute is gone at once
            raise VirtualMachineNotFound(f"virtualMachines/{compute_id} does not exist")
        return vm

    async def _settled_vm(self, principal: Principal, compute_id: str) -> virtual_machine_pb2.VirtualMachine:
        """The VM once it is past its boot (power actions and disks need a running, suspended
        or stopped VM), polled for up to ``operation_wait`` seconds: the OCCI request does not
        know the create's operation, only the VM."""
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + self._wait_for, 0.02
        while (vm := await self._vm(principal, compute_id)).state in pc.SETTLING and loop.time() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
        return vm

    async def get_compute(self, principal: Principal, compute_id: str) -> Compute:
        return pc.compute_from_vm(await self._vm(principal, compute_id))

    async def list_computes(self, principal: Principal) -> list[Compute]:
        return [pc.compute_from_vm(vm) for vm in await self._list_vms(principal)]

    async def _list_vms(self, principal: Principal) -> list[virtual_machine_pb2.VirtualMachine]:
        out, token = [], ""
        while True:
            request = vms.ListVirtualMachinesRequest(page_size=PAGE, page_token=token)
            response = await self._call(principal, "ListVirtualMachines", request, vms.ListVirtualMachinesResponse)
            out += [vm for vm in response.virtual_machines if not pc.is_deleting(vm)]
            token = response.next_page_token
            if not token:
                return out

    async def update_compute(self, principal: Principal, compute_id: str, title: str, summary: str) -> Compute:
        vm = await self._vm(principal, compute_id)
        labels = dict(vm.labels)
        for key, value in ((pc.TITLE_LABEL, title), (pc.SUMMARY_LABEL, summary)):
            if value:
                labels[key] = value
            else:
                labels.pop(key, None)
        update = VM(name=vm.name, labels=labels, etag=vm.etag)
        request = vms.UpdateVirtualMachineRequest(virtual_machine=update)
        request.update_mask.paths.append("labels")
        return pc.compute_from_vm(await self._call(principal, "UpdateVirtualMachine", request, VM))

    async def delete_compute(self, principal: Principal, compute_id: str) -> None:
        """Waits for the teardown, so that its storage is detached and free when this returns."""
        vm = await self._vm(principal, compute_id)
        request = vms.DeleteVirtualMachineRequest(name=vm.name, request_id=uuid.uuid4().hex)
        op = await self._call(principal, "DeleteVirtualMachine", request, operations_pb2.Operation)
        try:
            await self._wait(principal, op)
        except NotFound:
            pass  # gone already: that is what was asked

    async def compute_action(self, principal: Principal, compute_id: str, action: ComputeAction) -> Compute:
        """Start also resumes a suspended compute (the API's StartVirtualMachine does that). OCCI
        has no "booting" state, so an action on a compute still starting waits for its boot (up
        to ``operation_wait``; after that the API's FAILED_PRECONDITION says it is starting)."""
        vm = await self._settled_vm(principal, compute_id)
        if action == "start":
            started = self._call(principal, "StartVirtualMachine", vms.StartVirtualMachineRequest(name=vm.name), operations_pb2.Operation)
        elif action == "stop":
            started = self._call(principal, "StopVirtualMachine", vms.StopVirtualMachineRequest(name=vm.name), operations_pb2.Operation)
        elif action == "restart":
            started = self._call(principal, "RestartVirtualMachine", vms.RestartVirtualMachineRequest(name=vm.name), operations_pb2.Operation)
        else:
            started = self._call(principal, "SuspendVirtualMachine", vms.SuspendVirtualMachineRequest(name=vm.name), operations_pb2.Operation)
        op = await self._wait(principal, await started)
        changed = self._payload(op, VM)
        return pc.compute_from_vm(changed) if changed is not None else await self.get_compute(principal, compute_id)

    async def save_compute(self, principal: Principal, compute_id: str, image: str) -> ImageTemplate:
        vm = await self._vm(principal, compute_id)
        request = vms.SaveVirtualMachineRequest(name=vm.name, image_name=image)
        op = await self._wait(principal, await self._call(principal, "SaveVirtualMachine", request, operations_pb2.Operation))
        if not op.done:
            return ImageTemplate(image, f"being saved from {vm.name} ({op.name})")
        version = self._payload(op, image_pb2.ImageVersion)
        return ImageTemplate(image, version.description if version is not None and version.description else f"saved from {vm.name}")

    # --- storage (VolumeService) -----------------------------------------------------------

    async def create_storage(self, principal: Principal, spec: StorageSpec) -> Storage:
        request = volume_service_pb2.CreateVolumeRequest(volume=volume_pb2.Volume(title=spec.title, size_gib=spec.size_gib),
                                                         request_id=uuid.uuid4().hex)
        return pc.storage_from_volume(await self._call(principal, "CreateVolume", request, volume_pb2.Volume))

    async def _volume(self, principal: Principal, storage_id: str) -> volume_pb2.Volume:
        request = volume_service_pb2.GetVolumeRequest(name=f"volumes/{storage_id}")
        return await self._call(principal, "GetVolume", request, volume_pb2.Volume)

    async def get_storage(self, principal: Principal, storage_id: str) -> Storage:
        return pc.storage_from_volume(await self._volume(principal, storage_id))

    async def _volumes(self, principal: Principal) -> list[volume_pb2.Volume]:
        out: list[volume_pb2.Volume] = []
        token = ""
        while True:
            request = volume_service_pb2.ListVolumesRequest(page_size=PAGE, page_token=token)
            response = await self._call(principal, "ListVolumes", request, volume_service_pb2.ListVolumesResponse)
            out += response.volumes
            token = response.next_page_token
            if not token:
                return out

    async def list_storages(self, principal: Principal) -> list[Storage]:
        return [pc.storage_from_volume(v) for v in await self._volumes(principal)]

    async def delete_storage(self, principal: Principal, storage_id: str) -> None:
        await self._call(principal, "DeleteVolume", volume_service_pb2.DeleteVolumeRequest(name=f"volumes/{storage_id}"), empty_pb2.Empty)

    async def set_storage_online(self, principal: Principal, storage_id: str, online: bool) -> Storage:
        name = f"volumes/{storage_id}"
        if online:
            volume = await self._call(principal, "OnlineVolume", volume_service_pb2.OnlineVolumeRequest(name=name), volume_pb2.Volume)
        else:
            volume = await self._call(principal, "OfflineVolume", volume_service_pb2.OfflineVolumeRequest(name=name), volume_pb2.Volume)
        return pc.storage_from_volume(volume)

    # --- network (NetworkService) ----------------------------------------------------------

    async def create_network(self, principal: Principal, spec: NetworkSpec) -> Network:
        if spec.allocation not in _ALLOCATIONS:
            raise InvalidArgument(f"occi.network.allocation must be dynamic or static, not {spec.allocation!r}", reason="INVALID_ALLOCATION")
        network = network_pb2.Network(title=spec.title, vlan=spec.vlan or 0, cidr=spec.address, gateway=spec.gateway,
                                      allocation=_ALLOCATIONS[spec.allocation])
        request = network_service_pb2.CreateNetworkRequest(network=network, request_id=uuid.uuid4().hex)
        return pc.network_from_proto(await self._call(principal, "CreateNetwork", request, network_pb2.Network))

    async def get_network(self, principal: Principal, network_id: str) -> Network:
        request = network_service_pb2.GetNetworkRequest(name=f"networks/{network_id}")
        return pc.network_from_proto(await self._call(principal, "GetNetwork", request, network_pb2.Network))

    async def list_networks(self, principal: Principal) -> list[Network]:
        out: list[Network] = []
        token = ""
        while True:
            request = network_service_pb2.ListNetworksRequest(page_size=PAGE, page_token=token)
            response = await self._call(principal, "ListNetworks", request, network_service_pb2.ListNetworksResponse)
            out += [pc.network_from_proto(n) for n in response.networks]
            token = response.next_page_token
            if not token:
                return out

    async def delete_network(self, principal: Principal, network_id: str) -> None:
        request = network_service_pb2.DeleteNetworkRequest(name=f"networks/{network_id}")
        await self._call(principal, "DeleteNetwork", request, empty_pb2.Empty)

    async def set_network_up(self, principal: Principal, network_id: str, up: bool) -> Network:
        name = f"networks/{network_id}"
        if up:
            network = await self._call(principal, "UpNetwork", network_service_pb2.UpNetworkRequest(name=name), network_pb2.Network)
        else:
            network = await self._call(principal, "DownNetwork", network_service_pb2.DownNetworkRequest(name=name), network_pb2.Network)
        return pc.network_from_proto(network)

    # --- links -----------------------------------------------------------------------------

    async def attach_storage(self, principal: Principal, compute_id: str, storage_id: str, device: str = "") -> StorageLink:
        vm = await self._settled_vm(principal, compute_id)
        request = volume_service_pb2.AttachVolumeRequest(volume=f"volumes/{storage_id}", virtual_machine=vm.name, device=device)
        op = await self._wait(principal, await self._call(principal, "AttachVolume", request, operations_pb2.Operation))
        volume = self._payload(op, volume_pb2.Volume) or await self._volume(principal, storage_id)
        for link in pc.storage_links_of(volume):
            if link.compute_id == compute_id:
                return link
        raise Unavailable(f"{volume.name} was attached to {vm.name}, then detached again before this answer")

    async def list_storage_links(self, principal: Principal) -> list[StorageLink]:
        return [link for volume in await self._volumes(principal) for link in pc.storage_links_of(volume)]

    async def detach_storage(self, principal: Principal, link_id: str) -> None:
        compute_id, _, storage_id = link_id.partition(".")
        try:
            volume = await self._volume(principal, storage_id)
        except NotFound as exc:
            raise NotFound(f"storage link {link_id} does not exist") from exc
        if link_id not in {link.id for link in pc.storage_links_of(volume)}:
            raise NotFound(f"storage link {link_id} does not exist")
        request = volume_service_pb2.DetachVolumeRequest(volume=volume.name, virtual_machine=f"virtualMachines/{compute_id}")
        await self._wait(principal, await self._call(principal, "DetachVolume", request, operations_pb2.Operation))

    async def create_network_interface(
        self, principal: Principal, compute_id: str, network_id: str, address: str = ""
    ) -> NetworkInterface:
        vm = await self._vm(principal, compute_id)
        nic = network_pb2.NetworkInterface(virtual_machine=vm.name, network=f"networks/{network_id}", ip_address=address)
        request = network_service_pb2.CreateNetworkInterfaceRequest(network_interface=nic, request_id=uuid.uuid4().hex)
        created = await self._call(principal, "CreateNetworkInterface", request, network_pb2.NetworkInterface)
        return next(n for n in await self._interfaces(principal, vm.name) if n.id == pc.short_id(created.name))

    async def list_network_interfaces(self, principal: Principal) -> list[NetworkInterface]:
        return await self._interfaces(principal)

    async def _interfaces(self, principal: Principal, vm_name: str = "") -> list[NetworkInterface]:
        found: list[network_pb2.NetworkInterface] = []
        token = ""
        while True:
            request = network_service_pb2.ListNetworkInterfacesRequest(page_size=PAGE, page_token=token, virtual_machine=vm_name)
            response = await self._call(principal, "ListNetworkInterfaces", request, network_service_pb2.ListNetworkInterfacesResponse)
            found += response.network_interfaces
            token = response.next_page_token
            if not token:
                break
        networks = {n.id: n for n in await self.list_networks(principal)} if found else {}
        found.sort(key=lambda n: (n.virtual_machine, n.create_time.ToNanoseconds(), n.name))
        per_vm: dict[str, int] = {}
        out = []
        for nic in found:
            index = per_vm[nic.virtual_machine] = per_vm.get(nic.virtual_machine, -1) + 1
            out.append(pc.interface_from_proto(nic, index, networks.get(pc.short_id(nic.network))))
        return out

    async def delete_network_interface(self, principal: Principal, interface_id: str) -> None:
        request = network_service_pb2.DeleteNetworkInterfaceRequest(name=f"networkInterfaces/{interface_id}")
        await self._call(principal, "DeleteNetworkInterface", request, empty_pb2.Empty)
