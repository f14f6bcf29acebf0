"""Kill plans for the chaos suite, and one run of a plan under load.

A run: load through the gateway; after a while SIGKILL the plan's components (at once), keep the
load on while they are dead, restart them, keep the load on, then drain and check the
invariants. The registry invariants are also sampled every second throughout.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from deploy.stack import etcd_cluster
from deploy.stack.stack import Stack
from tests.chaos.invariants import Verdict, check_during, check_settled
from tests.chaos.load import LoadRunner


@dataclass(frozen=True)
class Plan:
    name: str
    kills: tuple[str, ...]


# One kill of each component type, then pairs: what `make test` runs, and what `make chaos` adds.
SINGLES = (
    Plan("nameserver replica", ("nameserver1",)),
    Plan("etcd member", ("etcd2",)),
    Plan("hypervisor agent", ("hypervisor0",)),
    Plan("imagestore", ("imagestore",)),
    Plan("gateway", ("gateway",)),
)
PAIRS = (
    Plan("nameserver replica + etcd member", ("nameserver0", "etcd1")),
    Plan("gateway + hypervisor agent", ("gateway", "hypervisor0")),
    Plan("imagestore + nameserver replica", ("imagestore", "nameserver2")),
    Plan("two nameserver replicas", ("nameserver0", "nameserver2")),
)


@dataclass
class Outcome:
    plan: Plan
    counts: dict[str, int]
    verdict: Verdict
    seconds: float
    samples: int = 0
    # Why requests ended FAILED (a terminal answer, allowed, but worth reading): the first few.
    failures: list[str] = field(default_factory=list)


def run_plan(stack: Stack, plan: Plan, *, before_s: float = 3.0, dead_s: float = 2.0, after_s: float = 4.0, workers: int = 6) -> Outcome:
    state = stack.state
    assert state is not None
    verdict = Verdict()
    started = time.monotonic()
    load = LoadRunner(state.gateway, workers=workers)
    stop_sampling = threading.Event()
    samples = 0

    def sample() -> None:
        nonlocal samples
        while not stop_sampling.wait(1.0):
            check_during(state, verdict)
            samples += 1

    sampler = threading.Thread(target=sample, daemon=True)
    load.start()
    sampler.start()
    time.sleep(before_s)
    for name in plan.kills:
        stack.kill(name)
    time.sleep(dead_s)
    for name in plan.kills:
        stack.restart(name, wait=not name.startswith("etcd"))
    if any(name.startswith("etcd") for name in plan.kills):
        wait_etcd_healthy(stack)
    time.sleep(after_s)
    report = load.stop()
    stop_sampling.set()
    sampler.join()
    check_settled(state, report, verdict)
    failures = [f"{r.request_id[:8]}: {r.detail}" for r in report.requests if r.outcome == "failed"][:5]
    return Outcome(plan, report.counts(), verdict, time.monotonic() - started, samples, failures)


def wait_etcd_healthy(stack: Stack, timeout: float = 30.0) -> None:
    state = stack.state
    assert state is not None
    deadline = time.monotonic() + timeout
    while not etcd_cluster.healthy(state.etcd_endpoints):
        if time.monotonic() > deadline:
            raise TimeoutError("etcd did not become healthy again")
        time.sleep(0.2)
