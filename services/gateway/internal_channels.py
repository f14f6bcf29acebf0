"""The gateway's gRPC channels to the internal services, and the retries that are safe to make.

``InternalServices`` is what the gateway core needs: a registry stub (the nameservers), an
imagestore stub and an agent stub per endpoint. ``InternalChannels`` gives them over real
channels; the in-process control plane (services/testing/control_plane.py) gives the same stubs
over a local channel, so the core runs unchanged on either.

The nameserver replicas sit behind one round-robin channel: when a replica dies, calls move to
the others. A call that failed with UNAVAILABLE is retried on another replica; creates carry a
request_id, so a retry never makes a second VM.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, cast

import grpc
from grpc_status import rpc_status

from services.common import telemetry
from services.common.identity import Principal
from wnodes.hypervisor.v1 import agent_service_pb2_grpc
from wnodes.imagestore.v1 import imagestore_service_pb2_grpc
from wnodes.nameserver.v1 import registry_service_pb2_grpc

LOG = logging.getLogger(__name__)
T = TypeVar("T")

RETRIES = 6
CALL_TIMEOUT = 15.0
OPTIONS = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]


class InternalServices(Protocol):
    """Stubs of the internal services, however they are reached."""

    @property
    def registry(self) -> registry_service_pb2_grpc.RegistryServiceAsyncStub: ...
    @property
    def imagestore(self) -> imagestore_service_pb2_grpc.ImagestoreServiceAsyncStub: ...
    def agent(self, endpoint: str) -> agent_service_pb2_grpc.AgentServiceAsyncStub: ...
    async def close(self) -> None: ...


def _target(endpoints: list[str]) -> str:
    return "ipv4:" + ",".join(endpoints)


class InternalChannels:
    """``InternalServices`` over gRPC channels (one balanced over the nameserver replicas)."""

    def __init__(self, nameservers: list[str], imagestore: str) -> None:
        interceptors = telemetry.client_interceptors()
        self._ns_channel = grpc.aio.insecure_channel(_target(nameservers), options=OPTIONS, interceptors=interceptors)
        self._registry = registry_service_pb2_grpc.RegistryServiceStub(self._ns_channel)
        self._is_channel = grpc.aio.insecure_channel(imagestore, options=OPTIONS, interceptors=interceptors)
        self._imagestore = imagestore_service_pb2_grpc.ImagestoreServiceStub(self._is_channel)
        self._agents: dict[str, tuple[grpc.aio.Channel, agent_service_pb2_grpc.AgentServiceAsyncStub]] = {}

    @property
    def registry(self) -> registry_service_pb2_grpc.RegistryServiceAsyncStub:
        return self._registry

    @property
    def imagestore(self) -> imagestore_service_pb2_grpc.ImagestoreServiceAsyncStub:
        return self._imagestore

    def agent(self, endpoint: str) -> agent_service_pb2_grpc.AgentServiceAsyncStub:
        if endpoint not in self._agents:
            channel = grpc.aio.insecure_channel(endpoint, options=OPTIONS, interceptors=telemetry.client_interceptors())
            self._agents[endpoint] = (channel, agent_service_pb2_grpc.AgentServiceStub(channel))
        return self._agents[endpoint][1]

    async def close(self) -> None:
        await self._ns_channel.close()
        await self._is_channel.close()
        for channel, _ in self._agents.values():
            await channel.close()


def _replica_unreachable(err: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE from the transport (the replica is dead or restarting: another one may
    answer), not an answer from a live replica whose own backend is down (etcd without quorum:
    every replica would say the same, so asking again only makes the caller wait)."""
    return err.code() == grpc.StatusCode.UNAVAILABLE and rpc_status.from_call(cast(grpc.Call, err)) is None


async def call(principal: Principal, fn: Callable[..., Awaitable[T]], request: object, timeout: float = CALL_TIMEOUT) -> T:
    """Calls a unary internal method with the caller's identity, retrying on another replica
    when the one asked is unreachable."""
    delay = 0.05
    for attempt in range(RETRIES):
        try:
            return await fn(request, metadata=principal.to_metadata(), timeout=timeout)
        except grpc.aio.AioRpcError as err:
            if not _replica_unreachable(err) or attempt == RETRIES - 1:
                raise
            LOG.info("backend unavailable (%s); retrying", err.details())
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")
