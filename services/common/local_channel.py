"""gRPC in one process: a server that servicers register on as on a ``grpc.aio.Server``, and a
channel whose stubs call them, with no sockets.

``LocalServer`` takes the generated ``add_*Servicer_to_server`` calls (it collects their method
handlers). ``LocalChannel(server)`` is what a generated stub is built on: its unary-unary,
unary-stream and stream-unary callables take ``(request, metadata=..., timeout=...)`` like a real
channel's. Each call behaves as over a network, so callers cannot tell the difference:

- messages cross as bytes (``SerializeToString``/``FromString``): nothing mutable is shared;
- the servicer sees the call's metadata, peer and deadline through a small ServicerContext;
- a servicer that aborts (``abort_with_status`` carrying a ``google.rpc.Status``, as
  ``maps_errors`` does) makes the caller raise a real ``grpc.aio.AioRpcError`` whose trailing
  metadata holds ``grpc-status-details-bin``, so ``rpc_status.from_call`` reads it back; an
  unexpected exception is UNKNOWN, a missing method UNIMPLEMENTED, a passed deadline
  DEADLINE_EXCEEDED.

Used by the in-process control plane (services/testing/control_plane.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

LOG = logging.getLogger(__name__)
Handler = Any  # grpc.RpcMethodHandler: its behaviour attributes are untyped
MetadataPairs = Sequence[tuple[str, str | bytes]]


@dataclass(frozen=True)
class _CallDetails:
    method: str
    invocation_metadata: MetadataPairs


class LocalServer:
    """Collects method handlers the way ``grpc.aio.Server`` does; never listens."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        """What servicers see as the peer's address ("local:<name>")."""
        self._registered: dict[str, Handler] = {}
        self._generic: list[Any] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        for method, handler in handlers.items():
            self._registered[f"/{service}/{method}"] = handler

    def handler(self, method: str, metadata: MetadataPairs) -> Handler | None:
        if method in self._registered:
            return self._registered[method]
        for generic in self._generic:
            found = generic.service(_CallDetails(method, metadata))
            if found is not None:
                return found
        return None


class _Abort(Exception):
    """Raised inside the servicer by ``abort``; becomes the caller's AioRpcError."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: MetadataPairs) -> None:
        super().__init__(details)
        self.code, self.details, self.trailing = code, details, trailing


class _Context:
    """The part of ``grpc.aio.ServicerContext`` that servicers use."""

    def __init__(self, metadata: MetadataPairs, deadline: float | None, peer: str) -> None:
        self._metadata = tuple(metadata)
        self._deadline = deadline
        self._peer = peer
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.trailing: MetadataPairs = ()

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - asyncio.get_running_loop().time())

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, metadata: MetadataPairs) -> None:
        self.trailing = tuple(metadata)

    async def send_initial_metadata(self, metadata: MetadataPairs) -> None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: MetadataPairs = ()) -> NoReturn:
        # A real AbortError, so that code which lets aborts through (maps_errors) does here too.
        raise _AbortError(_Abort(code, details, tuple(trailing_metadata) or self.trailing))

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)


class _AbortError(grpc.aio.AbortError):
    def __init__(self, abort: _Abort) -> None:
        super().__init__(abort.details)
        self.abort = abort


def _rpc_error(code: grpc.StatusCode, details: str, trailing: MetadataPairs = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


def _failure(exc: BaseException, context: _Context) -> grpc.aio.AioRpcError:
    """What the caller sees when the servicer raised ``exc``."""
    if isinstance(exc, _AbortError):
        return _rpc_error(exc.abort.code, exc.abort.details, exc.abort.trailing)
    if isinstance(exc, TimeoutError):
        return _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    if context.code is not None and context.code != grpc.StatusCode.OK:  # set_code, then raised (generated "not implemented")
        return _rpc_error(context.code, context.details, context.trailing)
    LOG.error("unexpected error in a local servicer", exc_info=exc)
    return _rpc_error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}: {exc}")


class _Call:
    """One RPC's setup: the handler, a context, the deadline."""

    def __init__(self, server: LocalServer, method: str, timeout: float | None, metadata: MetadataPairs | None) -> None:
        self.method = method
        self.handler = server.handler(method, metadata or ())
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self.context = _Context(metadata or (), deadline, f"local:{server.name}")
        self.timeout = timeout

    def check(self) -> Handler:
        if self.handler is None:
            raise _rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        return self.handler

    def finished(self) -> None:
        """A servicer that set a failing code and returned normally still fails the call."""
        code = self.context.code
        if code is not None and code != grpc.StatusCode.OK:
            raise _rpc_error(code, self.context.details, self.context.trailing)


