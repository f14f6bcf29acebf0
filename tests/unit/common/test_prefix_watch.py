"""follow_prefix on the in-memory store: load, follow, load again after a broken watch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from services.common.memory_store import MemoryStore
from services.common.prefix_watch import follow_prefix
from services.common.store import Entry, Event, WatchCompacted


class Mirror:
    """What an owner keeps: the prefix's keys and values, and how many loads it saw."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.loads = 0

    def load(self, entries: list[Entry]) -> None:
        self.loads += 1
        self.values = {e.key: e.value for e in entries}

    def event(self, ev: Event) -> None:
        if ev.deleted:
            self.values.pop(ev.key, None)
        else:
            self.values[ev.key] = ev.value


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(2):
        while not check():
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def following(store: MemoryStore, mirror: Mirror, **kw: object) -> AsyncIterator[None]:
    task = asyncio.create_task(follow_prefix(store, "/p/", mirror.event, on_load=mirror.load, retry_seconds=0.01, **kw))  # type: ignore[arg-type]
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class BreakingStore(MemoryStore):
    """Its first watch breaks (as a compacted one does) after one event."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def watch_prefix(self, prefix: str, start_revision: int = 0) -> AsyncIterator[Event]:
        inner = super().watch_prefix(prefix, start_revision)
        if self.broken:
            return inner
        self.broken = True

        async def once() -> AsyncIterator[Event]:
            yield await anext(inner)
            raise WatchCompacted("gone")

        return once()


async def test_loads_the_prefix_then_follows_its_changes() -> None:
    # Prepare
    store, mirror = MemoryStore(), Mirror()
    await store.put("/p/a", b"1")
    await store.put("/q/a", b"not ours")
    async with following(store, mirror):
        await until(lambda: mirror.loads == 1)
        # Execute
        await store.put("/p/b", b"2")
        await store.delete("/p/a")
        # Assert
        await until(lambda: mirror.values == {"/p/b": b"2"})
    assert mirror.loads == 1


async def test_a_broken_watch_means_a_new_load_and_nothing_is_lost() -> None:
    # Prepare
    store, mirror = BreakingStore(), Mirror()
    async with following(store, mirror):
        await until(lambda: mirror.loads == 1)
        # Execute: the first event breaks the watch; the second comes while it is down
        await store.put("/p/a", b"1")
        await store.put("/p/b", b"2")
        # Assert
        await until(lambda: mirror.loads == 2)
        await store.put("/p/c", b"3")
        await until(lambda: mirror.values == {"/p/a": b"1", "/p/b": b"2", "/p/c": b"3"})


async def test_an_unavailable_store_is_retried_and_values_false_reads_no_entries() -> None:
    # Prepare
    store, mirror = MemoryStore(), Mirror()
    await store.put("/p/a", b"1")
    store.unavailable = True
    async with following(store, mirror, values=False):
        await asyncio.sleep(0.05)
        assert mirror.loads == 0
        # Execute
        store.unavailable = False
        # Assert
        await until(lambda: mirror.loads == 1)
        assert mirror.values == {}
        await store.put("/p/b", b"2")
        await until(lambda: mirror.values == {"/p/b": b"2"})
