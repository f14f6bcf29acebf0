"""The gateway core: the one place every way in goes through.

Each front end authenticates its caller in its own terms (gRPC metadata, OCCI's Basic or X.509
login, the LRMS path through the SDK, the grid endpoint to come), then hands the core a
``Principal`` and a typed wnodes.v1 request, named by its public method ("CreateVirtualMachine").
The core:

1. **authorises** the call: ``Authorizer.authorize(principal, method, request)``. Today's
   ``AllowAll`` lets everything through (the nameservers and the imagestore check ownership);
   the next issue's policy (VO roles, grid mappings) plugs in here, and only here;
2. **forwards** it to the internal service that owns the resource, by one table (``ROUTES``:
   public method -> internal service and method, with the per-method traits: a create gets a
   request_id when it has none, WaitOperation's deadline follows its timeout), carrying the
   principal in the call's metadata;
3. runs the three streams, which are not plain forwarding: Exec (the nameserver says where the
   command runs, ``ResolveExecTarget``; the agent there runs it), UploadImageVersion (client
   stream) and CustomizeImageVersion (server stream) to the imagestore.

Errors come out as ``WnodesError`` (an internal service's status, reason and message intact,
``downstream_error``), never as a raw ``AioRpcError``: each front end maps them in its own
protocol (gRPC status, HTTP status).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import grpc
from google.longrunning import operations_pb2
from google.protobuf.message import Message

from services.common.errors import Unimplemented
from services.common.grpc_errors import downstream_error
from services.common.identity import Principal
from services.gateway.internal_channels import CALL_TIMEOUT, InternalServices, call
from wnodes.hypervisor.v1 import agent_service_pb2
from wnodes.nameserver.v1 import registry_service_pb2
from wnodes.v1 import image_pb2, image_service_pb2, virtual_machine_service_pb2

LOG = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)

CUSTOMIZE_TIMEOUT = 3600.0
"""Seconds a CustomizeImageVersion stream may run (it boots the image and runs a recipe)."""
DEFAULT_WAIT = 30.0
"""WaitOperation's timeout when the request gives none."""


class Authorizer(Protocol):
    """Decides whether ``principal`` may make this call; raises ``PermissionDenied`` if not.

    ``request`` is the typed request, or None for a stream of requests (UploadImageVersion), which
    is authorised before its first message is read."""

    async def authorize(self, principal: Principal, method: str, request: Message | None) -> None: ...


class AllowAll:
    """Today's policy: every authenticated caller may make every call. What a caller may see and
    change is still decided where the resource lives (owner and VO checks in the nameservers,
    image visibility in the imagestore)."""

    async def authorize(self, principal: Principal, method: str, request: Message | None) -> None:
        return None


def _call_timeout(request: Message) -> float:
    return CALL_TIMEOUT


def _wait_timeout(request: Message) -> float:
    """The nameservers hold a WaitOperation up to its timeout: the call's deadline comes after."""
    assert isinstance(request, operations_pb2.WaitOperationRequest)
    wait = request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else DEFAULT_WAIT
    return wait + 10


Service = Literal["registry", "imagestore"]


@dataclass(frozen=True)
class Route:
    """Where a public unary method goes, and what is special about it."""

    service: Service
    method: str
    """The internal service's method (it takes the public request as it is)."""
    fills_request_id: bool = False
    """A create: a request without a request_id gets one, so that our own retries (another
    replica after UNAVAILABLE) stay idempotent."""
    timeout: Callable[[Message], float] = _call_timeout
    """The internal call's deadline, from the request."""


def _registry(method: str, *, fills_request_id: bool = False) -> Route:
    return Route("registry", method, fills_request_id=fills_request_id)


def _imagestore(method: str) -> Route:
    return Route("imagestore", method)


