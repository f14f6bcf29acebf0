"""Placement throughput through the gateway with 3 nameserver replicas over N simulated hosts,
next to the raw etcd transaction rate from one process in the same run (the floor every
placement stands on)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import grpc

from bench.memory import cpu_by_process, rss_by_process
from bench.stats import percentile
from deploy.stack.stack import Stack, StackState
from services.common.etcd_store import EtcdStore
from services.common.identity import Principal
from services.common.store import Compare, Put
from wnodes.v1 import virtual_machine_pb2, virtual_machine_service_pb2, virtual_machine_service_pb2_grpc


async def _creates(gateway: str, total: int, concurrency: int) -> tuple[float, list[float], int]:
    meta = Principal("bench", "wnodes").to_metadata()
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                queue.get_nowait()
                request = virtual_machine_service_pb2.CreateVirtualMachineRequest(
                    virtual_machine=virtual_machine_pb2.VirtualMachine(image="tiny", vcpu_count=1, memory_mib=128),
                    request_id=uuid.uuid4().hex,
                )
                t = time.perf_counter()
                try:
                    await stub.CreateVirtualMachine(request, metadata=meta, timeout=30)
                    latencies.append(time.perf_counter() - t)
                except grpc.aio.AioRpcError:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies, errors


async def _etcd_txns(state: StackState, total: int, concurrency: int) -> float:
    store = EtcdStore(state.etcd_endpoints)
    await store.connect()
    prefix = f"{state.key_root}/bench/{uuid.uuid4().hex}/"

    async def one(i: int) -> None:
        await store.txn([Compare(prefix + str(i), 0)], [Put(prefix + str(i), b"x" * 600)])

    start = time.perf_counter()
    for chunk in range(0, total, concurrency):
        await asyncio.gather(*(one(i) for i in range(chunk, min(total, chunk + concurrency))))
    elapsed = time.perf_counter() - start
    await store.close()
    return total / elapsed


def run(workdir: Path, hosts: int = 100, total: int = 2000, concurrency: int = 32) -> dict[str, object]:
    stack = Stack(workdir / "placement-stack")
    # Hosts large enough that capacity never refuses a request during the measurement.
    state = stack.up("fake", hosts, workdir / "no-images", fake_vcpus=4096, fake_memory_mib=4 * 1024 * 1024)
    try:
        idle = rss_by_process(state)
        etcd_rate = asyncio.run(_etcd_txns(state, total, concurrency))
        cpu_before = cpu_by_process(state)
        elapsed, latencies, errors = asyncio.run(_creates(state.gateway, total, concurrency))
        cpu_after = cpu_by_process(state)
        loaded = rss_by_process(state)
        done = max(1, len(latencies))
        return {
            "hosts": hosts,
            "creates": total,
            "errors": errors,
            "creates_per_s": len(latencies) / elapsed,
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "etcd_txn_per_s": etcd_rate,
            "rss_idle_mib": idle,
            "rss_loaded_mib": loaded,
            # Where the CPU goes: on this 2-core machine every process of the stack shares it.
            "cpu_ms_per_create": {n: round((cpu_after[n] - cpu_before[n]) / done * 1000, 2) for n in cpu_before},
            "cores_busy": round(sum(cpu_after[n] - cpu_before[n] for n in cpu_before) / elapsed, 2),
        }
    finally:
        stack.down()
