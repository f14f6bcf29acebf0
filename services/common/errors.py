"""The one error tree of WNoDeS services.

Domain code raises these; the gRPC edge (``grpc_errors.py``) turns each into a
``google.rpc.Status`` carrying an ``ErrorInfo`` with ``reason`` and ``domain``. Nothing else
hand-writes status codes. Every reason, with its code and meaning, is in ``error_reasons.py``
(rendered as docs/error-reasons.md).

    WnodesError                      INTERNAL          INTERNAL
    ├── InvalidArgument              INVALID_ARGUMENT  INVALID_ARGUMENT (reason overridable)
    ├── NotFound                     NOT_FOUND         RESOURCE_NOT_FOUND
    │   ├── ImageNotFound            NOT_FOUND         IMAGE_NOT_FOUND
    │   ├── VirtualMachineNotFound   NOT_FOUND         VIRTUAL_MACHINE_NOT_FOUND
    │   ├── VolumeNotFound           NOT_FOUND         VOLUME_NOT_FOUND
    │   ├── NetworkNotFound          NOT_FOUND         NETWORK_NOT_FOUND
    │   └── NetworkInterfaceNotFound NOT_FOUND         NETWORK_INTERFACE_NOT_FOUND
    ├── AlreadyExists                ALREADY_EXISTS    RESOURCE_EXISTS
    ├── FailedPrecondition           FAILED_PRECONDITION FAILED_PRECONDITION
    ├── Aborted                      ABORTED           CONCURRENT_MODIFICATION
    ├── NoCapacity                   RESOURCE_EXHAUSTED NO_HYPERVISOR_CAPACITY
    ├── PermissionDenied             PERMISSION_DENIED PERMISSION_DENIED
    ├── Unauthenticated              UNAUTHENTICATED   UNAUTHENTICATED
    ├── Unavailable                  UNAVAILABLE       BACKEND_UNAVAILABLE
    ├── DeadlineExceeded             DEADLINE_EXCEEDED DEADLINE_EXCEEDED
    └── Unimplemented                UNIMPLEMENTED     NOT_IMPLEMENTED
"""

from __future__ import annotations

from typing import ClassVar

import grpc

ERROR_DOMAIN = "wnodes.infn.it"


class WnodesError(Exception):
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    default_reason: ClassVar[str] = "INTERNAL"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = metadata or {}


class InvalidArgument(WnodesError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(WnodesError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "RESOURCE_NOT_FOUND"


class ImageNotFound(NotFound):
    default_reason = "IMAGE_NOT_FOUND"


class VirtualMachineNotFound(NotFound):
    default_reason = "VIRTUAL_MACHINE_NOT_FOUND"


class VolumeNotFound(NotFound):
    default_reason = "VOLUME_NOT_FOUND"


class NetworkNotFound(NotFound):
    default_reason = "NETWORK_NOT_FOUND"


class NetworkInterfaceNotFound(NotFound):
    default_reason = "NETWORK_INTERFACE_NOT_FOUND"


class AlreadyExists(WnodesError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "RESOURCE_EXISTS"


class FailedPrecondition(WnodesError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(WnodesError):
    code = grpc.StatusCode.ABORTED
    default_reason = "CONCURRENT_MODIFICATION"


class NoCapacity(WnodesError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "NO_HYPERVISOR_CAPACITY"


class PermissionDenied(WnodesError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(WnodesError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class Unavailable(WnodesError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "BACKEND_UNAVAILABLE"


class DeadlineExceeded(WnodesError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unimplemented(WnodesError):
    """This deployment does not offer the operation (yet)."""

    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "NOT_IMPLEMENTED"


_BY_CODE: dict[grpc.StatusCode, type[WnodesError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        NoCapacity,
        PermissionDenied,
        Unauthenticated,
        Unavailable,
        DeadlineExceeded,
        Unimplemented,
    )
}


def error_for_code(
    code: grpc.StatusCode, message: str, reason: str = "", metadata: dict[str, str] | None = None
) -> WnodesError:
    """Rebuilds a domain error from a status seen on the wire (e.g. an operation's error)."""
    cls = _BY_CODE.get(code, WnodesError)
    return cls(message, reason=reason or None, metadata=metadata)


def error_to_dict(err: WnodesError) -> dict[str, object]:
    """How a failure is stored in a record (e.g. a FAILED VM's ``error``)."""
    return {"code": err.code.value[0], "reason": err.reason, "message": err.message}


def error_from_dict(data: dict[str, object], fallback_message: str = "failed") -> WnodesError:
    code_value = data.get("code")
    code = next((c for c in grpc.StatusCode if c.value[0] == code_value), grpc.StatusCode.INTERNAL)
    return error_for_code(code, str(data.get("message") or fallback_message), str(data.get("reason") or ""))