ROUTES: Mapping[str, Route] = {
    # wnodes.v1.VirtualMachineService (ExecVirtualMachine is a stream: below)
    "GetVirtualMachine": _registry("GetVirtualMachine"),
    "ListVirtualMachines": _registry("ListVirtualMachines"),
    "CreateVirtualMachine": _registry("CreateVirtualMachine", fills_request_id=True),
    "DeleteVirtualMachine": _registry("DeleteVirtualMachine"),
    "UpdateVirtualMachine": _registry("UpdateVirtualMachine"),
    "SaveVirtualMachine": _registry("SaveVirtualMachine"),
    "StopVirtualMachine": _registry("StopVirtualMachine"),
    "StartVirtualMachine": _registry("StartVirtualMachine"),
    "RestartVirtualMachine": _registry("RestartVirtualMachine"),
    "SuspendVirtualMachine": _registry("SuspendVirtualMachine"),
    "ResumeVirtualMachine": _registry("ResumeVirtualMachine"),
    # wnodes.v1.VolumeService
    "CreateVolume": _registry("CreateVolume", fills_request_id=True),
    "GetVolume": _registry("GetVolume"),
    "ListVolumes": _registry("ListVolumes"),
    "DeleteVolume": _registry("DeleteVolume"),
    "OnlineVolume": _registry("OnlineVolume"),
    "OfflineVolume": _registry("OfflineVolume"),
    "AttachVolume": _registry("AttachVolume"),
    "DetachVolume": _registry("DetachVolume"),
    # wnodes.v1.NetworkService
    "CreateNetwork": _registry("CreateNetwork", fills_request_id=True),
    "GetNetwork": _registry("GetNetwork"),
    "ListNetworks": _registry("ListNetworks"),
    "DeleteNetwork": _registry("DeleteNetwork"),
    "UpNetwork": _registry("UpNetwork"),
    "DownNetwork": _registry("DownNetwork"),
    "CreateNetworkInterface": _registry("CreateNetworkInterface", fills_request_id=True),
    "GetNetworkInterface": _registry("GetNetworkInterface"),
    "ListNetworkInterfaces": _registry("ListNetworkInterfaces"),
    "DeleteNetworkInterface": _registry("DeleteNetworkInterface"),
    # wnodes.v1.HypervisorService
    "GetHypervisor": _registry("GetHypervisor"),
    "ListHypervisors": _registry("ListHypervisors"),
    "ListNameservers": _registry("ListNameservers"),
    # google.longrunning.Operations (Get and Wait; List, Delete and Cancel are not offered)
    "GetOperation": _registry("GetOperation"),
    "WaitOperation": Route("registry", "WaitOperation", timeout=_wait_timeout),
    # wnodes.v1.ImageService (UploadImageVersion and CustomizeImageVersion are streams: below)
    "GetImageVersion": _imagestore("GetImageVersion"),
    "ListImageVersions": _imagestore("ListImageVersions"),
    "PublishImageVersion": _imagestore("PublishImageVersion"),
    "DeprecateImageVersion": _imagestore("DeprecateImageVersion"),
    "DeleteImageVersion": _imagestore("DeleteImageVersion"),
    "PrefetchImage": _imagestore("PrefetchImage"),
}
SERVER_STREAMS = frozenset({"ExecVirtualMachine", "CustomizeImageVersion"})
CLIENT_STREAMS = frozenset({"UploadImageVersion"})
METHODS = frozenset(ROUTES) | SERVER_STREAMS | CLIENT_STREAMS
"""Every public method the core serves."""


