"""Reads the caller's identity from an internal call's metadata."""

from __future__ import annotations

from services.common.errors import Unauthenticated
from services.common.grpc_types import Ctx
from services.common.identity import Principal


def principal_of(context: Ctx) -> Principal:
    principal = Principal.from_metadata(context.invocation_metadata())
    if principal is None:
        raise Unauthenticated("the call carries no identity (wnodes-user, wnodes-vo); internal services are called by the gateway")
    return principal
