"""What must hold after chaos, read independently of the code under test where possible (etcd
through etcdctl; the hypervisors through their own ListDomains, libvirt's view)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc

from deploy.stack.stack import StackState
from tests import stacks
from tests.chaos.load import LoadReport
from wnodes.hypervisor.v1 import agent_service_pb2, agent_service_pb2_grpc


@dataclass
class Verdict:
    checked: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, why: str = "") -> None:
        self.checked.append(name)
        if not ok:
            self.violations.append(f"{name}: {why}")


def domains(state: StackState) -> dict[str, set[str]]:
    """Hypervisor -> the VM ids its driver runs, from each agent process."""
    result: dict[str, set[str]] = {}
    for proc in state.procs:
        if proc.kind != "hypervisor":
            continue
        with grpc.insecure_channel(proc.endpoint) as channel:
            response = agent_service_pb2_grpc.AgentServiceStub(channel).ListDomains(agent_service_pb2.ListDomainsRequest(), timeout=10)
        for domain in response.domains:
            result.setdefault(domain.hypervisor, set()).add(domain.vm_id)
    return result


def check_during(state: StackState, verdict: Verdict) -> None:
    """Safe at any moment: no VM twice, no host overbooked, usage records match placements."""
    try:
        stacks.check_registry_invariants(state)
        verdict.check("registry (no VM twice, no host overbooked)", True)
    except AssertionError as exc:
        verdict.check("registry (no VM twice, no host overbooked)", False, str(exc))


def check_settled(state: StackState, report: LoadReport, verdict: Verdict, settle_timeout: float = 60.0) -> None:
    """After the load drained: every accepted request settled once, and nothing is left behind.
    The reconciler may need a moment to finish deletions that a kill interrupted."""
    counts = report.counts()
    verdict.check("every accepted request reached a terminal state", counts["unresolved"] == 0,
                  "; ".join(f"{r.request_id}: {r.detail}" for r in report.requests if r.outcome == "unresolved")[:2000])
    ids = [r.request_id for r in report.requests]
    verdict.check("each request answered once", len(ids) == len(set(ids)), "a request id was reused")
    deadline = time.monotonic() + settle_timeout
    while True:
        vms = stacks.etcd_prefix(state, "/vms/")
        leases = stacks.etcd_prefix(state, "/leases/")
        placements = stacks.etcd_prefix(state, "/placements/")
        running = {host: ids for host, ids in domains(state).items() if ids}
        if not vms and not leases and not placements and not running:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    check_during(state, verdict)
    verdict.check("no VM left in the registry", not vms, f"{len(vms)} left: {sorted(vms)[:5]}")
    verdict.check("no hostname or MAC lease leaked", not leases, f"{len(leases)} left: {sorted(leases)[:5]}")
    verdict.check("no placement leaked", not placements, f"{len(placements)} left")
    verdict.check("hypervisors and registry agree (no domain without a VM)", not running,
                  f"domains still running: { {h: sorted(i)[:3] for h, i in running.items()} }")
    usage = stacks.etcd_prefix(state, "/usage/")
    busy = {k: v for k, v in usage.items() if v.get("vms")}
    verdict.check("no resources held for VMs that are gone", not busy, f"{sorted(busy)[:5]}")
