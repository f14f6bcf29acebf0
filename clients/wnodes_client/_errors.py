"""The SDK's one error type: every failed call raises WnodesRpcError with the gRPC code, the
ErrorInfo reason (e.g. IMAGE_NOT_FOUND, NO_HYPERVISOR_CAPACITY) and a message for people."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class WnodesRpcError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "", metadata: dict[str, str] | None = None) -> None:
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> WnodesRpcError:
        code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
        reason, metadata = "", {}
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason, metadata = info.reason, dict(info.metadata)
        return cls(code, status.message, reason, metadata)

    @classmethod
    def from_call(cls, err: grpc.RpcError) -> WnodesRpcError:
        status = rpc_status.from_call(err)
        if status is not None:
            return cls.from_status(status)
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = err.details() if hasattr(err, "details") else str(err)
        return cls(code, details or code.name)