class GatewayCore:
    def __init__(self, internal: InternalServices, authorizer: Authorizer | None = None) -> None:
        self._internal = internal
        self._authorizer: Authorizer = authorizer or AllowAll()

    # --- unary: the table -----------------------------------------------------------------

    async def call(self, principal: Principal, method: str, request: Message) -> Message:
        """A unary public method, forwarded by ``ROUTES``."""
        route = ROUTES.get(method)
        if route is None:
            raise Unimplemented(f"{method} is not offered by this gateway")
        await self._authorizer.authorize(principal, method, request)
        # Every create request has a request_id field (tests/unit/gateway checks the table).
        if route.fills_request_id and not getattr(request, "request_id"):  # noqa: B009
            setattr(request, "request_id", uuid.uuid4().hex)  # noqa: B010
        stub = self._internal.registry if route.service == "registry" else self._internal.imagestore
        try:
            response: Message = await call(principal, getattr(stub, route.method), request, timeout=route.timeout(request))
        except grpc.aio.AioRpcError as err:
            raise downstream_error(err) from err
        return response

    async def call_as(self, principal: Principal, method: str, request: Message, response_type: type[M]) -> M:
        """``call`` for a caller that wants the response typed (OCCI, the grid endpoint)."""
        response = await self.call(principal, method, request)
        if not isinstance(response, response_type):
            raise TypeError(f"{method} answers {type(response).__name__}, not {response_type.__name__}")
        return response

    # --- streams --------------------------------------------------------------------------

    def server_stream(self, principal: Principal, method: str, request: Message) -> AsyncIterator[Message]:
        """A server-streaming public method (ExecVirtualMachine, CustomizeImageVersion)."""
        if method == "ExecVirtualMachine":
            assert isinstance(request, virtual_machine_service_pb2.ExecVirtualMachineRequest)
            return self.exec_virtual_machine(principal, request)
        if method == "CustomizeImageVersion":
            assert isinstance(request, image_service_pb2.CustomizeImageVersionRequest)
            return self.customize_image_version(principal, request)
        raise Unimplemented(f"{method} is not offered by this gateway")

    async def client_stream(self, principal: Principal, method: str, requests: AsyncIterator[Message]) -> Message:
        """A client-streaming public method (UploadImageVersion)."""
        if method == "UploadImageVersion":
            return await self.upload_image_version(principal, requests)  # type: ignore[arg-type]
        raise Unimplemented(f"{method} is not offered by this gateway")

    async def exec_virtual_machine(
        self, principal: Principal, request: virtual_machine_service_pb2.ExecVirtualMachineRequest
    ) -> AsyncIterator[virtual_machine_service_pb2.ExecVirtualMachineResponse]:
        """Runs a command in a VM: the nameserver checks that it can (placed, neither stopped
        nor suspended, its hypervisor up) and says which agent runs it; the output streams back."""
        await self._authorizer.authorize(principal, "ExecVirtualMachine", request)
        resolve = registry_service_pb2.ResolveExecTargetRequest(name=request.name)
        try:
            target = await call(principal, self._internal.registry.ResolveExecTarget, resolve)
        except grpc.aio.AioRpcError as err:
            raise downstream_error(err) from err
        exec_request = agent_service_pb2.ExecRequest(
            vm_id=target.vm_id, command=request.command, ready_timeout_seconds=request.ready_timeout_seconds, uid=request.uid,
            exec_id=request.exec_id, stdout_offset=request.stdout_offset, stderr_offset=request.stderr_offset,
        )
        agent = self._internal.agent(target.agent_endpoint)
        # wait_for_ready: an agent that is restarting is waited for (the call is only sent once
        # connected, so this never runs a command twice).
        stream = agent.Exec(exec_request, metadata=principal.to_metadata(), wait_for_ready=True)
        try:
            async for response in stream:
                yield response
        except grpc.aio.AioRpcError as err:
            raise downstream_error(err) from err

    async def upload_image_version(
        self, principal: Principal, requests: AsyncIterator[image_service_pb2.UploadImageVersionRequest]
    ) -> image_pb2.ImageVersion:
        """Streams an image version (metadata, then chunks) to the imagestore."""
        await self._authorizer.authorize(principal, "UploadImageVersion", None)
        try:
            version: image_pb2.ImageVersion = await self._internal.imagestore.UploadImageVersion(
                requests, metadata=principal.to_metadata()
            )
        except grpc.aio.AioRpcError as err:
            raise downstream_error(err) from err
        return version

    async def customize_image_version(
        self, principal: Principal, request: image_service_pb2.CustomizeImageVersionRequest
    ) -> AsyncIterator[image_service_pb2.CustomizeImageVersionProgress]:
        """Runs a recipe on an image version in the imagestore, streaming its progress."""
        await self._authorizer.authorize(principal, "CustomizeImageVersion", request)
        stream = self._internal.imagestore.CustomizeImageVersion(request, metadata=principal.to_metadata(), timeout=CUSTOMIZE_TIMEOUT)
        try:
            async for step in stream:
                yield step
        except grpc.aio.AioRpcError as err:
            raise downstream_error(err) from err

