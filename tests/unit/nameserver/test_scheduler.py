from __future__ import annotations

import random

import pytest

from services.common.errors import NoCapacity
from services.nameserver.scheduling.host_state import HostState, PlacementRequest
from services.nameserver.scheduling.scheduler import Scheduler, SchedulerConfig


def host(name: str, cpus: int = 8, used: int = 0, mem: int = 16384, mem_used: int = 0, cached: tuple[str, ...] = ()) -> HostState:
    return HostState(name, cpus, mem, used, mem_used, frozenset(cached))


def req(cpus: int = 1, mem: int = 256, image: str = "images/tiny/versions/1", pinned: str = "") -> PlacementRequest:
    return PlacementRequest(cpus, mem, image, pinned)


def test_filters_drop_hosts_that_do_not_fit() -> None:
    # Prepare
    sched = Scheduler(SchedulerConfig(top_k=1))
    hosts = [host("full", used=8), host("small-mem", mem_used=16000), host("ok")]
    # Execute
    ranked = sched.rank(hosts, req(cpus=2, mem=1024))
    # Assert
    assert [h.name for h in ranked] == ["ok"]


def test_no_capacity_names_the_filter() -> None:
    sched = Scheduler(SchedulerConfig())
    with pytest.raises(NoCapacity) as info:
        sched.rank([host("a", cpus=4)], req(cpus=8))
    assert "8 free vCPUs" in info.value.message
    assert info.value.metadata == {"filter": "cores"}


def test_no_host_up() -> None:
    with pytest.raises(NoCapacity) as info:
        Scheduler(SchedulerConfig()).rank([], req())
    assert info.value.reason == "NO_HYPERVISOR_UP"


def test_pinned_vm_goes_only_to_its_host() -> None:
    ranked = Scheduler(SchedulerConfig()).rank([host("a"), host("b"), host("c")], req(pinned="b"))
    assert [h.name for h in ranked] == ["b"]


def test_spread_prefers_the_emptiest_host_and_pack_the_fullest() -> None:
    hosts = [host("busy", used=6), host("idle"), host("half", used=4)]
    spread = Scheduler(SchedulerConfig(weighers={"free_cores": 1.0}, top_k=1)).rank(hosts, req())
    pack = Scheduler(SchedulerConfig(weighers={"free_cores": -1.0}, top_k=1)).rank(hosts, req())
    assert spread[0].name == "idle"
    assert pack[0].name == "busy"


def test_cached_image_wins_among_equals() -> None:
    hosts = [host("cold"), host("warm", cached=("images/tiny/versions/1",))]
    ranked = Scheduler(SchedulerConfig(weighers={"image_cached": 1.0}, top_k=1)).rank(hosts, req())
    assert ranked[0].name == "warm"


def test_top_k_spreads_concurrent_choices() -> None:
    # With several replicas, always choosing one host would make their transactions collide.
    sched = Scheduler(SchedulerConfig(top_k=3), rng=random.Random(7))
    hosts = [host(f"h{i}") for i in range(10)]
    firsts = {sched.rank(hosts, req())[0].name for _ in range(50)}
    assert len(firsts) == 3


def test_fits_checks_the_exact_usage() -> None:
    sched = Scheduler(SchedulerConfig())
    h = host("a", cpus=4)
    assert sched.fits(h, req(cpus=2))
    assert not sched.fits(h.with_usage(3, 0), req(cpus=2))


def test_unknown_plugin_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scheduler plug-ins: nope"):
        Scheduler(SchedulerConfig(filters=("nope",)))
