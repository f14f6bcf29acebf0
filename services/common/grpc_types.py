"""Type aliases for gRPC's generic types, so servicer signatures stay short."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
Metadata: TypeAlias = tuple[tuple[str, str | bytes], ...]
