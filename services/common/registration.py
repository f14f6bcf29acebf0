"""Records that live exactly as long as their process: bound to an etcd lease that is kept
alive in the background. If the lease expires anyway (the process was paused, or etcd lost
quorum for longer than the TTL), the records are registered again under a new lease.

The keepalive runs in a thread of its own with a plain (blocking) gRPC channel, not as a task
of the process's event loop. A loop busy with work (an agent process booting thousands of
simulated VMs, a replica under a burst) runs its tasks late, and a keepalive that comes seconds
late lets the lease expire: every record vanishes, the reconciler marks every VM of those hosts
UNKNOWN, and the recovery makes the loop busier still. Seen at 10,000 simulated hosts. A busy
process is alive; only a dead or cut-off one should lose its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

import grpc
from etcd3aio._protobuf import LeaseKeepAliveRequest, LeaseStub

from services.common.store import MAX_TXN_OPS, EtcdStore, Put, TxnItem

LOG = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews one lease every ttl/3 seconds from its own thread; calls ``on_expired`` (in the
    event loop that started it) when etcd says the lease is gone."""

    def __init__(self, endpoints: Sequence[str], ttl: int, on_expired: Callable[[], None]) -> None:
        self._endpoints = list(endpoints)
        self._ttl = ttl
        self._on_expired = on_expired
        self._lease = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, lease: int) -> None:
        self._lease = lease
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"lease-keeper-{lease:x}", daemon=True)
        self._thread.start()

    def renew_as(self, lease: int) -> None:
        """Keep this (new) lease alive from now on."""
        self._lease = lease

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._ttl)

    def _run(self) -> None:
        interval = max(0.5, self._ttl / 3)
        i = 0
        channel = grpc.insecure_channel(self._endpoints[0])
        last = time.monotonic()
        try:
            while not self._stop.wait(interval):
                lease = self._lease
                if time.monotonic() - last > self._ttl / 2:
                    LOG.warning("lease %x: %.1fs since its last renewal (TTL %ds)", lease, time.monotonic() - last, self._ttl)
                try:
                    alive = self._renew(channel, lease, timeout=interval)
                except grpc.RpcError as exc:  # this member is gone or slow: try the next one
                    LOG.warning("lease %x keepalive through %s failed: %s", lease, self._endpoints[i], exc.code().name)
                    channel.close()
                    i = (i + 1) % len(self._endpoints)
                    channel = grpc.insecure_channel(self._endpoints[i])
                    continue
                if alive:
                    last = time.monotonic()
                elif lease == self._lease and self._loop is not None:
                    self._loop.call_soon_threadsafe(self._on_expired)
                    # wait for the loop to grant a new lease (renew_as) before trying again
                    while lease == self._lease and not self._stop.wait(0.1):
                        pass
                    last = time.monotonic()
        finally:
            channel.close()

    @staticmethod
    def _renew(channel: grpc.Channel, lease: int, timeout: float) -> bool:
        stub = LeaseStub(channel)
        for resp in stub.LeaseKeepAlive(iter([LeaseKeepAliveRequest(ID=lease)]), timeout=timeout):
            return bool(resp.TTL > 0)
        return False


class LeaseGroup:
    """Records under one lease, kept alive by one keepalive. An agent process that serves many
    hosts (thousands, simulated) registers them all here: one lease per host would cost etcd a
    keepalive per host every few seconds (10,000 hosts: thousands a second) for a liveness
    that is the same for all of them, since they live and die with the process.

    When the lease expires anyway, every record is written again under a new one and
    ``on_new_lease`` is called."""

    def __init__(self, store: EtcdStore, ttl: int, on_new_lease: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._ttl = ttl
        self._on_new_lease = on_new_lease
        self._values: dict[str, Callable[[], bytes]] = {}
        self.lease = 0
        self._keeper = LeaseKeeper(store.endpoints, ttl, self._expired)
        self._again: asyncio.Task[None] | None = None

    def add(self, key: str, value: Callable[[], bytes]) -> None:
        self._values[key] = value

    async def start(self) -> None:
        self.lease = await self._store.grant_lease(self._ttl)
        self._keeper.start(self.lease)
        await self._write_all()

    async def publish(self, key: str) -> None:
        """Writes one record's current value again (under the same lease)."""
        await self._store.put(key, self._values[key](), lease=self.lease)

    async def stop(self) -> None:
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
        self, store: EtcdStore, key: str, value: Callable[[], bytes], ttl: int, on_new_lease: Callable[[], None] = lambda: None
    ) -> None:
        super().__init__(store, ttl, on_new_lease)
        self.add(key, value)
