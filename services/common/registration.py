"""A record that lives exactly as long as its process: bound to an etcd lease that is kept
alive in the background. If the lease expires anyway (the process was paused, or etcd lost
quorum for longer than the TTL), the record is registered again under a new lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from services.common.store import MAX_TXN_OPS, EtcdStore, Put, TxnItem

LOG = logging.getLogger(__name__)


class Registration:
    def __init__(
        self, store: EtcdStore, key: str, value: Callable[[], bytes], ttl: int, on_new_lease: Callable[[], None] = lambda: None
    ) -> None:
        self._store = store
        self._key = key
        self._value = value
        self._ttl = ttl
        self._on_new_lease = on_new_lease
        self.lease = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._register()
        self._task = asyncio.create_task(self._keep_alive())

    async def publish(self) -> None:
        """Writes the current value again (under the same lease)."""
        await self._store.put(self._key, self._value(), lease=self.lease)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._store.revoke_lease(self.lease)

    async def _register(self) -> None:
        self.lease = await self._store.grant_lease(self._ttl)
        await self.publish()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self._ttl / 3))
            try:
                if not await self._store.keep_alive_once(self.lease):
                    LOG.warning("lease of %s expired; registering again", self._key)
                    await self._register()
                    self._on_new_lease()
            except Exception as exc:  # etcd unavailable: keep trying, the lease may still hold
                LOG.warning("lease keepalive for %s failed: %s", self._key, exc)


class LeaseGroup:
    """Many records under one lease, kept alive by one keepalive: what an agent process that
    serves many hosts (thousands, simulated) registers. One lease per host would cost etcd a
    keepalive per host every few seconds (10,000 hosts: thousands a second) for a liveness
    that is the same for all of them: they live and die with the process.

    When the lease expires anyway, every record is written again under a new one and
    ``on_new_lease`` is called."""

    def __init__(self, store: EtcdStore, ttl: int, on_new_lease: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._ttl = ttl
        self._on_new_lease = on_new_lease
        self._values: dict[str, Callable[[], bytes]] = {}
        self.lease = 0
        self._task: asyncio.Task[None] | None = None

    def add(self, key: str, value: Callable[[], bytes]) -> None:
        self._values[key] = value

    async def start(self) -> None:
        await self._register()
        self._task = asyncio.create_task(self._keep_alive())

    async def publish(self, key: str) -> None:
        """Writes one record's current value again (under the same lease)."""
        await self._store.put(key, self._values[key](), lease=self.lease)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._store.revoke_lease(self.lease)

    async def _register(self) -> None:
        self.lease = await self._store.grant_lease(self._ttl)
        items = list(self._values.items())
        for start in range(0, len(items), MAX_TXN_OPS):
            chunk = items[start : start + MAX_TXN_OPS]
            await self._store.txn_many([TxnItem([], [Put(k, v(), lease=self.lease) for k, v in chunk])])

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            interval = max(0.5, self._ttl / 3)
            due = loop.time() + interval
            await asyncio.sleep(interval)
            if loop.time() - due > self._ttl / 3:
                LOG.warning("event loop %.1fs late for the keepalive of %d records (lease TTL %ds)", loop.time() - due, len(self._values), self._ttl)
            try:
                if not await self._store.keep_alive_once(self.lease):
                    LOG.warning("lease of %d records expired; registering them again", len(self._values))
                    await self._register()
                    self._on_new_lease()
            except Exception as exc:  # etcd unavailable: keep trying, the lease may still hold
                LOG.warning("lease keepalive for %d records failed: %s", len(self._values), exc)
