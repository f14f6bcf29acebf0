"""Failover: SIGKILL a nameserver replica while creates flow through the gateway; how long until
a create succeeds on another replica, and the slowest create around the kill, next to the same
creates' latency before the kill (same run)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import grpc

from bench.stats import percentile
from deploy.stack.stack import Stack
from services.common.identity import Principal
from wnodes.v1 import virtual_machine_pb2, virtual_machine_service_pb2, virtual_machine_service_pb2_grpc

# Room for every create of every round (about 100/s for 3 s each): a host running out of room
# would make creates fail for a reason that has nothing to do with the kill.
HOSTS, HOST_VCPUS, HOST_MEMORY_MIB = 10, 1024, 1 << 20


def _create(stub: virtual_machine_service_pb2_grpc.VirtualMachineServiceStub, meta: tuple[tuple[str, str | bytes], ...],
            errors: dict[str, int]) -> bool:
    request = virtual_machine_service_pb2.CreateVirtualMachineRequest(
        virtual_machine=virtual_machine_pb2.VirtualMachine(image="tiny", vcpu_count=1, memory_mib=128), request_id=uuid.uuid4().hex)
    try:
        stub.CreateVirtualMachine(request, metadata=meta, timeout=10)
        return True
    except grpc.RpcError as err:
        code = err.code().name if isinstance(err, grpc.Call) else "UNKNOWN"
        errors[code] = errors.get(code, 0) + 1
        return False


def run(work: Path, rounds: int = 3) -> dict[str, Any]:
    stack = Stack(work / "failover")
    stack.up("fake", HOSTS, work / "no-images", fake_vcpus=HOST_VCPUS, fake_memory_mib=HOST_MEMORY_MIB)
    state = stack.state
    assert state is not None
    meta = tuple(Principal("bench", "wnodes").to_metadata())
    before: list[float] = []
    to_success: list[float] = []
    slowest: list[float] = []
    errors: dict[str, int] = {}  # what the failed creates around the kills answered
    try:
        with grpc.insecure_channel(state.gateway) as channel:
            stub = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)
            for i in range(rounds):
                victim = f"nameserver{i % 3}"
                for _ in range(20):
                    t = time.perf_counter()
                    _create(stub, meta, errors)
                    before.append(time.perf_counter() - t)
                stack.kill(victim)
                killed = time.perf_counter()
                first = 0.0
                worst = 0.0
                while time.perf_counter() - killed < 3.0 or not first:
                    t = time.perf_counter()
                    ok = _create(stub, meta, errors)
                    worst = max(worst, time.perf_counter() - t)
                    if ok and not first:
                        first = time.perf_counter() - killed
                    if time.perf_counter() - killed > 30:
                        break
                to_success.append(first or float("inf"))
                slowest.append(worst)
                stack.restart(victim)
    finally:
        stack.down()
    return {"to_first_success_s": max(to_success), "to_first_success_all_s": to_success, "slowest_create_s": max(slowest),
            "create_p50_before_s": percentile(before, 50), "create_p99_before_s": percentile(before, 99), "errors": errors}
