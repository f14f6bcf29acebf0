"""What the scheduler knows about a host at the moment it places a VM."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class HostState:
    name: str
    vcpu_count: int
    memory_mib: int
    vcpus_used: int
    memory_mib_used: int
    cached_images: frozenset[str]

    @property
    def free_vcpus(self) -> int:
        return self.vcpu_count - self.vcpus_used

    @property
    def free_memory_mib(self) -> int:
        return self.memory_mib - self.memory_mib_used

    def with_usage(self, vcpus_used: int, memory_mib_used: int) -> HostState:
        return replace(self, vcpus_used=vcpus_used, memory_mib_used=memory_mib_used)


@dataclass(frozen=True)
class PlacementRequest:
    vcpu_count: int
    memory_mib: int
    image_version: str
    pinned_hypervisor: str = ""
