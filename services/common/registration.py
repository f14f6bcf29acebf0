"""A record that lives exactly as long as its process: bound to an etcd lease that is kept
alive in the background. If the lease expires anyway (the process was paused, or etcd lost
quorum for longer than the TTL), the record is registered again under a new lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from services.common.store import EtcdStore

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
