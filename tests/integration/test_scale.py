"""The scale machinery on a real etcd: group commit keeps every transaction's meaning, sampled
placement from three replicas never overbooks, one agent process shares one lease and one watch
between its hosts (and survives losing the lease), the reconciler finds dead hosts without
scanning the registry, and lists stay bounded and complete."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.common import records
from services.common.errors import NoCapacity, NotFound
from services.common.etcd_store import EtcdStore
from services.common.group_commit import GroupCommit
from services.common.identity import Principal
from services.common.keys import Keys
from services.common.records import HostUsage, HypervisorRecord, ImageRecord, VmRecord, VmState
from services.common.store import Compare, Put, Store, TxnItem
from services.hypervisor.drivers.fake import FakeDriver
from services.hypervisor.host_group import HostGroup
from services.hypervisor.lifecycle import Agent, AgentConfig
from services.nameserver.duties import Reconciler
from services.nameserver.host_cache import HostCache
from services.nameserver.registry import Registry, VmSpec
from services.nameserver.scheduling.scheduler import Scheduler, SchedulerConfig
from tests import private_etcd

pytestmark = pytest.mark.integration
ALICE = Principal("alice", "atlas")
BOB = Principal("bob", "cms")
ADMIN = Principal("ops", "wnodes", frozenset({"admin"}))


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    with private_etcd.running(tmp_path_factory.mktemp("etcd")) as endpoints:
        yield endpoints


@pytest.fixture
async def store(etcd: list[str]) -> AsyncIterator[EtcdStore]:
    s = EtcdStore(etcd)
    await s.connect()
    yield s
    await s.close()


@pytest.fixture
def keys() -> Keys:
    return Keys(f"/test-{uuid.uuid4().hex[:8]}")


async def add_image(store: Store, keys: Keys) -> None:
    await store.put(keys.image_version("tiny", 1), records.dump(ImageRecord("tiny", 1, "wnodes")))


async def add_hosts(store: Store, keys: Keys, count: int, vcpus: int, lease: int = 0) -> None:
    for i in range(0, count, 100):
        await store.txn_many([TxnItem([], [
            Put(keys.hypervisor(f"h{j:04d}"), records.dump(HypervisorRecord(f"h{j:04d}", "", vcpus, 65536, "fake")), lease=lease)
            for j in range(i, min(count, i + 100))
        ])])


async def replica(store: Store, keys: Keys, sample_size: int = 24) -> tuple[Registry, HostCache]:
    cache = HostCache(store, keys)
    await cache.start()
    await cache.wait_ready()
    return Registry(store, keys, Scheduler(SchedulerConfig(sample_size=sample_size)), cache), cache


async def eventually(check: object, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


# --- group commit ---------------------------------------------------------------------------


async def test_group_commit_batches_independent_txns_and_serialises_overlapping_ones(store: Store, keys: Keys) -> None:
    # Prepare: 100 creates of distinct keys, 40 compare-and-set increments of one counter
    commits = GroupCommit(store)
    counter = keys.root + "/counter"
    await store.put(counter, b"0")

    async def create(i: int) -> bool:
        key = f"{keys.root}/k/{i:03d}"
        return (await commits.txn(TxnItem([Compare(key, 0)], [Put(key, b"v")]))).succeeded

    async def increment() -> int:
        tries = 0
        while True:
            tries += 1
            entry = await commits.get(counter)
            assert entry is not None
            out = await commits.txn(TxnItem([Compare(counter, entry.mod_revision)], [Put(counter, str(int(entry.value) + 1).encode())],
                                            reads_on_failure=[counter]))
            if out.succeeded:
                return tries
            assert out.reads[0] is not None and out.reads[0].value != entry.value  # it says why: the counter moved

    # Execute
    created = await asyncio.gather(*(create(i) for i in range(100)), *(create(i) for i in range(50)))
    requests, items = commits.write_requests, commits.write_items
    await asyncio.gather(*(increment() for _ in range(40)))
    # Assert: each key created exactly once, no increment lost, fewer requests than transactions
    assert sum(created) == 100
    final = await store.get(counter)
    assert final is not None and final.value == b"40"
    assert items == 150 and requests < items / 10, "independent creates left together"
    reads_before = commits.read_requests
    found = await asyncio.gather(*(commits.get(f"{keys.root}/k/{i:03d}") for i in range(150)))
    assert [e is not None for e in found] == [True] * 100 + [False] * 50
    assert commits.read_requests - reads_before <= 4, "concurrent reads left together"
    await commits.close()


# --- placement ------------------------------------------------------------------------------


async def test_three_sampling_replicas_never_overbook_and_stay_idempotent(store: Store, keys: Keys) -> None:
    # Prepare: 300 hosts of 2 vCPUs (600 vCPUs) and 700 requests of 1 from three replicas that
    # each look at samples of 8 hosts
    await add_image(store, keys)
    await add_hosts(store, keys, 300, vcpus=2)
    replicas = [await replica(store, keys, sample_size=8) for _ in range(3)]
    request_ids = [uuid.uuid4().hex for _ in range(700)]

    async def create(i: int, request_id: str) -> str:
        registry = replicas[i % 3][0]
        try:
            view = await registry.create_vm(VmSpec("tiny", 1, 128), ALICE, request_id, {})
            return view.op.id
        except NoCapacity:
            return ""

    # Execute: every request, then every request again on another replica (a client's retry)
    first = await asyncio.gather(*(create(i, r) for i, r in enumerate(request_ids)))
    again = await asyncio.gather(*(create(i + 1, r) for i, r in enumerate(request_ids)))
    # Assert
    placed = [op for op in first if op]
    assert len(placed) == 600, "every core used, none twice"
    assert [a for a, f in zip(again, first, strict=True) if f] == placed, "a retry returns the first operation"
    assert all(op.startswith("create-vm-") for op in placed) and await store.count_prefix(keys.operation()) == 0, "creates store no operation"
    view = await replicas[0][0].operations.get(f"operations/{placed[0]}", ALICE)
    assert view.op.kind == "create" and view.vm is not None and not view.done
    with pytest.raises(NotFound):
        await replicas[0][0].operations.get(f"operations/{placed[0]}", BOB)
    vms = [records.load(VmRecord, e.value) for e in (await store.get_prefix(keys.vm()))[0]]
    assert len(vms) == 600 and len({v.request_id for v in vms}) == 600
    usage = {e.key.rsplit("/", 1)[-1]: records.load(HostUsage, e.value) for e in (await store.get_prefix(keys.usage()))[0]}
    per_host: dict[str, set[str]] = {}
    for v in vms:
        per_host.setdefault(v.hypervisor, set()).add(v.id)
    assert all(len(ids) <= 2 for ids in per_host.values()), "a host was overbooked"
    assert {h: set(u.vms) for h, u in usage.items() if u.vms} == per_host
    for _, cache in replicas:
        await cache.stop()


# --- one agent process, many hosts ----------------------------------------------------------


async def test_hosts_of_a_process_share_one_lease_and_one_watch_and_boot_their_vms(store: EtcdStore, keys: Keys, tmp_path: Path) -> None:
    # Prepare: 40 simulated hosts in one HostGroup, one replica
    await add_image(store, keys)
    agents = [
        Agent(AgentConfig(host=f"sim-{i:03d}", endpoint="", run_dir=tmp_path / f"sim-{i:03d}", volume_dir=tmp_path / "volumes" / f"sim-{i:03d}"),
              store, keys,
              FakeDriver(vcpu_count=4, memory_mib=8192), None)
        for i in range(40)
    ]
    group = HostGroup(store, keys, agents, lease_ttl=2, resync_interval=1.0)
    await group.start()
    registry, cache = await replica(store, keys)
    try:
        await eventually(_count(store, keys.hypervisor(), 40))
        leases = {kv.lease for kv in (await store.client.kv.get(keys.hypervisor(), range_end=_end(keys.hypervisor()))).kvs}  # type: ignore[union-attr]
        assert len(leases) == 1, "one lease for all the hosts of the process"
        # Execute: 60 VMs through the registry; the group's one watch hands each to its host
        ops = await asyncio.gather(*(registry.create_vm(VmSpec("tiny", 1, 256), ALICE, uuid.uuid4().hex, {}) for _ in range(60)))
        await eventually(_all_active(store, keys, 60))
        # Lose the lease (etcd forgets it, as after a long partition): the group registers
        # every host again under a new lease and rechecks every VM
        await store.revoke_lease(group._lease.lease)
        await eventually(_count(store, keys.hypervisor(), 40))
        await eventually(_all_active(store, keys, 60))
        # Deleting goes through the same watch
        for view in ops[:10]:
            await registry.delete_vm(view.op.vm_id, ALICE, "")
        await eventually(_count(store, keys.vm(), 50))
    finally:
        await cache.stop()
        await group.stop()
    assert await _count(store, keys.hypervisor(), 0)()  # type: ignore[operator]


def _end(prefix: str) -> bytes:
    from etcd3aio.kv import prefix_range_end

    return prefix_range_end(prefix.encode())


def _count(store: Store, prefix: str, n: int) -> object:
    async def check() -> bool:
        return await store.count_prefix(prefix) == n

    return check


def _all_active(store: Store, keys: Keys, n: int) -> object:
    async def check() -> bool:
        vms = [records.load(VmRecord, e.value) for e in (await store.get_prefix(keys.vm()))[0]]
        return len(vms) == n and all(v.state == VmState.ACTIVE for v in vms)

    return check


# --- the reconciler -------------------------------------------------------------------------


async def test_reconciler_marks_the_vms_of_a_dead_host_unknown_without_a_scan(store: Store, keys: Keys) -> None:
    # Prepare: 20 hosts under one lease, 30 VMs placed on them
    await add_image(store, keys)
    lease = await store.grant_lease(60)
    await add_hosts(store, keys, 20, vcpus=8, lease=lease)
    registry, cache = await replica(store, keys)
    views = await asyncio.gather(*(registry.create_vm(VmSpec("tiny", 1, 128), ALICE, uuid.uuid4().hex, {}) for _ in range(30)))
    victim = views[0].vm.hypervisor if views[0].vm else ""
    doomed = {v.vm.id for v in views if v.vm and v.vm.hypervisor == victim}
    reconciler = Reconciler(store, keys, lambda vm_id: registry.delete_vm(vm_id, ADMIN, ""), cache)
    # Execute: the victim's record disappears (its agent died)
    await store.delete(keys.hypervisor(victim))
    await eventually(_gone_from_cache(cache, victim))
    await reconciler.step()
    # Assert: exactly its VMs are UNKNOWN
    vms = {v.id: v for v in (records.load(VmRecord, e.value) for e in (await store.get_prefix(keys.vm()))[0])}
    assert {i for i, v in vms.items() if v.state == VmState.UNKNOWN} == doomed
    assert all("stopped reporting" in vms[i].state_message for i in doomed)
    await cache.stop()


def _gone_from_cache(cache: HostCache, host: str) -> object:
    async def check() -> bool:
        return host not in cache.hypervisors

    return check


async def test_expired_vms_are_deleted_by_the_sweep(store: Store, keys: Keys) -> None:
    await add_image(store, keys)
    await add_hosts(store, keys, 5, vcpus=8)
    registry, cache = await replica(store, keys)
    keep = await registry.create_vm(VmSpec("tiny", 1, 128, labels={"expire_time": "9999999999"}), ALICE, uuid.uuid4().hex, {})
    gone = await registry.create_vm(VmSpec("tiny", 1, 128, labels={"expire_time": "1"}), ALICE, uuid.uuid4().hex, {})
    deleted: list[str] = []

    async def delete(vm_id: str) -> None:
        deleted.append(vm_id)

    await Reconciler(store, keys, delete, cache).step()
    assert deleted == [gone.op.vm_id] and keep.op.vm_id not in deleted
    await cache.stop()


# --- lists ----------------------------------------------------------------------------------


async def test_lists_are_bounded_per_call_and_complete_over_pages(store: Store, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: 120 VMs of bob's and 7 of alice's, spread over 4 hosts; a user's list may
    # examine only 25 records per call
    from services.nameserver import registry as registry_module

    monkeypatch.setattr(registry_module, "LIST_SCAN_BUDGET", 25)
    await add_image(store, keys)
    await add_hosts(store, keys, 4, vcpus=64)
    registry, cache = await replica(store, keys)
    owners = [BOB] * 120 + [ALICE] * 7
    random.Random(1).shuffle(owners)
    for who in owners:
        await registry.create_vm(VmSpec("tiny", 1, 128), who, uuid.uuid4().hex, {})

    async def walk(principal: Principal, page_size: int, hypervisor: str = "") -> tuple[list[str], int]:
        seen, token, calls = [], "", 0
        while True:
            page, token = await registry.list_vms(principal, page_size, token, hypervisor)
            calls += 1
            assert len(page) <= page_size
            seen += [v.id for v in page]
            if not token:
                return seen, calls

    # Execute and assert: every VM once, only the caller's, pages bounded
    alice, calls = await walk(ALICE, 5)
    assert len(alice) == 7 == len(set(alice)) and calls >= 127 // 25
    admin, _ = await walk(ADMIN, 50)
    assert len(admin) == 127 == len(set(admin))
    sliced, _ = await walk(ADMIN, 5)  # 127 VMs, pages of 5: read a sixteenth of the key space at a time
    assert sliced == admin == sorted(admin)
    host = (await registry.list_hypervisors())[0].name
    on_host, _ = await walk(ADMIN, 7, f"hypervisors/{host}")
    expected = [e.key.rsplit("/", 1)[-1] for e in (await store.get_prefix(keys.placements(host)))[0]]
    assert on_host == expected
    alice_on_host, _ = await walk(ALICE, 3, f"hypervisors/{host}")
    assert set(alice_on_host) == set(alice) & set(expected)
    with contextlib.suppress(Exception):
        await cache.stop()
