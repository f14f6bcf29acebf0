"""Handles for long-running work: ``op = client.create_vm(...)``; ``vm = op.result()``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

from google.longrunning import operations_pb2
from google.protobuf import duration_pb2, message

from clients.wnodes_client._errors import WnodesRpcError

T = TypeVar("T", bound=message.Message)


class OperationHandle(Generic[T]):
    def __init__(
        self,
        op: operations_pb2.Operation,
        wait: Callable[[operations_pb2.WaitOperationRequest], operations_pb2.Operation],
        response_type: type[T],
        metadata_type: type[message.Message],
    ) -> None:
        self._op = op
        self._wait = wait
        self._response_type = response_type
        self._metadata_type = metadata_type

    @property
    def name(self) -> str:
        return str(self._op.name)

    @property
    def done(self) -> bool:
        return bool(self._op.done)

    @property
    def metadata(self) -> message.Message | None:
        if not self._op.HasField("metadata"):
            return None
        meta = self._metadata_type()
        self._op.metadata.Unpack(meta)
        return meta

    def wait(self, timeout: float = 10.0) -> bool:
        """Waits up to timeout for the operation to end; returns whether it did."""
        if not self._op.done:
            request = operations_pb2.WaitOperationRequest(name=self._op.name, timeout=duration_pb2.Duration(seconds=int(max(1, timeout))))
            self._op = self._wait(request)
        return bool(self._op.done)

    def result(self, timeout: float = 600.0, on_progress: Callable[[message.Message | None], None] | None = None) -> T:
        """Blocks until the operation ends; returns its response or raises WnodesRpcError."""
        deadline = time.monotonic() + timeout
        while not self._op.done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self._op.name} did not finish within {timeout:.0f}s")
            self.wait(min(left, 5.0))
            if on_progress is not None:
                on_progress(self.metadata)
        if self._op.HasField("error"):
            raise WnodesRpcError.from_status(self._op.error)
        out = self._response_type()
        self._op.response.Unpack(out)
        return out
