"""Keeps a host's image cache following the catalogue: automatic updates.

A host follows an image once it has cached any version of it, or when a prefetch request
(``wnodes-admin images prefetch``) names it. When a newer version of a followed image is
published, the host pulls it before any VM asks for it, so new VMs start from a warm cache;
running VMs keep the version they booted (their overlays are backed by its blob, held in the
cache). Versions no new VM will get (superseded, deprecated, deleted) leave the cache once no
VM holds them and their last use is older than the retention time.

The decision (``plan``) is a pure function of the catalogue and the cache; the loop around it
reacts to catalogue changes through etcd watches, and re-checks periodically for retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.common import records
from services.common.keys import Keys
from services.common.prefix_watch import follow_prefix
from services.common.records import ImageRecord, PrefetchRecord
from services.common.store import Store
from services.hypervisor.image_cache import ImageCache, blob_shas

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachePlan:
    prefetch: list[ImageRecord]
    """Newest available versions of followed images that are not (fully) cached."""
    superseded: set[str]
    """Blob shas that only versions no new VM will get use."""


def newest_available(catalogue: list[ImageRecord]) -> dict[str, ImageRecord]:
    newest: dict[str, ImageRecord] = {}
    for r in catalogue:
        if r.state == "AVAILABLE" and (r.image not in newest or r.version > newest[r.image].version):
            newest[r.image] = r
    return newest


def plan(catalogue: list[ImageRecord], cached: set[str], requests: list[PrefetchRecord], host: str) -> CachePlan:
    newest = newest_available(catalogue)
    followed = {r.image for r in catalogue if any(sha in cached for sha in blob_shas(r))}
    followed |= {p.image for p in requests if p.addresses(host)}
    prefetch = [newest[i] for i in sorted(followed) if i in newest and not set(blob_shas(newest[i])) <= cached]
    current = {sha for r in newest.values() for sha in blob_shas(r)}
    superseded = {sha for r in catalogue for sha in blob_shas(r)} - current
    return CachePlan(prefetch=prefetch, superseded=superseded & cached)


class ImageUpdater:
    """One per physical host (its cache), shared by the agents a process simulates."""

    def __init__(
        self, store: Store, keys: Keys, cache: ImageCache, host: str, *,
        retention_seconds: float = 3600.0, recheck_seconds: float = 30.0,
        on_cached: Callable[[ImageRecord], Awaitable[None]] | None = None,
    ) -> None:  # fmt: skip
        self._store, self._keys, self._cache, self._host = store, keys, cache, host
        self._retention = retention_seconds
        self._recheck = recheck_seconds
        self._on_cached = on_cached
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch(self._keys.image_version())),
            asyncio.create_task(self._watch(self._keys.prefetch())),
            asyncio.create_task(self._loop()),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def sync_once(self) -> CachePlan:
        """One pass: pull what followed images need, drop superseded blobs past retention."""
        entries, _ = await self._store.get_prefix(self._keys.image_version())
        catalogue = [records.load(ImageRecord, e.value) for e in entries]
        entries, _ = await self._store.get_prefix(self._keys.prefetch())
        requests = [records.load(PrefetchRecord, e.value) for e in entries]
        todo = plan(catalogue, self._cache.cached_shas(), requests, self._host)
        for record in todo.prefetch:
            LOG.info("prefetching %s into the cache of %s (newest available version)", record.name, self._host)
            await self._cache.ensure(record)
            if self._on_cached:
                await self._on_cached(record)
        self._cache.remove_unused(todo.superseded, older_than=time.time() - self._retention)
        return todo

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an imagestore or etcd hiccup: the next pass retries
                LOG.warning("image cache update on %s failed: %s", self._host, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._recheck)
            self._changed.clear()

    async def _watch(self, prefix: str) -> None:
        # Any change, or a gap in the watch, means a pass: sync_once reads what it needs.
        await follow_prefix(
            self._store, prefix, lambda _: self._changed.set(), on_load=lambda _: self._changed.set(), values=False,
            retry_seconds=1.0, what=f"watch on {prefix}", log_level=logging.DEBUG,
        )  # fmt: skip
