"""Chooses hosts for a VM: filter, weigh, then pick among the best few at random.

The random pick among near-equal hosts matters with several nameserver replicas: if every replica
chose the single best host, concurrent placements would all collide on one host's revision and
retry; spreading the choice keeps etcd transactions mostly conflict-free.

In a large farm ``select`` filters and weighs a uniform sample of the hosts that have room for
the request's cores (power of k choices) instead of every host; a farm no larger than the sample
is ranked whole, exactly as ``rank`` does.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from services.common.errors import NoCapacity
from services.nameserver.scheduling.filters import ALL_FILTERS, CoreFilter, HostFilter, PinnedHostFilter
from services.nameserver.scheduling.host_index import HostIndex
from services.nameserver.scheduling.host_state import HostState, PlacementRequest
from services.nameserver.scheduling.weighers import ALL_WEIGHERS, HostWeigher

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    filters: tuple[str, ...] = ("pinned", "cores", "memory")
    """Filters applied in order, by name (see filters.py)."""
    weighers: dict[str, float] = field(
        default_factory=lambda: {"free_cores": 1.0, "free_memory": 1.0, "image_cached": 0.5}
    )
    """Weigher name -> multiplier. Negative free_* multipliers pack instead of spreading."""
    top_k: int = 3
    """Pick at random among this many best hosts."""
    sample_size: int = 24
    """Hosts filtered and weighed per placement in a farm larger than this (power of k
    choices); a smaller farm is ranked whole."""
    sample_rounds: int = 3
    """Samples drawn before falling back to ranking every host (which also names the filter
    that left none)."""


class Scheduler:
    def __init__(self, config: SchedulerConfig, rng: random.Random | None = None) -> None:
        unknown = [n for n in config.filters if n not in ALL_FILTERS] + [
            n for n in config.weighers if n not in ALL_WEIGHERS
        ]
        if unknown:
            raise ValueError(f"unknown scheduler plug-ins: {', '.join(unknown)}")
        self._filters: list[HostFilter] = [ALL_FILTERS[n]() for n in config.filters]
        self._weighers: list[tuple[HostWeigher, float]] = [(ALL_WEIGHERS[n](), m) for n, m in config.weighers.items()]
        self._top_k = max(1, config.top_k)
        self._sample_size = max(1, config.sample_size)
        self._sample_rounds = max(1, config.sample_rounds)
        self._rng = rng or random.Random()
        self._checks_cores = any(isinstance(f, CoreFilter) for f in self._filters)

    def select(self, hosts: HostIndex, req: PlacementRequest, avoid: AbstractSet[str] = frozenset()) -> list[HostState]:
        """Hosts that fit, best first (random order among the top_k), looking at a bounded
        number of hosts. ``avoid`` are hosts to use only if the sample has nothing else (this
        replica has a placement in flight there). Raises NoCapacity as ``rank`` does."""
        if req.pinned_hypervisor:
            pinned = hosts.get(req.pinned_hypervisor)
            if pinned is None:
                if not len(hosts):
                    raise NoCapacity("no hypervisor is up", reason="NO_HYPERVISOR_UP")
                why = PinnedHostFilter().why_not(req)
                raise NoCapacity(f"cannot place the VM: {why}", metadata={"filter": PinnedHostFilter.name})
            return self.rank([pinned], req)
        if len(hosts) <= self._sample_size:
            return self._prefer(self.rank(hosts.states(), req), avoid)
        min_free = req.vcpu_count if self._checks_cores else 0
        if hosts.count_with(min_free) == 0:
            raise NoCapacity(f"cannot place the VM: {CoreFilter().why_not(req)}", metadata={"filter": CoreFilter.name})
        for _ in range(self._sample_rounds):
            kept = [h for h in hosts.sample(self._sample_size, min_free, self._rng) if self.fits(h, req)]
            if kept:
                return self._prefer(self._order(kept, req), avoid)
        LOG.debug("no sampled host fits %s: ranking all %d hosts", req, len(hosts))
        return self._prefer(self.rank(hosts.states(), req), avoid)

    @staticmethod
    def _prefer(ranked: list[HostState], avoid: AbstractSet[str]) -> list[HostState]:
        if not avoid:
            return ranked
        free = [h for h in ranked if h.name not in avoid]
        return free + [h for h in ranked if h.name in avoid]

    def rank(self, hosts: Sequence[HostState], req: PlacementRequest) -> list[HostState]:
        """Hosts that fit, best first (with a random order among the top_k). Raises NoCapacity
        naming the filter that left no host."""
        candidates = list(hosts)
        if not candidates:
            raise NoCapacity("no hypervisor is up", reason="NO_HYPERVISOR_UP")
        for flt in self._filters:
            kept = [h for h in candidates if flt.passes(h, req)]
            if not kept:
                LOG.debug("filter %s rejected all %d hosts", flt.name, len(candidates))
                raise NoCapacity(f"cannot place the VM: {flt.why_not(req)}", metadata={"filter": flt.name})
            candidates = kept
        return self._order(candidates, req)

    def _order(self, candidates: list[HostState], req: PlacementRequest) -> list[HostState]:
        scored = sorted(candidates, key=lambda h: self._score(h, req), reverse=True)
        head = scored[: self._top_k]
        self._rng.shuffle(head)
        return head + scored[self._top_k :]

    def fits(self, host: HostState, req: PlacementRequest) -> bool:
        return all(f.passes(host, req) for f in self._filters)

    def _score(self, host: HostState, req: PlacementRequest) -> float:
        return sum(m * w.weigh(host, req) for w, m in self._weighers)
