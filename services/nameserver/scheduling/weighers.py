"""Host weighers: one number each (higher is better), combined with per-weigher multipliers.

A positive multiplier on the free-resource weighers spreads VMs over hosts; a negative one packs
them (fills a host before using the next, leaving whole hosts free for large requests).
"""

from __future__ import annotations

from typing import Protocol

from services.nameserver.scheduling.host_state import HostState, PlacementRequest


class HostWeigher(Protocol):
    name: str

    def weigh(self, host: HostState, req: PlacementRequest) -> float: ...


class FreeCoresWeigher:
    name = "free_cores"

    def weigh(self, host: HostState, req: PlacementRequest) -> float:
        return host.free_vcpus / max(host.vcpu_count, 1)


class FreeMemoryWeigher:
    name = "free_memory"

    def weigh(self, host: HostState, req: PlacementRequest) -> float:
        return host.free_memory_mib / max(host.memory_mib, 1)


class ImageCachedWeigher:
    """Prefer hosts that already hold the image: no transfer before the boot."""

    name = "image_cached"

    def weigh(self, host: HostState, req: PlacementRequest) -> float:
        return 1.0 if req.image_version in host.cached_images else 0.0


_WEIGHERS: tuple[type[HostWeigher], ...] = (FreeCoresWeigher, FreeMemoryWeigher, ImageCachedWeigher)
ALL_WEIGHERS: dict[str, type[HostWeigher]] = {w.name: w for w in _WEIGHERS}