class _UnaryUnary:
    def __init__(self, server: LocalServer, method: str, serialize: Callable[[Any], bytes], deserialize: Callable[[bytes], Any]) -> None:
        self._server, self._method, self._serialize, self._deserialize = server, method, serialize, deserialize

    def __call__(self, request: Any, *, timeout: float | None = None, metadata: MetadataPairs | None = None, **_: Any) -> Any:
        return self._run(request, timeout, metadata)

    async def _run(self, request: Any, timeout: float | None, metadata: MetadataPairs | None) -> Any:
        call = _Call(self._server, self._method, timeout, metadata)
        handler = call.check()
        wire = self._serialize(request)
        try:
            async with asyncio.timeout(timeout):
                response = await handler.unary_unary(handler.request_deserializer(wire), call.context)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the caller's status, as on a wire
            raise _failure(exc, call.context) from None
        call.finished()
        return self._deserialize(handler.response_serializer(response))


class _UnaryStreamCall:
    """What a unary-stream callable returns: async-iterable, with ``read()`` and ``cancel()``."""

    def __init__(self, server: LocalServer, method: str, request: bytes, timeout: float | None, metadata: MetadataPairs | None,
                 deserialize: Callable[[bytes], Any]) -> None:
        self._iterator = self._run(server, method, request, timeout, metadata, deserialize)

    @staticmethod
    async def _run(server: LocalServer, method: str, wire: bytes, timeout: float | None, metadata: MetadataPairs | None,
                   deserialize: Callable[[bytes], Any]) -> AsyncGenerator[Any, None]:
        call = _Call(server, method, timeout, metadata)
        handler = call.check()
        responses = handler.unary_stream(handler.request_deserializer(wire), call.context)
        try:
            # The deadline is checked between messages, not by a timer: a timer would outlive a
            # stream its caller stopped reading and cancel whatever the caller does next.
            async for response in responses:
                if call.context.time_remaining() == 0.0:
                    raise TimeoutError
                yield deserialize(handler.response_serializer(response))
        except Exception as exc:  # noqa: BLE001 - every failure becomes the caller's status, as on a wire
            raise _failure(exc, call.context) from None
        finally:
            with contextlib.suppress(Exception):
                await responses.aclose()
        call.finished()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterator

    async def read(self) -> Any:
        try:
            return await anext(self._iterator)
        except StopAsyncIteration:
            return grpc.aio.EOF

    def cancel(self) -> bool:
        asyncio.get_running_loop().create_task(self._iterator.aclose())
        return True


class _UnaryStream:
    def __init__(self, server: LocalServer, method: str, serialize: Callable[[Any], bytes], deserialize: Callable[[bytes], Any]) -> None:
        self._server, self._method, self._serialize, self._deserialize = server, method, serialize, deserialize

    def __call__(self, request: Any, *, timeout: float | None = None, metadata: MetadataPairs | None = None,
                 **_: Any) -> _UnaryStreamCall:
        return _UnaryStreamCall(self._server, self._method, self._serialize(request), timeout, metadata, self._deserialize)


class _StreamUnary:
    def __init__(self, server: LocalServer, method: str, serialize: Callable[[Any], bytes], deserialize: Callable[[bytes], Any]) -> None:
        self._server, self._method, self._serialize, self._deserialize = server, method, serialize, deserialize

    def __call__(self, requests: AsyncIterator[Any] | Iterator[Any], *, timeout: float | None = None,
                 metadata: MetadataPairs | None = None, **_: Any) -> Any:
        return self._run(requests, timeout, metadata)

    async def _run(self, requests: AsyncIterator[Any] | Iterator[Any], timeout: float | None, metadata: MetadataPairs | None) -> Any:
        call = _Call(self._server, self._method, timeout, metadata)
        handler = call.check()

        async def incoming() -> AsyncIterator[Any]:
            if isinstance(requests, AsyncIterator):
                async for request in requests:
                    yield handler.request_deserializer(self._serialize(request))
            else:
                for request in requests:
                    yield handler.request_deserializer(self._serialize(request))

        try:
            async with asyncio.timeout(timeout):
                response = await handler.stream_unary(incoming(), call.context)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the caller's status, as on a wire
            raise _failure(exc, call.context) from None
        call.finished()
        return self._deserialize(handler.response_serializer(response))


class LocalChannel:
    """A channel to a ``LocalServer``: build generated stubs on it."""

    def __init__(self, server: LocalServer) -> None:
        self._server = server

    def unary_unary(self, method: str, request_serializer: Callable[[Any], bytes], response_deserializer: Callable[[bytes], Any],
                    _registered_method: bool = False) -> _UnaryUnary:
        return _UnaryUnary(self._server, method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Callable[[Any], bytes], response_deserializer: Callable[[bytes], Any],
                     _registered_method: bool = False) -> _UnaryStream:
        return _UnaryStream(self._server, method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Callable[[Any], bytes], response_deserializer: Callable[[bytes], Any],
                     _registered_method: bool = False) -> _StreamUnary:
        return _StreamUnary(self._server, method, request_serializer, response_deserializer)

    def stream_stream(self, method: str, request_serializer: Callable[[Any], bytes], response_deserializer: Callable[[bytes], Any],
                      _registered_method: bool = False) -> NoReturn:
        raise NotImplementedError("no internal service has a bidirectional stream")

    async def close(self) -> None:
        return None
