"""Quorum loss: with two of three etcd members gone, calls must fail fast with UNAVAILABLE (no
hang), and the system must recover by itself once the members are back."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc

from deploy.stack.stack import Stack
from tests.chaos.scenarios import wait_etcd_healthy
from wnodes.v1 import virtual_machine_pb2, virtual_machine_service_pb2, virtual_machine_service_pb2_grpc

# A caller must learn within this long that the control plane cannot answer.
FAIL_FAST_S = 10.0


@dataclass
class QuorumOutcome:
    codes: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    recovered_s: float = 0.0
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"codes": self.codes, "slowest_failure_s": round(self.slowest_s, 2), "recovered_after_s": round(self.recovered_s, 2),
                "violations": self.violations}

    def summary(self) -> str:
        verdict = "; ".join(self.violations) or "ok"
        return (f"calls answered {sorted(set(self.codes))} in at most {self.slowest_s:.2f} s; "
                f"the first create after the members returned succeeded {self.recovered_s:.2f} s later; {verdict}")


def _create(stub: virtual_machine_service_pb2_grpc.VirtualMachineServiceStub, timeout: float) -> None:
    request = virtual_machine_service_pb2.CreateVirtualMachineRequest(
        virtual_machine=virtual_machine_pb2.VirtualMachine(image="tiny", vcpu_count=1, memory_mib=128), request_id=f"quorum-{time.monotonic_ns()}")
    stub.CreateVirtualMachine(request, timeout=timeout, metadata=(("wnodes-user", "chaos"), ("wnodes-vo", "chaos")))


def _list(stub: virtual_machine_service_pb2_grpc.VirtualMachineServiceStub, timeout: float) -> None:
    stub.ListVirtualMachines(virtual_machine_service_pb2.ListVirtualMachinesRequest(), timeout=timeout,
                             metadata=(("wnodes-user", "chaos"), ("wnodes-vo", "chaos")))


def quorum_loss(stack: Stack) -> QuorumOutcome:
    state = stack.state
    assert state is not None
    outcome = QuorumOutcome()
    with grpc.insecure_channel(state.gateway) as channel:
        stub = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)
        _list(stub, 10)  # healthy first
        stack.kill("etcd1")
        stack.kill("etcd2")
        for call in (_create, _list, _create):
            started = time.monotonic()
            try:
                call(stub, FAIL_FAST_S * 3)
                outcome.violations.append(f"{call.__name__.strip('_')} succeeded without an etcd quorum")
            except grpc.RpcError as err:
                outcome.codes.append(err.code().name)
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    outcome.violations.append(f"{call.__name__.strip('_')} answered {err.code().name}, not UNAVAILABLE: {err.details()}")
            elapsed = time.monotonic() - started
            outcome.slowest_s = max(outcome.slowest_s, elapsed)
            if elapsed > FAIL_FAST_S:
                outcome.violations.append(f"{call.__name__.strip('_')} took {elapsed:.1f} s to fail (more than {FAIL_FAST_S:.0f} s)")
        stack.restart("etcd1", wait=False)
        stack.restart("etcd2", wait=False)
        back = time.monotonic()
        wait_etcd_healthy(stack)
        deadline = back + 60
        while True:
            try:
                _create(stub, 10)
                outcome.recovered_s = time.monotonic() - back
                break
            except grpc.RpcError as err:
                if time.monotonic() > deadline:
                    outcome.violations.append(f"no recovery within 60 s: {err.code().name} {err.details()}")
                    break
                time.sleep(0.5)
    return outcome
