"""The host index and sampled placement: bounded work per placement, the same filter and
weigher contract, exact ranking for farms no larger than the sample."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.common.errors import NoCapacity
from services.common.identity import Principal
from services.common.records import VmRecord, dump
from services.nameserver.registry import _owner_needle
from services.nameserver.scheduling.host_index import HostIndex
from services.nameserver.scheduling.host_state import HostState, PlacementRequest
from services.nameserver.scheduling.scheduler import Scheduler, SchedulerConfig


def host(name: str, cpus: int = 8, used: int = 0, mem: int = 16384, mem_used: int = 0) -> HostState:
    return HostState(name, cpus, mem, used, mem_used, frozenset())


def index(*hosts: HostState) -> HostIndex:
    idx = HostIndex()
    for h in hosts:
        idx.put(h)
    return idx


def req(cpus: int = 1, mem: int = 256, pinned: str = "") -> PlacementRequest:
    return PlacementRequest(cpus, mem, "images/tiny/versions/1", pinned)


def test_index_follows_updates_and_removals() -> None:
    # Prepare
    idx = index(host("a"), host("b", used=8), host("c", used=4))
    # Execute
    idx.put(host("a", used=7))
    idx.remove("c")
    # Assert
    assert len(idx) == 2 and "c" not in idx
    assert idx.count_with(1) == 1 and idx.count_with(0) == 2
    assert [h.name for h in idx.sample(5, 1, random.Random(1))] == ["a"]


def test_sample_is_distinct_uniform_and_only_hosts_with_room() -> None:
    # Prepare: 1,000 hosts, half of them full
    idx = index(*(host(f"h{i:04d}", used=8 if i % 2 else i % 8) for i in range(1000)))
    rng = random.Random(7)
    seen: Counter[str] = Counter()
    # Execute
    for _ in range(2000):
        sample = idx.sample(10, 1, rng)
        assert len({h.name for h in sample}) == 10
        seen.update(h.name for h in sample)
    # Assert: never a full host; every host with room drawn about equally often (20,000 / 500 = 40)
    assert all(int(n[1:]) % 2 == 0 for n in seen)
    assert len(seen) == 500
    assert min(seen.values()) > 10 and max(seen.values()) < 90


def test_small_farm_is_ranked_whole_as_before() -> None:
    hosts = [host("busy", used=6), host("idle"), host("half", used=4)]
    sched = Scheduler(SchedulerConfig(weighers={"free_cores": 1.0}, top_k=1))
    assert [h.name for h in sched.select(index(*hosts), req())] == [h.name for h in sched.rank(hosts, req())]


def test_large_farm_looks_at_a_sample_only_and_every_choice_fits() -> None:
    # Prepare: 5,000 hosts; only one in ten has 4 free cores
    idx = index(*(host(f"h{i}", used=4 if i % 10 == 0 else 7) for i in range(5000)))
    sched = Scheduler(SchedulerConfig(sample_size=16), random.Random(3))
    # Execute
    chosen = [sched.select(idx, req(cpus=4)) for _ in range(200)]
    # Assert: at most a sample's worth ranked, all fit
    assert all(0 < len(c) <= 16 for c in chosen)
    assert all(h.free_vcpus >= 4 for c in chosen for h in c)


def test_memory_bound_farm_falls_back_to_the_full_ranking() -> None:
    # Cores everywhere, memory on one host only: samples miss it, the fallback finds it.
    hosts = [host(f"h{i}", mem_used=16384) for i in range(300)] + [host("roomy")]
    sched = Scheduler(SchedulerConfig(sample_size=8, sample_rounds=2), random.Random(5))
    assert sched.select(index(*hosts), req(mem=1024))[0].name == "roomy"


def test_no_capacity_reasons_are_the_ones_rank_gives() -> None:
    sched = Scheduler(SchedulerConfig(sample_size=4))
    big = index(*(host(f"h{i}", cpus=4) for i in range(50)))
    with pytest.raises(NoCapacity) as cores:
        sched.select(big, req(cpus=8))
    assert cores.value.metadata == {"filter": "cores"}
    with pytest.raises(NoCapacity) as memory:
        sched.select(big, req(mem=10**6))
    assert memory.value.metadata == {"filter": "memory"}
    with pytest.raises(NoCapacity) as pinned:
        sched.select(big, req(pinned="elsewhere"))
    assert pinned.value.metadata == {"filter": "pinned"}
    with pytest.raises(NoCapacity) as none:
        sched.select(HostIndex(), req())
    assert none.value.reason == "NO_HYPERVISOR_UP"


def test_pinned_goes_to_its_host_in_any_farm() -> None:
    idx = index(*(host(f"h{i}") for i in range(100)))
    assert [h.name for h in Scheduler(SchedulerConfig(sample_size=4)).select(idx, req(pinned="h42"))] == ["h42"]


def test_hosts_being_placed_on_come_last() -> None:
    hosts = index(host("a"), host("b"), host("c"))
    ranked = Scheduler(SchedulerConfig(top_k=3)).select(hosts, req(), avoid={"a", "b"})
    assert ranked[0].name == "c" and {h.name for h in ranked} == {"a", "b", "c"}


def test_owner_needle_matches_the_stored_record() -> None:
    # The user list skips records without these bytes: they must be exactly what dump writes.
    vm = VmRecord("vm-1", "images/tiny", "images/tiny/versions/1", 1, 128, 'al"ice', "atl\\as")
    assert _owner_needle(Principal('al"ice', "atl\\as")) in dump(vm)
    assert _owner_needle(Principal("alice", "atlas")) not in dump(vm)


def test_vm_key_slices_are_contiguous_and_cover_every_id() -> None:
    from services.nameserver.registry import _slice_depth, _slice_end

    # Prepare
    prefix = "/r/vms/"
    assert _slice_depth(1000, 100) == 0 and _slice_depth(100_000, 100) == 2 and _slice_depth(100_000, 1000) == 1
    # Execute: walk the slices of depth 2 from the start of the prefix
    ends, key = [], ""
    while (end := _slice_end(prefix, key, 2)) != "":
        ends.append(end)
        key = end
    # Assert: 255 boundaries in order, the last slice open-ended; any id lies before its slice's end
    assert len(ends) == 255 and ends == sorted(ends) and ends[0] == "/r/vms/vm-01"
    for ident in ("vm-00aa", "vm-3a4f5e", "vm-ff01", "vm-zz", "other"):
        end = _slice_end(prefix, prefix + ident, 2)
        assert end == "" or prefix + ident < end
