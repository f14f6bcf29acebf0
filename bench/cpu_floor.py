"""What a create cannot cost less than, measured on the running stack in the same run as the
placements it explains: the CPU of one no-op gRPC call (the gateway's health check, client and
server together; a create makes two such hops, client to gateway and gateway to nameserver)
and the CPU of one placement-shaped etcd transaction (the compares and puts of a placement,
sent unbatched, summed over the three members and the client).

With the CPU a create really costs, these give the ceiling this machine allows: cores divided
by CPU per create. The scale target (500 placements/s with p99 under 100 ms) needs that ceiling
well above 500/s, since a p99 of a few service times only holds far from saturation.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import grpc
from etcd3aio.kv import prefix_range_end
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.memory import cpu_by_process, self_cpu_seconds
from deploy.stack.stack import StackState
from services.common.etcd_store import EtcdStore
from services.common.store import Compare, Put

# Sizes of what a placement writes (measured from records.dump of a VM, its host's usage and
# the four small keys), so the transaction costs etcd what a real one does.
VM_RECORD_BYTES = 900
USAGE_RECORD_BYTES = 400
SMALL_VALUE_BYTES = 16



async def _noop_calls(target: str, total: int, concurrency: int) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        counter = iter(range(total))

        async def worker() -> None:
            for _ in counter:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


async def _placement_txns(endpoints: list[str], key_root: str, total: int, concurrency: int) -> float:
    store = EtcdStore(endpoints)
    await store.connect()
    prefix = f"{key_root}/bench-floor/{uuid.uuid4().hex}/"
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            keys = [f"{prefix}{kind}/{i}" for kind in ("usage", "vm", "placement", "request", "mac", "hostname")]
            sizes = [USAGE_RECORD_BYTES, VM_RECORD_BYTES] + [SMALL_VALUE_BYTES] * 4
            await store.txn([Compare(k, 0) for k in keys[2:]], [Put(k, b"x" * n) for k, n in zip(keys, sizes, strict=True)])

    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start
    finally:
        await store.client.kv.delete(prefix, prefix_range_end(prefix.encode()))  # type: ignore[union-attr]
        await store.close()


def measure(state: StackState, calls: int = 5000, txns: int = 2000, concurrency: int = 32) -> dict[str, Any]:
    """CPU milliseconds of one no-op gRPC call and of one placement-shaped etcd transaction."""
    cpu0, me0 = cpu_by_process(state), self_cpu_seconds()
    seconds = asyncio.run(_noop_calls(state.gateway, calls, concurrency))
    cpu1, me1 = cpu_by_process(state), self_cpu_seconds()
    hop_ms = ((cpu1["gateway"] - cpu0["gateway"]) + (me1 - me0)) / calls * 1000
    hop_rate = calls / seconds

    etcd = [n for n in cpu1 if n.startswith("etcd")]
    seconds = asyncio.run(_placement_txns(state.etcd_endpoints, state.key_root, txns, concurrency))
    cpu2, me2 = cpu_by_process(state), self_cpu_seconds()
    txn_ms = (sum(cpu2[n] - cpu1[n] for n in etcd) + (me2 - me1)) / txns * 1000
    return {
        "grpc_noop_call_cpu_ms": round(hop_ms, 3),
        "grpc_noop_calls_per_s": round(hop_rate, 1),
        "etcd_placement_txn_cpu_ms": round(txn_ms, 3),
        "etcd_placement_txns_per_s": round(txns / seconds, 1),
        "cores": os.cpu_count() or 1,
    }


def ceiling_per_s(cpu_ms_per_create: float, cores: int) -> float:
    """Creates per second the machine could do if every core did nothing else."""
    return cores * 1000.0 / cpu_ms_per_create if cpu_ms_per_create else 0.0
