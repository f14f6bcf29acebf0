"""Chooses hosts for a VM: filter, weigh, then pick among the best few at random.

The random pick among near-equal hosts matters with several nameserver replicas: if every replica
chose the single best host, concurrent placements would all collide on one host's revision and
retry; spreading the choice keeps etcd transactions mostly conflict-free.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.common.errors import NoCapacity
from services.nameserver.scheduling.filters import ALL_FILTERS, HostFilter
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
        self._rng = rng or random.Random()

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
        scored = sorted(candidates, key=lambda h: self._score(h, req), reverse=True)
        head = scored[: self._top_k]
        self._rng.shuffle(head)
        return head + scored[self._top_k :]

    def fits(self, host: HostState, req: PlacementRequest) -> bool:
        return all(f.passes(host, req) for f in self._filters)

    def _score(self, host: HostState, req: PlacementRequest) -> float:
        return sum(m * w.weigh(host, req) for w, m in self._weighers)
