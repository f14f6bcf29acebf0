"""The CloudBackend over the gateway's own channels: every method is one or a few of the same
protobuf calls the gRPC servicer forwards (``call(principal, backends.registry.<Method>, ...)``),
with the caller's Principal, so ownership is enforced where it always is: in the nameservers.

Compute create/get/list/update/delete and the image catalogue use what wnodes.v1 has today. The
compute actions, save, volumes, networks and interfaces are written against the API that branch
``cloud`` adds (VirtualMachineService Stop/Start/Restart/Suspend/Resume/SaveVirtualMachine,
VolumeService, NetworkService). Until that API is in the generated stubs, ``_pending`` finds no
method and the call answers UNIMPLEMENTED (HTTP 501) with the name of what is missing.
"""

from __future__ import annotations

import importlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import grpc
from google.longrunning import operations_pb2
from google.protobuf.message import Message

from services.common.errors import NotFound, Unavailable, Unimplemented, VirtualMachineNotFound
from services.common.grpc_errors import downstream_error
from services.common.identity import Principal
from services.gateway.backends import Backends, call
from services.gateway.occi import proto_convert as pc
from services.gateway.occi.backend import (
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
    storage_link_id,
)
from wnodes.v1 import image_pb2, image_service_pb2, virtual_machine_pb2, virtual_machine_service_pb2

LOG = logging.getLogger(__name__)
PAGE = 1000
_ACTION_METHODS = {"start": "StartVirtualMachine", "stop": "StopVirtualMachine", "restart": "RestartVirtualMachine",
                   "suspend": "SuspendVirtualMachine"}


def _optional_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _make(cls: type[Message], **fields: Any) -> Any:
    """A request with the fields its message has (names guessed from branch `cloud`'s API are
    set only if they exist, so a renamed optional field cannot break the call)."""
    known = cls.DESCRIPTOR.fields_by_name
    msg = cls()
    for key, value in fields.items():
        if key not in known or value is None:
            continue
        target = getattr(msg, key)
        if isinstance(value, Message):
            target.CopyFrom(value)
        elif isinstance(value, list):
            target.extend(value)
        else:
            setattr(msg, key, value)
    return msg


def _unpack(result: Any, cls: type[Message]) -> Any | None:
    """The resource a call returned: itself, or an Operation's response or metadata."""
    if isinstance(result, cls):
        return result
    if isinstance(result, operations_pb2.Operation):
        for packed in (result.response, result.metadata):
            msg = cls()
            if packed.Is(cls.DESCRIPTOR) and packed.Unpack(msg):
                return msg
    return None


