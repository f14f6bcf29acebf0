"""HTTP status codes for the OCCI front end: domain errors (services/common/errors.py) map by
their gRPC code; the few failures that only exist in HTTP are subclasses that carry their own
status. Every error answers with a plain-text message, never a traceback.

    InvalidArgument (400)
    ├── NotAcceptable (406)        no rendering the client accepts
    ├── PayloadTooLarge (413)      body or page too big
    └── MethodNotAllowed (405)     verb not defined on this path
    Unimplemented (501)
    └── VersionNotSupported (501)  the client speaks a newer OCCI
"""

from __future__ import annotations

from typing import ClassVar

import grpc

from services.common.errors import InvalidArgument, Unimplemented, WnodesError

_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


class NotAcceptable(InvalidArgument):
    http_status: ClassVar[int] = 406
    default_reason = "NOT_ACCEPTABLE"


class PayloadTooLarge(InvalidArgument):
    http_status: ClassVar[int] = 413
    default_reason = "PAYLOAD_TOO_LARGE"


class MethodNotAllowed(InvalidArgument):
    http_status: ClassVar[int] = 405
    default_reason = "METHOD_NOT_ALLOWED"


class VersionNotSupported(Unimplemented):
    http_status: ClassVar[int] = 501
    default_reason = "OCCI_VERSION_NOT_SUPPORTED"


def http_status(err: WnodesError) -> int:
    explicit = getattr(err, "http_status", None)
    if isinstance(explicit, int):
        return explicit
    return _BY_CODE.get(err.code, 500)
