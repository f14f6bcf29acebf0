"""The gRPC way in: the public wnodes.v1 services and google.longrunning.Operations, served from
their descriptors. Every method is the same three steps - authenticate the caller, hand the core
the principal and the request, answer - with errors mapped by the one ``maps_errors``; what each
method does is the core's table (services/gateway/core.py), not code here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.longrunning import operations_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from services.common.grpc_errors import maps_errors
from services.common.grpc_types import Ctx
from services.gateway.auth import Authenticator
from services.gateway.core import GatewayCore
from wnodes.v1 import (
    hypervisor_service_pb2,
    image_service_pb2,
    network_service_pb2,
    virtual_machine_service_pb2,
    volume_service_pb2,
)

PUBLIC_SERVICES: tuple[ServiceDescriptor, ...] = (
    virtual_machine_service_pb2.DESCRIPTOR.services_by_name["VirtualMachineService"],
    volume_service_pb2.DESCRIPTOR.services_by_name["VolumeService"],
    network_service_pb2.DESCRIPTOR.services_by_name["NetworkService"],
    image_service_pb2.DESCRIPTOR.services_by_name["ImageService"],
    hypervisor_service_pb2.DESCRIPTOR.services_by_name["HypervisorService"],
    operations_pb2.DESCRIPTOR.services_by_name["Operations"],
)


class _Method:
    def __init__(self, core: GatewayCore, auth: Authenticator, name: str) -> None:
        self._core = core
        self._auth = auth
        self._name = name


class _Unary(_Method):
    @maps_errors
    async def handle(self, request: Message, context: Ctx) -> Message:
        return await self._core.call(self._auth.authenticate(context), self._name, request)


class _ServerStream(_Method):
    @maps_errors
    async def handle(self, request: Message, context: Ctx) -> AsyncIterator[Message]:
        async for response in self._core.server_stream(self._auth.authenticate(context), self._name, request):
            yield response


class _ClientStream(_Method):
    @maps_errors
    async def handle(self, requests: AsyncIterator[Message], context: Ctx) -> Message:
        return await self._core.client_stream(self._auth.authenticate(context), self._name, requests)


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


def _handler(core: GatewayCore, auth: Authenticator, method: MethodDescriptor) -> Handler:
    decode = message_factory.GetMessageClass(method.input_type).FromString
    encode = message_factory.GetMessageClass(method.output_type).SerializeToString
    if method.client_streaming and method.server_streaming:
        raise TypeError(f"{method.full_name}: bidirectional streams are not served")
    if method.client_streaming:
        return grpc.stream_unary_rpc_method_handler(_ClientStream(core, auth, method.name).handle, decode, encode)
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(_ServerStream(core, auth, method.name).handle, decode, encode)
    return grpc.unary_unary_rpc_method_handler(_Unary(core, auth, method.name).handle, decode, encode)


def public_handlers(core: GatewayCore, auth: Authenticator) -> dict[str, dict[str, Handler]]:
    """Service full name -> method -> handler, for every public method. A method the core does
    not serve (Operations' List, Delete, Cancel) answers UNIMPLEMENTED from the core."""
    return {service.full_name: {m.name: _handler(core, auth, m) for m in service.methods} for service in PUBLIC_SERVICES}


def add_public_services(server: grpc.aio.Server, core: GatewayCore, auth: Authenticator) -> None:
    for service, handlers in public_handlers(core, auth).items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)
