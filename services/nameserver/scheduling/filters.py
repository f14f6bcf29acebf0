"""Host filters: one predicate each, enabled by name in the nameserver's configuration.

Each filter also says why it rejected a host, so that a refused request can tell the user what
did not fit (RESOURCE_EXHAUSTED with the reason), as Nova's filter logs do.
"""

from __future__ import annotations

from typing import Protocol

from services.nameserver.scheduling.host_state import HostState, PlacementRequest


class HostFilter(Protocol):
    name: str

    def passes(self, host: HostState, req: PlacementRequest) -> bool: ...

    def why_not(self, req: PlacementRequest) -> str: ...


class PinnedHostFilter:
    """A VM pinned to a hypervisor (the LRMS allocated that node) may only go there."""

    name = "pinned"

    def passes(self, host: HostState, req: PlacementRequest) -> bool:
        return not req.pinned_hypervisor or host.name == req.pinned_hypervisor

    def why_not(self, req: PlacementRequest) -> str:
        return f"the VM is pinned to {req.pinned_hypervisor}, which is not up"


class CoreFilter:
    name = "cores"

    def passes(self, host: HostState, req: PlacementRequest) -> bool:
        return host.free_vcpus >= req.vcpu_count

    def why_not(self, req: PlacementRequest) -> str:
        return f"no hypervisor has {req.vcpu_count} free vCPUs"


class RamFilter:
    name = "memory"

    def passes(self, host: HostState, req: PlacementRequest) -> bool:
        return host.free_memory_mib >= req.memory_mib

    def why_not(self, req: PlacementRequest) -> str:
        return f"no hypervisor has {req.memory_mib} MiB of free memory"


_FILTERS: tuple[type[HostFilter], ...] = (PinnedHostFilter, CoreFilter, RamFilter)
ALL_FILTERS: dict[str, type[HostFilter]] = {f.name: f for f in _FILTERS}