class GrpcCloudBackend:
    def __init__(self, backends: Backends) -> None:
        self._b = backends
        self._volume = _optional_module("wnodes.v1.volume_pb2")
        self._volume_service = _optional_module("wnodes.v1.volume_service_pb2")
        self._network = _optional_module("wnodes.v1.network_pb2")
        self._network_service = _optional_module("wnodes.v1.network_service_pb2")
        missing = [m for m, mod in (("volume", self._volume_service), ("network", self._network_service)) if mod is None]
        if missing:
            LOG.warning("OCCI: wnodes.v1 has no %s service yet; storage and network requests answer 501", " or ".join(missing))

    # --- plumbing --------------------------------------------------------------------------

    async def _call(self, principal: Principal, method: str, request: Message, service: Any = None) -> Any:
        fn: Callable[..., Awaitable[Any]] | None = getattr(service or self._b.registry, method, None)
        if fn is None:
            raise Unimplemented(f"this deployment does not offer {method} yet", reason="OCCI_BACKEND_PENDING",
                                metadata={"method": method})
        try:
            return await call(principal, fn, request)
        except grpc.aio.AioRpcError as err:
            raise downstream_error(err) from err

    def _pending(self, module: ModuleType | None, message: str) -> type[Message]:
        cls = getattr(module, message, None) if module is not None else None
        if cls is None:
            raise Unimplemented(f"this deployment's API has no {message} yet", reason="OCCI_BACKEND_PENDING",
                                metadata={"message": message})
        return cls  # type: ignore[no-any-return]

    # --- images ----------------------------------------------------------------------------

    async def list_images(self, principal: Principal) -> list[ImageTemplate]:
        latest: dict[str, image_pb2.ImageVersion] = {}
        token = ""
        while True:
            request = image_service_pb2.ListImageVersionsRequest(page_size=PAGE, page_token=token)
            response = await self._call(principal, "ListImageVersions", request, self._b.imagestore)
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
        labels = {k: v for k, v in ((pc.TITLE_LABEL, spec.title), (pc.SUMMARY_LABEL, spec.summary),
                                    (pc.RESOURCE_TPL_LABEL, spec.resource_tpl)) if v}
        vm = virtual_machine_pb2.VirtualMachine(image=f"images/{spec.image}", vcpu_count=spec.cores, memory_mib=spec.memory_mib,
                                                labels=labels)
        request = virtual_machine_service_pb2.CreateVirtualMachineRequest(virtual_machine=vm, request_id=uuid.uuid4().hex)
        # ssh_public_keys and user_data arrive with branch `cloud`: set through the descriptor,
        # so this reads the same before and after (and mypy sees no attribute that may not exist).
        fields = request.DESCRIPTOR.fields_by_name
        if spec.ssh_public_keys:
            if "ssh_public_keys" not in fields:
                raise Unimplemented("this deployment cannot install SSH keys yet (CreateVirtualMachineRequest.ssh_public_keys)",
                                    reason="OCCI_BACKEND_PENDING")
            keys_field = "ssh_public_keys"
            getattr(request, keys_field).extend(spec.ssh_public_keys)
        if spec.user_data:
            if "user_data" in fields:
                data_field = "user_data"
                setattr(request, data_field, spec.user_data)
            else:
                request.virtual_machine.user_data = spec.user_data
        op = await self._call(principal, "CreateVirtualMachine", request)
        created = _unpack(op, virtual_machine_pb2.VirtualMachine)
        if created is None:
            raise Unavailable(f"{op.name} carries no virtual machine")
        return pc.compute_from_vm(created)

    async def _vm(self, principal: Principal, compute_id: str) -> virtual_machine_pb2.VirtualMachine:
        request = virtual_machine_service_pb2.GetVirtualMachineRequest(name=f"virtualMachines/{compute_id}")
        vm: virtual_machine_pb2.VirtualMachine = await self._call(principal, "GetVirtualMachine", request)
        if pc.is_deleting(vm):  # for OCCI a deleted compute is gone at once
            raise VirtualMachineNotFound(f"virtualMachines/{compute_id} does not exist")
        return vm

    async def get_compute(self, principal: Principal, compute_id: str) -> Compute:
        return pc.compute_from_vm(await self._vm(principal, compute_id))

    async def list_computes(self, principal: Principal) -> list[Compute]:
        out, token = [], ""
        while True:
            request = virtual_machine_service_pb2.ListVirtualMachinesRequest(page_size=PAGE, page_token=token)
            response = await self._call(principal, "ListVirtualMachines", request)
            out += [pc.compute_from_vm(vm) for vm in response.virtual_machines if not pc.is_deleting(vm)]
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
        update = virtual_machine_pb2.VirtualMachine(name=vm.name, labels=labels, etag=vm.etag)
        request = virtual_machine_service_pb2.UpdateVirtualMachineRequest(virtual_machine=update)
        request.update_mask.paths.append("labels")
        return pc.compute_from_vm(await self._call(principal, "UpdateVirtualMachine", request))

    async def delete_compute(self, principal: Principal, compute_id: str) -> None:
        vm = await self._vm(principal, compute_id)
        request = virtual_machine_service_pb2.DeleteVirtualMachineRequest(name=vm.name, request_id=uuid.uuid4().hex)
        await self._call(principal, "DeleteVirtualMachine", request)

    async def compute_action(self, principal: Principal, compute_id: str, action: ComputeAction) -> Compute:
        method = _ACTION_METHODS[action]
        vm = await self._vm(principal, compute_id)
        if action == "start" and pc.enum_name(vm, "state") == "SUSPENDED":
            method = "ResumeVirtualMachine"  # OCCI has no resume: start brings a suspended compute back
        cls = self._pending(virtual_machine_service_pb2, f"{method}Request")
        result = await self._call(principal, method, _make(cls, name=vm.name, request_id=uuid.uuid4().hex))
        changed = _unpack(result, virtual_machine_pb2.VirtualMachine)
        return pc.compute_from_vm(changed) if changed is not None else await self.get_compute(principal, compute_id)

    async def save_compute(self, principal: Principal, compute_id: str, image: str) -> ImageTemplate:
        vm = await self._vm(principal, compute_id)
        cls = self._pending(virtual_machine_service_pb2, "SaveVirtualMachineRequest")
        result = await self._call(principal, "SaveVirtualMachine", _make(cls, name=vm.name, image_name=image))
        version = _unpack(result, image_pb2.ImageVersion)
        return ImageTemplate(image, version.description if version is not None else f"saved from {vm.name}")

    # --- storage (VolumeService, branch `cloud`) -------------------------------------------

    async def create_storage(self, principal: Principal, spec: StorageSpec) -> Storage:
        volume = _make(self._pending(self._volume, "Volume"), title=spec.title, size_gib=spec.size_gib)
        request = _make(self._pending(self._volume_service, "CreateVolumeRequest"), volume=volume, request_id=uuid.uuid4().hex)
        created = _unpack(await self._call(principal, "CreateVolume", request), type(volume))
        if created is None:
            raise Unavailable("CreateVolume returned no volume")
        return pc.storage_from_volume(created)

    async def _volume_proto(self, principal: Principal, storage_id: str) -> Any:
        request = _make(self._pending(self._volume_service, "GetVolumeRequest"), name=f"volumes/{storage_id}")
        return await self._call(principal, "GetVolume", request)

    async def get_storage(self, principal: Principal, storage_id: str) -> Storage:
        return pc.storage_from_volume(await self._volume_proto(principal, storage_id))

    async def _volumes(self, principal: Principal) -> list[Any]:
        cls = self._pending(self._volume_service, "ListVolumesRequest")
        out: list[Any] = []
        token = ""
        while True:
            response = await self._call(principal, "ListVolumes", _make(cls, page_size=PAGE, page_token=token))
            out += list(response.volumes)
            token = response.next_page_token
            if not token:
                return out

    async def list_storages(self, principal: Principal) -> list[Storage]:
        return [pc.storage_from_volume(v) for v in await self._volumes(principal)]

    async def delete_storage(self, principal: Principal, storage_id: str) -> None:
        request = _make(self._pending(self._volume_service, "DeleteVolumeRequest"), name=f"volumes/{storage_id}",
                        request_id=uuid.uuid4().hex)
        await self._call(principal, "DeleteVolume", request)

    async def set_storage_online(self, principal: Principal, storage_id: str, online: bool) -> Storage:
        method = "OnlineVolume" if online else "OfflineVolume"
        request = _make(self._pending(self._volume_service, f"{method}Request"), name=f"volumes/{storage_id}")
        await self._call(principal, method, request)
        return await self.get_storage(principal, storage_id)

    # --- network (NetworkService, branch `cloud`) ------------------------------------------

    async def create_network(self, principal: Principal, spec: NetworkSpec) -> Network:
        network = _make(self._pending(self._network, "Network"), title=spec.title, vlan=spec.vlan, cidr=spec.address or None,
                        gateway=spec.gateway or None)
        request = _make(self._pending(self._network_service, "CreateNetworkRequest"), network=network, request_id=uuid.uuid4().hex)
        created = _unpack(await self._call(principal, "CreateNetwork", request), type(network))
        if created is None:
            raise Unavailable("CreateNetwork returned no network")
        return pc.network_from_proto(created)

    async def get_network(self, principal: Principal, network_id: str) -> Network:
        request = _make(self._pending(self._network_service, "GetNetworkRequest"), name=f"networks/{network_id}")
        return pc.network_from_proto(await self._call(principal, "GetNetwork", request))

    async def list_networks(self, principal: Principal) -> list[Network]:
        cls = self._pending(self._network_service, "ListNetworksRequest")
        out: list[Network] = []
        token = ""
        while True:
            response = await self._call(principal, "ListNetworks", _make(cls, page_size=PAGE, page_token=token))
            out += [pc.network_from_proto(n) for n in response.networks]
            token = response.next_page_token
            if not token:
                return out

    async def delete_network(self, principal: Principal, network_id: str) -> None:
        request = _make(self._pending(self._network_service, "DeleteNetworkRequest"), name=f"networks/{network_id}",
                        request_id=uuid.uuid4().hex)
        await self._call(principal, "DeleteNetwork", request)

    async def set_network_up(self, principal: Principal, network_id: str, up: bool) -> Network:
        method = "UpNetwork" if up else "DownNetwork"
        request = _make(self._pending(self._network_service, f"{method}Request"), name=f"networks/{network_id}")
        await self._call(principal, method, request)
        return await self.get_network(principal, network_id)

    # --- links -----------------------------------------------------------------------------

    async def attach_storage(self, principal: Principal, compute_id: str, storage_id: str, device: str) -> StorageLink:
        vm = await self._vm(principal, compute_id)
        request = _make(self._pending(self._volume_service, "AttachVolumeRequest"), vm=vm.name, volume=f"volumes/{storage_id}",
                        device=device.removeprefix("/dev/"))
        await self._call(principal, "AttachVolume", request)
        return StorageLink(storage_link_id(compute_id, storage_id), compute_id, storage_id, device)

    async def list_storage_links(self, principal: Principal) -> list[StorageLink]:
        links = []
        for volume in await self._volumes(principal):
            for attachment in volume.attachments:
                vm_id, vol_id = pc.short_id(attachment.vm), pc.short_id(volume.name)
                links.append(StorageLink(storage_link_id(vm_id, vol_id), vm_id, vol_id, f"/dev/{attachment.device}"))
        return links

    async def detach_storage(self, principal: Principal, link_id: str) -> None:
        vm_id, _, vol_id = link_id.partition(".")
        if not any(link.id == link_id for link in await self.list_storage_links(principal)):
            raise NotFound(f"storage link {link_id} does not exist")
        request = _make(self._pending(self._volume_service, "DetachVolumeRequest"), vm=f"virtualMachines/{vm_id}",
                        volume=f"volumes/{vol_id}")
        await self._call(principal, "DetachVolume", request)

    async def create_network_interface(self, principal: Principal, compute_id: str, network_id: str) -> NetworkInterface:
        vm = await self._vm(principal, compute_id)
        nic = _make(self._pending(self._network, "NetworkInterface"), vm=vm.name, network=f"networks/{network_id}")
        request = _make(self._pending(self._network_service, "CreateNetworkInterfaceRequest"), network_interface=nic,
                        request_id=uuid.uuid4().hex)
        created = _unpack(await self._call(principal, "CreateNetworkInterface", request), type(nic))
        if created is None:
            raise Unavailable("CreateNetworkInterface returned no interface")
        index = sum(1 for n in await self.list_network_interfaces(principal) if n.compute_id == compute_id) - 1
        return pc.interface_from_proto(created, max(index, 0))

    async def list_network_interfaces(self, principal: Principal) -> list[NetworkInterface]:
        cls = self._pending(self._network_service, "ListNetworkInterfacesRequest")
        found: list[Any] = []
        token = ""
        while True:
            response = await self._call(principal, "ListNetworkInterfaces", _make(cls, page_size=PAGE, page_token=token))
            found += list(response.network_interfaces)
            token = response.next_page_token
            if not token:
                break
        per_vm: dict[str, int] = {}
        out = []
        for nic in found:
            index = per_vm.get(nic.vm, 0)
            per_vm[nic.vm] = index + 1
            out.append(pc.interface_from_proto(nic, index))
        return out

    async def delete_network_interface(self, principal: Principal, interface_id: str) -> None:
        request = _make(self._pending(self._network_service, "DeleteNetworkInterfaceRequest"),
                        name=f"networkInterfaces/{interface_id}", request_id=uuid.uuid4().hex)
        await self._call(principal, "DeleteNetworkInterface", request)
