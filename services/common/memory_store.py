"""``services.common.store.Store`` in one process: the same semantics as etcd, no etcd.

For tests that run the control plane's logic in milliseconds (tests/contract/store_contract.py
checks it against a real etcd). One revision counter for the store; keys kept in a sorted list,
so a range is two bisections, not a scan; every event kept (until ``compact``), so a watch can
start from any revision. Leases run on the event loop's clock.

Test hooks, none of which a ``Store`` has: ``unavailable`` (while True every call raises
``Unavailable``, as a store without quorum does, and keepalives do not reach it),
``expire_lease`` (a lease ends now, as if its process had been cut off for its TTL) and
``compact`` (so a watch from an old revision raises ``WatchCompacted``).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from services.common.errors import Unavailable
from services.common.store import MAX_TXN_OPS, Compare, Delete, Entry, Event, Put, TxnItem, TxnOutcome, WatchCompacted


def _prefix_end(prefix: str) -> str | None:
    """The first key after every key under prefix (None: no bound). Code point order is the
    byte order of the UTF-8 keys etcd compares."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None


@dataclass
class _Lease:
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    keepalive: MemoryKeepalive | None = None


@dataclass
class _Watcher:
    prefix: str
    exact: bool
    start: int = 0
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)

    def wants(self, ev: Event) -> bool:
        if ev.revision < self.start:
            return False
        return ev.key == self.prefix if self.exact else ev.key.startswith(self.prefix)


