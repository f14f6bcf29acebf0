"""The gateway core's forwarding table against the protos: every public method is served, and
every route names an internal method that takes the public request as it is."""

from __future__ import annotations

from google.protobuf.descriptor import MethodDescriptor

from services.gateway.core import CLIENT_STREAMS, METHODS, ROUTES, SERVER_STREAMS
from services.gateway.servicer import PUBLIC_SERVICES
from wnodes.imagestore.v1 import imagestore_service_pb2
from wnodes.nameserver.v1 import registry_service_pb2

INTERNAL = {
    "registry": registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"],
    "imagestore": imagestore_service_pb2.DESCRIPTOR.services_by_name["ImagestoreService"],
}
NOT_OFFERED = {"ListOperations", "DeleteOperation", "CancelOperation"}


def _public() -> dict[str, MethodDescriptor]:
    methods = [m for service in PUBLIC_SERVICES for m in service.methods]
    assert len({m.name for m in methods}) == len(methods), "public method names must be unique: the core keys by name"
    return {m.name: m for m in methods}


def test_every_public_method_is_served_by_the_core_and_nothing_else() -> None:
    public = _public()
    assert len(public) - len(NOT_OFFERED) == 43
    assert set(public) - NOT_OFFERED == METHODS


def test_streams_are_the_streaming_methods() -> None:
    public = _public()
    assert {n for n, m in public.items() if m.server_streaming} == SERVER_STREAMS
    assert {n for n, m in public.items() if m.client_streaming} == CLIENT_STREAMS


def test_each_route_names_an_internal_method_with_the_same_request_and_response() -> None:
    public = _public()
    for name, route in ROUTES.items():
        internal = INTERNAL[route.service].methods_by_name.get(route.method)
        assert internal is not None, f"{name} -> {route.service}.{route.method} does not exist"
        assert internal.input_type is public[name].input_type, name
        assert internal.output_type is public[name].output_type, name
        assert not internal.client_streaming and not internal.server_streaming, name


def test_creates_fill_their_request_id() -> None:
    public = _public()
    creates = {n for n in ROUTES if n.startswith("Create") and "request_id" in public[n].input_type.fields_by_name}
    assert creates == {n for n, r in ROUTES.items() if r.fills_request_id}
