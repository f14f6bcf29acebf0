"""Records that live exactly as long as their process: bound to a store lease that is kept
alive in the background (``Store.keep_alive``: etcd's runs in a thread of its own, so that a
busy event loop does not let the lease expire; see etcd_store.EtcdLeaseKeeper). If the lease
expires anyway (the process was paused, or etcd lost quorum for longer than the TTL), the
records are registered again under a new lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from services.common.store import MAX_TXN_OPS, LeaseKeepalive, Put, Store, TxnItem

LOG = logging.getLogger(__name__)


class LeaseGroup:
    """Records under one lease, kept alive by one keepalive. An agent process that serves many
    hosts (thousands, simulated) registers them all here: one lease per host would cost etcd a
    keepalive per host every few seconds (10,000 hosts: thousands a second) for a liveness
    that is the same for all of them, since they live and die with the process.

    When the lease expires anyway, every record is written again under a new one and
    ``on_new_lease`` is called."""

    def __init__(self, store: Store, ttl: int, on_new_lease: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._ttl = ttl
        self._on_new_lease = on_new_lease
        self._values: dict[str, Callable[[], bytes]] = {}
        self.lease = 0
        self._keeper: LeaseKeepalive | None = None
        self._again: asyncio.Task[None] | None = None

    def add(self, key: str, value: Callable[[], bytes]) -> None:
        self._values[key] = value

    async def start(self) -> None:
        self.lease = await self._store.grant_lease(self._ttl)
        self._keeper = self._store.keep_alive(self.lease, self._ttl, self._expired)
        await self._write_all()

    async def publish(self, key: str) -> None:
        """Writes one record's current value again (under the same lease)."""
        await self._store.put(key, self._values[key](), lease=self.lease)

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()
        if self._again is not None:
            self._again.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._again
        await self._store.revoke_lease(self.lease)

    async def _write_all(self) -> None:
        items = list(self._values.items())
        for start in range(0, len(items), MAX_TXN_OPS):
            chunk = items[start : start + MAX_TXN_OPS]
            await self._store.txn_many([TxnItem([], [Put(k, v(), lease=self.lease) for k, v in chunk])])

    def _expired(self) -> None:
        if self._again is None or self._again.done():
            self._again = asyncio.create_task(self._register_again())

    async def _register_again(self) -> None:
        LOG.warning("lease of %d record(s) expired; registering them again", len(self._values))
        while True:
            try:
                # The keeper renews the new lease while the records are written (thousands of
                # them take longer than a TTL on a busy machine).
                self.lease = await self._store.grant_lease(self._ttl)
                if self._keeper is not None:
                    self._keeper.renew_as(self.lease)
                await self._write_all()
                break
            except Exception as exc:  # etcd unavailable: keep trying
                LOG.warning("registering %d record(s) again failed: %s", len(self._values), exc)
                await asyncio.sleep(0.5)
        self._on_new_lease()


class Registration(LeaseGroup):
    """One record under its own lease (a nameserver replica's membership)."""

    def __init__(
        self, store: Store, key: str, value: Callable[[], bytes], ttl: int, on_new_lease: Callable[[], None] = lambda: None
    ) -> None:
        super().__init__(store, ttl, on_new_lease)
        self.add(key, value)