class MemoryStore:
    def __init__(self) -> None:
        self.unavailable = False
        self._entries: dict[str, Entry] = {}
        self._keys: list[str] = []  # sorted
        self._lease_of: dict[str, int] = {}
        self._revision = 1  # a new etcd cluster is at revision 1
        self._history: list[Event] = []
        self._compacted = 0
        self._watchers: list[_Watcher] = []
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(0x694D000000000001)

    # -- the Store protocol ---------------------------------------------------------------

    async def connect(self) -> None:
        self._check()

    async def close(self) -> None:
        """Nothing to release: the services of one test share the store and close it in turn."""

    async def get(self, key: str) -> Entry | None:
        self._check()
        return self._entries.get(key)

    async def get_prefix(
        self, prefix: str, *, start_after: str = "", start_at: str = "", end: str = "", limit: int = 0, keys_only: bool = False
    ) -> tuple[list[Entry], int]:
        self._check()
        start = (start_after + "\0") if start_after else (start_at or prefix)
        stop = end or _prefix_end(prefix)
        i = bisect.bisect_left(self._keys, start)
        j = bisect.bisect_left(self._keys, stop) if stop is not None else len(self._keys)
        if limit:
            j = min(j, i + limit)
        keys = self._keys[i:j]
        if keys_only:
            return [Entry(k, b"", e.mod_revision, e.create_revision) for k in keys for e in (self._entries[k],)], self._revision
        return [self._entries[k] for k in keys], self._revision

    async def count_prefix(self, prefix: str) -> int:
        self._check()
        stop = _prefix_end(prefix)
        j = bisect.bisect_left(self._keys, stop) if stop is not None else len(self._keys)
        return j - bisect.bisect_left(self._keys, prefix)

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        self._check()
        self._apply([self._check_ops([Put(key, value, lease)])])
        return self._revision

    async def delete(self, key: str) -> None:
        self._check()
        self._apply([[Delete(key)]])

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> tuple[bool, int]:
        (outcome,) = await self.txn_many([TxnItem(compares, ops)])
        return outcome.succeeded, outcome.revision

    async def txn_many(self, items: Sequence[TxnItem]) -> list[TxnOutcome]:
        self._check()
        self._check_disjoint(items)
        # Every compare is evaluated before any write, as etcd does.
        held = [all(self._holds(c) for c in item.compares) for item in items]
        reads: list[tuple[Entry | None, ...]] = []
        writes: list[Sequence[Put | Delete]] = []
        for item, ok in zip(items, held, strict=True):
            if ok:
                writes.append(item.ops)
                reads.append(())
            else:
                reads.append(tuple(self._entries.get(k) for k in item.reads_on_failure))
        self._apply(writes)
        return [TxnOutcome(ok, self._revision, r) for ok, r in zip(held, reads, strict=True)]

    async def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        self._check()
        return [self._entries.get(k) for k in keys]

    def watch_prefix(self, prefix: str, start_revision: int = 0) -> AsyncIterator[Event]:
        return self._watch(_Watcher(prefix, exact=False), start_revision)

    def watch_key(self, key: str, start_revision: int = 0) -> AsyncIterator[Event]:
        if 0 < start_revision < self._compacted:
            return self._silent()
        return self._watch(_Watcher(key, exact=True), start_revision)

    async def grant_lease(self, ttl: int) -> int:
        self._check()
        lease_id = next(self._lease_ids)
        lease = _Lease(ttl, asyncio.get_running_loop().time() + ttl)
        self._leases[lease_id] = lease
        self._schedule(lease_id, lease)
        return lease_id

    async def revoke_lease(self, lease_id: int) -> None:
        if not self.unavailable:  # never raises: an unreachable store lets the lease expire
            self._end_lease(lease_id)

    def keep_alive(self, lease: int, ttl: int, on_expired: Callable[[], None]) -> MemoryKeepalive:
        keepalive = MemoryKeepalive(self, on_expired)
        keepalive.renew_as(lease)
        return keepalive

    # -- test hooks -----------------------------------------------------------------------

    def expire_lease(self, lease_id: int) -> None:
        """The lease ends now: its keys are deleted (with events), its keepalive told."""
        self._end_lease(lease_id)

    def compact(self, revision: int) -> None:
        """Forgets the events before revision: a watch from an older one raises WatchCompacted."""
        self._history = self._history[self._history_index(revision) :]
        self._compacted = max(self._compacted, revision)

    @property
    def revision(self) -> int:
        return self._revision

    def lease_of(self, key: str) -> int:
        """The lease key is bound to (0: none)."""
        return self._lease_of.get(key, 0)

    # -- inside ---------------------------------------------------------------------------

    def _check(self) -> None:
        if self.unavailable:
            raise Unavailable("the store is unavailable (MemoryStore.unavailable is set)")

    def _holds(self, c: Compare) -> bool:
        entry = self._entries.get(c.key)
        return entry is None if c.mod_revision == 0 else entry is not None and entry.mod_revision == c.mod_revision

    def _check_ops(self, ops: Sequence[Put | Delete]) -> Sequence[Put | Delete]:
        for op in ops:
            if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                raise Unavailable(f"put of {op.key}: requested lease {op.lease:x} not found")
        return ops

    def _check_disjoint(self, items: Sequence[TxnItem]) -> None:
        """Refuses what etcd refuses ("duplicate key given in txn request"): a key put twice,
        or put and deleted, in one branch; across the items of one request, a key put by two,
        or put by one after another deleted it (etcd checks the items in order)."""
        # One item travels as a transaction of its own; several as the branches of one, and
        # etcd leaves each branch MAX_TXN_OPS less the number of items.
        budget = MAX_TXN_OPS if len(items) == 1 else MAX_TXN_OPS - len(items)
        if len(items) > MAX_TXN_OPS or any(max(len(i.compares), len(i.ops), len(i.reads_on_failure)) > budget for i in items):
            raise Unavailable(f"too many operations in txn request ({len(items)} transaction(s), {budget} operations each at most)")
        puts: set[str] = set()
        deletes: list[Delete] = []
        for item in items:
            self._check_ops(item.ops)
            mine = [op for op in item.ops if isinstance(op, Delete)]
            mine_puts: set[str] = set()
            for op in item.ops:
                if not isinstance(op, Put):
                    continue
                if op.key in puts or op.key in mine_puts or any(_covers(d, op.key) for d in (*deletes, *mine)):
                    raise Unavailable(f"duplicate key given in txn request: {op.key}")
                mine_puts.add(op.key)
            puts |= mine_puts
            deletes += mine

    def _apply(self, writes: Sequence[Sequence[Put | Delete]]) -> None:
        """Applies the writes of one request at the next revision (the revision moves only if
        something changed), then hands their events to the watchers."""
        revision = self._revision + 1
        events: list[Event] = []
        for ops in writes:
            for op in ops:
                if isinstance(op, Put):
                    events.append(self._put(op, revision))
                else:
                    events += self._delete(op, revision)
        if not events:
            return
        self._revision = revision
        self._history += events
        for w in self._watchers:
            for ev in events:
                if w.wants(ev):
                    w.queue.put_nowait(ev)

    def _put(self, op: Put, revision: int) -> Event:
        old = self._entries.get(op.key)
        if old is None:
            bisect.insort(self._keys, op.key)
        self._entries[op.key] = Entry(op.key, op.value, revision, old.create_revision if old else revision)
        self._bind(op.key, op.lease)
        return Event(op.key, op.value, False, revision)

    def _delete(self, op: Delete, revision: int) -> list[Event]:
        if op.prefix:
            stop = _prefix_end(op.key)
            i = bisect.bisect_left(self._keys, op.key)
            j = bisect.bisect_left(self._keys, stop) if stop is not None else len(self._keys)
        elif op.key in self._entries:
            i = bisect.bisect_left(self._keys, op.key)
            j = i + 1
        else:
            return []
        gone = self._keys[i:j]
        del self._keys[i:j]
        for key in gone:
            del self._entries[key]
            self._bind(key, 0)
        return [Event(key, b"", True, revision) for key in gone]

    def _bind(self, key: str, lease_id: int) -> None:
        old = self._lease_of.pop(key, 0)
        if old and old in self._leases:
            self._leases[old].keys.discard(key)
        if lease_id:
            self._lease_of[key] = lease_id
            self._leases[lease_id].keys.add(key)

    def _history_index(self, revision: int) -> int:
        return bisect.bisect_left(self._history, revision, key=lambda ev: ev.revision)

    async def _watch(self, watcher: _Watcher, start_revision: int) -> AsyncIterator[Event]:
        self._check()
        if 0 < start_revision < self._compacted:
            raise WatchCompacted(f"watch of {watcher.prefix} from revision {start_revision}: compacted up to {self._compacted}")
        watcher.start = start_revision
        if start_revision:
            for ev in self._history[self._history_index(start_revision) :]:
                if watcher.wants(ev):
                    watcher.queue.put_nowait(ev)
        self._watchers.append(watcher)
        try:
            while True:
                yield await watcher.queue.get()
        finally:
            self._watchers.remove(watcher)

    async def _silent(self) -> AsyncIterator[Event]:
        """What etcd's watch of one key from a compacted revision sends: nothing."""
        self._check()
        await asyncio.Future()
        yield Event("", b"", False, 0)  # never reached: makes this an async generator

    # -- leases ---------------------------------------------------------------------------

    def _schedule(self, lease_id: int, lease: _Lease) -> None:
        """Wakes at the lease's deadline, or every ttl/3 while a keepalive renews it (the
        renewal is part of the same wake-up: a loop too busy to run its tasks on time is late
        for both, and a busy process keeps its lease, as with etcd's keepalive thread)."""
        loop = asyncio.get_running_loop()
        if lease.timer is not None:
            lease.timer.cancel()
        at = lease.deadline if lease.keepalive is None else min(lease.deadline, loop.time() + max(0.5, lease.ttl / 3))
        lease.timer = loop.call_at(at, self._tick, lease_id)

    def _tick(self, lease_id: int) -> None:
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        now = asyncio.get_running_loop().time()
        if lease.keepalive is not None and not self.unavailable:
            lease.deadline = now + lease.ttl
        if now >= lease.deadline:
            self._end_lease(lease_id)
        else:
            self._schedule(lease_id, lease)

    def _end_lease(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return
        if lease.timer is not None:
            lease.timer.cancel()
        self._apply([[Delete(k) for k in sorted(lease.keys)]])
        if lease.keepalive is not None:
            lease.keepalive.lost(lease_id)

    def _attach(self, lease_id: int, keepalive: MemoryKeepalive | None) -> bool:
        """Whether the lease exists (and now has keepalive, or none)."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return False
        lease.keepalive = keepalive
        if keepalive is not None:
            lease.deadline = asyncio.get_running_loop().time() + lease.ttl
        self._schedule(lease_id, lease)
        return True


def _covers(d: Delete, key: str) -> bool:
    return key.startswith(d.key) if d.prefix else key == d.key


class MemoryKeepalive:
    """``MemoryStore.keep_alive``: renews its lease on each of the lease's wake-ups while the
    store is available; tells ``on_expired`` (soon, in the loop) when the lease ends."""

    def __init__(self, store: MemoryStore, on_expired: Callable[[], None]) -> None:
        self._store = store
        self._on_expired = on_expired
        self._lease = 0
        self._stopped = False

    def renew_as(self, lease: int) -> None:
        if self._stopped:
            return
        self._store._attach(self._lease, None)
        self._lease = lease
        if not self._store._attach(lease, self):
            self.lost(lease)

    def stop(self) -> None:
        self._stopped = True
        self._store._attach(self._lease, None)

    def lost(self, lease: int) -> None:
        if lease == self._lease and not self._stopped:
            asyncio.get_running_loop().call_soon(self._on_expired)
