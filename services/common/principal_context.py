"""Reads the caller's identity from an internal call's metadata."""

from __future__ import annotations

import grpc

from services.common.errors import Unauthenticated
from services.common.identity import Principal


def principal_of(context: grpc.aio.ServicerContext) -> Principal:
    principal = Principal.from_metadata(context.invocation_metadata())  # type: ignore[arg-type]
    if principal is None:
        raise Unauthenticated("the call carries no identity (wnodes-user, wnodes-vo); internal services are called by the gateway")
    return principal
