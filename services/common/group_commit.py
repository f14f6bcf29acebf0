"""Group commit: concurrent etcd transactions and reads of one process leave together.

Every etcd request costs a round trip, a gRPC call on both sides and, for a write, a raft entry
replicated to every member and written to its log. Under load most of a placement's CPU was
that per-request cost, not the work. ``GroupCommit`` queues the transactions callers hand it and
sends those that are waiting as one request (``Store.txn_many``: nested transactions, each
applied or not on its own compares), and the same for single-key reads. With no load a call
leaves at the next turn of the event loop, so nothing waits for a timer; under load a batch
forms while the previous ones are in flight, so batches grow with the load (classic group
commit, as databases do for their log).

Two transactions whose keys overlap (one writes a key the other compares or writes) never share
a request: etcd evaluates every compare before any write and refuses a key written twice. The
later one waits for the next request, so its compare sees the earlier one's write, exactly as
if they had been sent one after the other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.common.store import MAX_TXN_OPS, Delete, Entry, Put, Store, TxnItem, TxnOutcome

LOG = logging.getLogger(__name__)


@dataclass
class _Write:
    item: TxnItem
    future: asyncio.Future[TxnOutcome]
    keys: frozenset[str]
    size: int
    alone: bool  # a prefix delete: its key set is open-ended, so it travels alone


@dataclass
class _Lane:
    in_flight: int = 0
    scheduled: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _write(item: TxnItem, future: asyncio.Future[TxnOutcome]) -> _Write:
    keys = {c.key for c in item.compares} | {op.key for op in item.ops}
    size = sum(len(op.key) + (len(op.value) if isinstance(op, Put) else 0) for op in item.ops) + 64 * len(item.compares)
    alone = any(isinstance(op, Delete) and op.prefix for op in item.ops)
    return _Write(item, future, frozenset(keys), size, alone)


class GroupCommit:
    def __init__(
        self, store: Store, *, max_items: int = 64, max_bytes: int = 512 * 1024, max_in_flight: int = 2
    ) -> None:
        """``max_items`` transactions (at most etcd's 128 operations per branch) and
        ``max_bytes`` of values per request (etcd refuses requests over 1.5 MiB by default);
        ``max_in_flight`` requests of each kind (writes, reads) outstanding at once."""
        self._store = store
        self._max_items = min(max_items, MAX_TXN_OPS)
        self._max_bytes = max_bytes
        self._max_in_flight = max(1, max_in_flight)
        self._writes: list[_Write] = []
        self._reads: dict[str, list[asyncio.Future[Entry | None]]] = {}
        self._write_lane = _Lane()
        self._read_lane = _Lane()
        # What was sent, for tests and benchmarks: requests and the items they carried.
        self.write_requests = 0
        self.write_items = 0
        self.read_requests = 0
        self.read_items = 0

    # --- the API ----------------------------------------------------------------------------

    async def txn(self, item: TxnItem) -> TxnOutcome:
        """Applies item's ops if its compares hold; as ``Store.txn_many`` for one item."""
        future: asyncio.Future[TxnOutcome] = asyncio.get_running_loop().create_future()
        self._writes.append(_write(item, future))
        self._kick(self._write_lane, self._flush_writes)
        return await future

    async def get(self, key: str) -> Entry | None:
        future: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        self._reads.setdefault(key, []).append(future)
        self._kick(self._read_lane, self._flush_reads)
        return await future

    # --- batching ---------------------------------------------------------------------------

    def _kick(self, lane: _Lane, flush: object) -> None:
        if not lane.scheduled and lane.in_flight < self._max_in_flight:
            lane.scheduled = True
            asyncio.get_running_loop().call_soon(self._start, lane, flush)

    def _start(self, lane: _Lane, flush: object) -> None:
        lane.scheduled = False
        pending = self._writes if lane is self._write_lane else self._reads
        while pending and lane.in_flight < self._max_in_flight:
            batch = self._take_writes() if lane is self._write_lane else self._take_reads()
            lane.in_flight += 1
            task = asyncio.create_task(flush(batch))  # type: ignore[operator]
            lane.tasks.add(task)
            task.add_done_callback(lane.tasks.discard)

    def _take_writes(self) -> list[_Write]:
        batch: list[_Write] = []
        taken: set[str] = set()
        size = 0
        kept: list[_Write] = []
        for w in self._writes:
            if w.future.done():  # its caller gave up before it left: never send it
                continue
            full = len(batch) >= self._max_items or (batch and size + w.size > self._max_bytes)
            if full or (batch and (w.alone or batch[0].alone)) or not taken.isdisjoint(w.keys):
                kept.append(w)
                continue
            batch.append(w)
            taken |= w.keys
            size += w.size
        self._writes = kept
        return batch

    def _take_reads(self) -> dict[str, list[asyncio.Future[Entry | None]]]:
        keys = list(self._reads)[:MAX_TXN_OPS]
        return {k: self._reads.pop(k) for k in keys}

    async def _flush_writes(self, batch: list[_Write]) -> None:
        try:
            if not batch:
                return
            self.write_requests += 1
            self.write_items += len(batch)
            try:
                outcomes = await self._store.txn_many([w.item for w in batch])
            except BaseException as exc:
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                if not isinstance(exc, Exception):
                    raise
                return
            for w, outcome in zip(batch, outcomes, strict=True):
                if not w.future.done():
                    w.future.set_result(outcome)
        finally:
            self._write_lane.in_flight -= 1
            if self._writes:
                self._kick(self._write_lane, self._flush_writes)

    async def _flush_reads(self, batch: dict[str, list[asyncio.Future[Entry | None]]]) -> None:
        try:
            if not batch:
                return
            self.read_requests += 1
            self.read_items += len(batch)
            keys: Sequence[str] = list(batch)
            try:
                entries = await self._store.get_many(keys)
            except BaseException as exc:
                for futures in batch.values():
                    for f in futures:
                        if not f.done():
                            f.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                if not isinstance(exc, Exception):
                    raise
                return
            for key, entry in zip(keys, entries, strict=True):
                for f in batch[key]:
                    if not f.done():
                        f.set_result(entry)
        finally:
            self._read_lane.in_flight -= 1
            if self._reads:
                self._kick(self._read_lane, self._flush_reads)

    async def close(self) -> None:
        for task in list(self._write_lane.tasks | self._read_lane.tasks):
            task.cancel()
        for task in list(self._write_lane.tasks | self._read_lane.tasks):
            try:
                await task
            except BaseException:  # noqa: BLE001, S110 - shutting down
                pass
