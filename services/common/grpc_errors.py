"""Where domain errors meet gRPC: one place that maps them to ``google.rpc.Status``.

Servicers wrap their methods with ``@maps_errors``; they never pick status codes themselves. An
error coming back from a downstream service (a nameserver seen by the gateway) is passed on with
its status and ErrorInfo intact. Anything unexpected becomes INTERNAL with the traceback in the
log, never in the reply.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common.errors import ERROR_DOMAIN, WnodesError, error_for_code
from services.common.grpc_types import Ctx

LOG = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def to_status(code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=code.value[0], message=message, details=[detail])


def error_to_status(err: WnodesError) -> status_pb2.Status:
    return to_status(err.code, err.message, err.reason, err.metadata)


def status_to_error(status: status_pb2.Status) -> WnodesError:
    """The inverse of ``error_to_status``, for operation errors read back from storage."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    reason, metadata = "", {}
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
    return error_for_code(code, status.message, reason, metadata)


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def downstream_error(err: grpc.aio.AioRpcError) -> WnodesError:
    """A downstream call failed: keep its code, message and ErrorInfo."""
    status = rpc_status.from_call(cast(grpc.Call, err))
    if status is not None:
        return status_to_error(status)
    reason = "BACKEND_UNAVAILABLE" if err.code() == grpc.StatusCode.UNAVAILABLE else ""
    return error_for_code(err.code(), err.details() or err.code().name, reason)


async def _abort(context: Ctx, exc: BaseException) -> None:
    if isinstance(exc, grpc.aio.AioRpcError):
        exc = downstream_error(exc)
    if isinstance(exc, WnodesError):
        if exc.code == grpc.StatusCode.INTERNAL:
            LOG.error("internal error: %s", exc.message)
        status = error_to_status(exc)
    else:
        LOG.exception("unexpected error", exc_info=exc)
        status = to_status(grpc.StatusCode.INTERNAL, "internal error (see the service log)", "INTERNAL", {})
    await context.abort_with_status(rpc_status.to_status(status))


def maps_errors(method: F) -> F:
    """Decorates a servicer method (unary or server-streaming) to map errors to statuses."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_wrapper(self: Any, request: Any, context: Ctx) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - this is the one place that maps everything
                await _abort(context, exc)

        return cast(F, stream_wrapper)

    @functools.wraps(method)
    async def unary_wrapper(self: Any, request: Any, context: Ctx) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one place that maps everything
            await _abort(context, exc)

    return cast(F, unary_wrapper)


__all__ = ["downstream_error", "error_to_status", "maps_errors", "status_to_error", "to_status"]
