"""The Store contract (services/common/store.py), one suite for every implementation: subclass
``StoreContract``, provide the ``store`` fixture and ``compact``. tests/contract/test_store.py
runs it on the in-memory store and on a real etcd.

Revisions are the store's, shared by every test on one etcd: tests compare revisions with each
other, never with a number, and write under a prefix of their own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from services.common.errors import Unavailable
from services.common.store import MAX_TXN_OPS, Compare, Delete, Event, Put, Store, TxnItem, WatchCompacted

EVENT_TIMEOUT = 5.0


async def next_events(watch: AsyncIterator[Event], n: int, timeout: float = EVENT_TIMEOUT) -> list[Event]:
    async with asyncio.timeout(timeout):
        return [await anext(watch) for _ in range(n)]


async def revision_of(store: Store) -> int:
    _, revision = await store.get_prefix("/no-such-prefix/", limit=1)
    return revision


class StoreContract:
    @pytest.fixture
    def p(self) -> str:
        """A key prefix of this test's own."""
        return f"/contract/{uuid.uuid4().hex[:12]}/"

    async def compact(self, store: Store, revision: int) -> None:
        """Forget the history before revision (not part of Store: only etcd's own compaction
        does it in production). Each store's subclass supplies it: MemoryStore.compact, etcd's
        Compact RPC."""
        raise NotImplementedError("a StoreContract subclass says how its store compacts")

    # -- revisions -------------------------------------------------------------------------

    async def test_a_write_raises_the_revision_and_keeps_the_create_revision(self, store: Store, p: str) -> None:
        # Prepare
        first = await store.put(p + "a", b"1")
        # Execute
        second = await store.put(p + "a", b"2")
        # Assert
        assert second == first + 1
        entry = await store.get(p + "a")
        assert entry is not None
        assert (entry.value, entry.mod_revision, entry.create_revision) == (b"2", second, first)
        assert await revision_of(store) == second

    async def test_a_key_created_again_after_a_delete_has_a_new_create_revision(self, store: Store, p: str) -> None:
        # Prepare
        first = await store.put(p + "a", b"1")
        await store.delete(p + "a")
        # Execute
        again = await store.put(p + "a", b"1")
        # Assert
        assert again == first + 2
        entry = await store.get(p + "a")
        assert entry is not None and entry.create_revision == again
        assert await store.get(p + "missing") is None

    async def test_a_request_that_changes_nothing_keeps_the_revision(self, store: Store, p: str) -> None:
        # Prepare
        before = await store.put(p + "a", b"1")
        # Execute
        await store.delete(p + "missing")
        ok, after_txn = await store.txn([Compare(p + "a", 0)], [Put(p + "b", b"x")])
        # Assert
        assert not ok and after_txn == before
        assert await revision_of(store) == before
        assert await store.get(p + "b") is None

    # -- transactions ----------------------------------------------------------------------

    async def test_compare_zero_means_absent_and_a_revision_means_unchanged(self, store: Store, p: str) -> None:
        # Prepare / Execute: create only if absent
        created, rev = await store.txn([Compare(p + "a", 0)], [Put(p + "a", b"1")])
        again, _ = await store.txn([Compare(p + "a", 0)], [Put(p + "a", b"2")])
        entry = await store.get(p + "a")
        assert entry is not None
        updated, rev2 = await store.txn([Compare.unchanged(entry, p + "a")], [Put(p + "a", b"3")])
        stale, _ = await store.txn([Compare(p + "a", rev)], [Put(p + "a", b"4")])
        # Assert
        assert (created, again, updated, stale) == (True, False, True, False)
        assert rev2 == rev + 1
        latest = await store.get(p + "a")
        assert latest is not None and (latest.value, latest.mod_revision) == (b"3", rev2)
        assert Compare.unchanged(None, p + "b") == Compare(p + "b", 0)

    async def test_a_txn_writes_all_its_keys_at_one_revision(self, store: Store, p: str) -> None:
        # Prepare
        await store.put(p + "gone/1", b"")
        await store.put(p + "gone/2", b"")
        await store.put(p + "stay", b"")
        # Execute
        ok, rev = await store.txn([], [Put(p + "a", b"1"), Put(p + "b", b"2"), Delete(p + "gone/", prefix=True)])
        # Assert
        assert ok
        entries, read_at = await store.get_prefix(p)
        assert [(e.key, e.mod_revision) for e in entries] == [(p + "a", rev), (p + "b", rev), (p + "stay", rev - 1)]
        assert read_at == rev

    async def test_a_txn_that_writes_a_key_twice_is_refused(self, store: Store, p: str) -> None:
        # Execute / Assert
        with pytest.raises(Unavailable):
            await store.txn([], [Put(p + "a", b"1"), Put(p + "a", b"2")])
        with pytest.raises(Unavailable):
            await store.txn([], [Delete(p + "a"), Put(p + "a", b"2")])
        assert await store.get(p + "a") is None

    async def test_a_put_under_an_unknown_lease_is_refused(self, store: Store, p: str) -> None:
        # Prepare
        lease = await store.grant_lease(30)
        await store.revoke_lease(lease)
        # Execute / Assert
        with pytest.raises(Unavailable):
            await store.put(p + "a", b"1", lease=lease)
        assert await store.get(p + "a") is None

    async def test_txn_many_items_are_independent_and_share_one_revision(self, store: Store, p: str) -> None:
        # Prepare
        taken = await store.put(p + "taken", b"t")
        # Execute: the middle item fails and reads why; every compare is evaluated before any
        # write, so the last item still sees "first" absent
        outcomes = await store.txn_many([
            TxnItem([Compare(p + "first", 0)], [Put(p + "first", b"1")]),
            TxnItem([Compare(p + "taken", 0)], [Put(p + "taken", b"2")], reads_on_failure=[p + "taken", p + "nothing"]),
            TxnItem([Compare(p + "first", 0), Compare(p + "third", 0)], [Put(p + "third", b"3")]),
        ])
        # Assert
        assert [o.succeeded for o in outcomes] == [True, False, True]
        assert len({o.revision for o in outcomes}) == 1 and outcomes[0].revision == taken + 1
        entry, nothing = outcomes[1].reads
        assert entry is not None and (entry.key, entry.value, entry.mod_revision) == (p + "taken", b"t", taken)
        assert nothing is None
        assert outcomes[0].reads == outcomes[2].reads == ()
        entries, _ = await store.get_prefix(p)
        assert {e.key: e.value for e in entries} == {p + "first": b"1", p + "taken": b"t", p + "third": b"3"}

    async def test_txn_many_of_one_item_and_of_failures_only(self, store: Store, p: str) -> None:
        # Prepare
        rev = await store.put(p + "a", b"1")
        # Execute
        (one,) = await store.txn_many([TxnItem([Compare(p + "a", rev)], [Put(p + "a", b"2")])])
        (failed,) = await store.txn_many([TxnItem([Compare(p + "a", rev)], [Put(p + "a", b"3")], reads_on_failure=[p + "a"])])
        # Assert
        assert one.succeeded and one.revision == rev + 1
        assert not failed.succeeded and failed.revision == rev + 1
        (read,) = failed.reads
        assert read is not None and (read.value, read.mod_revision) == (b"2", rev + 1)

    async def test_txn_many_refuses_a_key_put_by_two_items(self, store: Store, p: str) -> None:
        # Execute / Assert
        with pytest.raises(Unavailable):
            await store.txn_many([TxnItem([], [Put(p + "a", b"1")]), TxnItem([], [Put(p + "a", b"2")])])
        assert await store.get(p + "a") is None

    async def test_txn_many_limits_the_operations_of_each_item_by_the_number_of_items(self, store: Store, p: str) -> None:
        def items(n: int, ops: int) -> list[TxnItem]:
            return [TxnItem([], [Put(f"{p}{n}/{i}/{j:03d}", b"") for j in range(ops)]) for i in range(n)]

        # Execute
        alone = await store.txn_many(items(1, MAX_TXN_OPS))
        three = await store.txn_many(items(3, MAX_TXN_OPS - 3))
        # Assert
        assert alone[0].succeeded and all(o.succeeded for o in three)
        assert await store.count_prefix(p) == MAX_TXN_OPS + 3 * (MAX_TXN_OPS - 3)
        for n, ops in ((1, MAX_TXN_OPS + 1), (3, MAX_TXN_OPS - 2), (MAX_TXN_OPS, 1)):
            with pytest.raises(Unavailable):
                await store.txn_many(items(n, ops))
        assert await store.count_prefix(p) == MAX_TXN_OPS + 3 * (MAX_TXN_OPS - 3)

    async def test_txn_many_checks_its_items_in_order_for_a_key_written_twice(self, store: Store, p: str) -> None:
        # Execute: a key deleted by one item and put by a later one is refused; the other way
        # round etcd lets through (and applies in order)
        with pytest.raises(Unavailable):
            await store.txn_many([TxnItem([], [Delete(p + "a")]), TxnItem([], [Put(p + "a", b"")])])
        outcomes = await store.txn_many([TxnItem([], [Put(p + "b", b"")]), TxnItem([], [Delete(p + "b")])])
        # Assert
        assert [o.succeeded for o in outcomes] == [True, True]
        assert await store.get(p + "b") is None

    # -- ranges ----------------------------------------------------------------------------

    async def _five(self, store: Store, p: str) -> int:
        for k in ("c", "a", "e", "b", "d"):
            await store.put(p + "k/" + k, k.encode())
        await store.put(p + "k0", b"a sibling, not under the prefix")
        return await store.put(p + "j", b"before the prefix")

    async def test_a_range_is_in_key_order_with_its_read_revision(self, store: Store, p: str) -> None:
        # Prepare
        rev = await self._five(store, p)
        # Execute
        entries, read_at = await store.get_prefix(p + "k/")
        # Assert
        assert [e.key.removeprefix(p + "k/") for e in entries] == ["a", "b", "c", "d", "e"]
        assert [e.value for e in entries] == [b"a", b"b", b"c", b"d", b"e"]
        assert read_at == rev
        assert await store.get_prefix(p + "none/") == ([], rev)

    async def test_range_bounds_and_limits(self, store: Store, p: str) -> None:
        # Prepare
        await self._five(store, p)
        k = p + "k/"

        async def keys(**kw: object) -> list[str]:
            entries, _ = await store.get_prefix(k, **kw)  # type: ignore[arg-type]
            return [e.key.removeprefix(k) for e in entries]

        # Execute / Assert
        assert await keys(start_after=k + "b") == ["c", "d", "e"]
        assert await keys(start_after=k + "bb") == ["c", "d", "e"]
        assert await keys(start_at=k + "b") == ["b", "c", "d", "e"]
        assert await keys(end=k + "d") == ["a", "b", "c"]
        assert await keys(start_after=k + "a", end=k + "d") == ["b", "c"]
        assert await keys(limit=2) == ["a", "b"]
        assert await keys(start_after=k + "b", limit=2) == ["c", "d"]
        assert await keys(start_after=k + "e") == []
        assert await keys(start_at=k + "c", end=k + "c") == []

    async def test_keys_only_leaves_the_values_out(self, store: Store, p: str) -> None:
        # Prepare
        await self._five(store, p)
        # Execute
        entries, _ = await store.get_prefix(p + "k/", keys_only=True, limit=3)
        full = await store.get(p + "k/a")
        # Assert
        assert [e.value for e in entries] == [b"", b"", b""]
        assert full is not None and (entries[0].mod_revision, entries[0].create_revision) == (full.mod_revision, full.create_revision)

    async def test_count_prefix(self, store: Store, p: str) -> None:
        # Prepare
        await self._five(store, p)
        # Execute / Assert
        assert await store.count_prefix(p + "k/") == 5
        assert await store.count_prefix(p + "k") == 6
        assert await store.count_prefix(p + "none/") == 0

    async def test_get_many_reads_more_keys_than_one_request_takes(self, store: Store, p: str) -> None:
        # Prepare: 300 keys, more than MAX_TXN_OPS
        keys = [f"{p}{i:04d}" for i in range(300)]
        for start in range(0, len(keys), MAX_TXN_OPS):
            await store.txn_many([TxnItem([], [Put(k, k.encode()) for k in keys[start : start + MAX_TXN_OPS]])])
        wanted = [*keys[:150], p + "missing", *reversed(keys[150:])]
        # Execute
        got = await store.get_many(wanted)
        # Assert
        assert [e.key if e else None for e in got] == [*keys[:150], None, *reversed(keys[150:])]
        assert all(e is None or e.value == e.key.encode() for e in got)
        assert await store.get_many([]) == []
        (single,) = await store.get_many([keys[7]])
        assert single is not None and single.key == keys[7]

    # -- watches ---------------------------------------------------------------------------

    async def test_a_watch_from_a_revision_sees_the_history_then_what_comes(self, store: Store, p: str) -> None:
        # Prepare
        r1 = await store.put(p + "a", b"1")
        r2 = await store.put(p + "b", b"2")
        await store.delete(p + "a")
        await store.put(p + "other-prefix", b"")
        watch = store.watch_prefix(p + "", r1)
        try:
            seen = await next_events(watch, 4)
            # Execute
            r5 = await store.put(p + "c", b"3")
            (live,) = await next_events(watch, 1)
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
        # Assert
        assert [(e.key, e.value, e.deleted, e.revision) for e in seen] == [
            (p + "a", b"1", False, r1), (p + "b", b"2", False, r2), (p + "a", b"", True, r2 + 1), (p + "other-prefix", b"", False, r2 + 2)
        ]  # fmt: skip
        assert (live.key, live.value, live.deleted, live.revision) == (p + "c", b"3", False, r5)

    async def test_a_watch_sees_only_its_prefix_and_the_writes_of_a_txn_in_order(self, store: Store, p: str) -> None:
        # Prepare
        start = await store.put(p + "x/before", b"")
        watch = store.watch_prefix(p + "w/", start + 1)
        try:
            # Execute
            await store.put(p + "x/1", b"")
            _, rev = await store.txn([], [Put(p + "w/2", b"2"), Put(p + "w/1", b"1"), Put(p + "x/2", b"")])
            await store.txn([], [Delete(p + "w/", prefix=True)])
            seen = await next_events(watch, 4)
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
        # Assert
        assert [(e.key, e.deleted, e.revision) for e in seen] == [
            (p + "w/2", False, rev), (p + "w/1", False, rev), (p + "w/1", True, rev + 1), (p + "w/2", True, rev + 1)
        ]  # fmt: skip

    async def test_a_watch_from_a_revision_to_come_skips_the_writes_before_it(self, store: Store, p: str) -> None:
        # Prepare
        rev = await store.put(p + "a", b"0")
        watch = store.watch_prefix(p, rev + 3)
        try:
            # Execute
            await store.put(p + "a", b"1")
            await store.put(p + "a", b"2")
            await store.put(p + "a", b"3")
            (ev,) = await next_events(watch, 1)
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
        # Assert
        assert (ev.value, ev.revision) == (b"3", rev + 3)

    async def test_a_watch_of_one_key(self, store: Store, p: str) -> None:
        # Prepare
        rev = await store.put(p + "a", b"1")
        await store.put(p + "ab", b"not a")
        await store.put(p + "a", b"2")
        watch = store.watch_key(p + "a", rev)
        try:
            # Execute
            seen = await next_events(watch, 2)
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
        # Assert
        assert [(e.key, e.value, e.revision) for e in seen] == [(p + "a", b"1", rev), (p + "a", b"2", rev + 2)]

    async def test_a_watch_from_a_compacted_revision_raises(self, store: Store, p: str) -> None:
        # Prepare
        r1 = await store.put(p + "a", b"1")
        r2 = await store.put(p + "a", b"2")
        await self.compact(store, r2)
        # Execute / Assert: the compacted revision itself is kept
        with pytest.raises(WatchCompacted):
            await next_events(store.watch_prefix(p, r1), 1)
        watch = store.watch_prefix(p, r2)
        try:
            (kept,) = await next_events(watch, 1)
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
        assert (kept.value, kept.revision) == (b"2", r2)

    async def test_a_watch_of_one_key_from_a_compacted_revision_sends_nothing(self, store: Store, p: str) -> None:
        # Prepare
        r1 = await store.put(p + "a", b"1")
        r2 = await store.put(p + "a", b"2")
        await self.compact(store, r2)
        watch = store.watch_key(p + "a", r1)
        # Execute / Assert
        try:
            with pytest.raises(TimeoutError):
                await next_events(watch, 1, timeout=0.5)
        finally:
            await watch.aclose()  # type: ignore[attr-defined]

    # -- leases ----------------------------------------------------------------------------

    async def test_an_expired_lease_deletes_its_keys_with_events(self, store: Store, p: str) -> None:
        # Prepare
        lease = await store.grant_lease(1)
        rev = await store.put(p + "a", b"1", lease=lease)
        await store.put(p + "b", b"2", lease=lease)
        await store.put(p + "c", b"no lease")
        watch = store.watch_prefix(p, rev + 3)
        try:
            # Execute: nobody renews the lease
            gone = await next_events(watch, 2)
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
        # Assert
        assert {(e.key, e.deleted) for e in gone} == {(p + "a", True), (p + "b", True)}
        assert gone[0].revision == gone[1].revision
        entries, _ = await store.get_prefix(p)
        assert [e.key for e in entries] == [p + "c"]

    async def test_revoking_a_lease_deletes_its_keys_at_once(self, store: Store, p: str) -> None:
        # Prepare
        lease = await store.grant_lease(60)
        rev = await store.put(p + "a", b"1", lease=lease)
        await store.put(p + "b", b"2", lease=lease)
        await store.put(p + "b", b"2, unbound")  # a put without the lease unbinds the key
        # Execute
        await store.revoke_lease(lease)
        # Assert
        entries, after = await store.get_prefix(p)
        assert [e.key for e in entries] == [p + "b"]
        assert after == rev + 3
        watch = store.watch_prefix(p, after)
        try:
            (ev,) = await next_events(watch, 1)
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
        assert (ev.key, ev.deleted) == (p + "a", True)
        await store.revoke_lease(lease)  # again: never raises

    async def test_a_keepalive_keeps_a_lease_beyond_its_ttl_until_stopped(self, store: Store, p: str) -> None:
        # Prepare
        expired: list[bool] = []
        lease = await store.grant_lease(1)
        rev = await store.put(p + "a", b"1", lease=lease)
        keepalive = store.keep_alive(lease, 1, lambda: expired.append(True))
        try:
            # Execute
            await asyncio.sleep(1.7)  # beyond the TTL and etcd's expiry check (every 0.5 s)
            # Assert
            assert await store.get(p + "a") is not None
        finally:
            keepalive.stop()
        watch = store.watch_prefix(p, rev + 1)
        try:
            (ev,) = await next_events(watch, 1)
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
        assert ev.deleted and await store.get(p + "a") is None
        assert expired == []  # stopped first: nobody is told

    async def test_a_keepalive_tells_when_its_lease_is_gone_and_renews_the_next(self, store: Store, p: str) -> None:
        # Prepare
        told = asyncio.Event()
        lease = await store.grant_lease(1)
        keepalive = store.keep_alive(lease, 1, told.set)
        try:
            # Execute: the lease ends under the keepalive
            await store.revoke_lease(lease)
            async with asyncio.timeout(EVENT_TIMEOUT):
                await told.wait()
            new = await store.grant_lease(1)
            await store.put(p + "a", b"1", lease=new)
            keepalive.renew_as(new)
            await asyncio.sleep(1.7)  # beyond the TTL and etcd's expiry check (every 0.5 s)
            # Assert
            assert await store.get(p + "a") is not None
        finally:
            keepalive.stop()
            await store.revoke_lease(new)
