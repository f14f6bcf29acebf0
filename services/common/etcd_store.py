"""The etcd implementation of ``services.common.store.Store``.

A thin layer over ``etcd3aio`` (the etcd v3 client that works with current grpcio and protobuf;
see docs/decisions.md) that speaks in keys, bytes and revisions, bounds every call with a
timeout, and turns etcd's connection errors into ``Unavailable`` so callers fail fast (no hang)
when the cluster has lost quorum.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
from etcd3aio import Etcd3Client
from etcd3aio._protobuf import Compare as PbCompare
from etcd3aio._protobuf import LeaseKeepAliveRequest, LeaseStub, RequestOp, TxnRequest
from etcd3aio.errors import EtcdError
from etcd3aio.kv import KVService, SortOrder, SortTarget, prefix_range_end

from services.common.errors import Unavailable
from services.common.store import MAX_TXN_OPS, Compare, Delete, Entry, Event, Put, TxnItem, TxnOutcome, WatchCompacted

LOG = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0


def _as_entry(kv: object) -> Entry:
    return Entry(
        key=kv.key.decode(),  # type: ignore[attr-defined]
        value=kv.value,  # type: ignore[attr-defined]
        mod_revision=kv.mod_revision,  # type: ignore[attr-defined]
        create_revision=kv.create_revision,  # type: ignore[attr-defined]
    )


class EtcdStore:
    def __init__(self, endpoints: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoints = list(endpoints)
        self._client = Etcd3Client(list(endpoints), rpc_max_attempts=2, watch_max_reconnect_backoff_seconds=1.0)
        self._timeout = timeout
        self._connected = False

    async def connect(self) -> None:
        await self._client.connect()
        self._connected = True

    async def close(self) -> None:
        await self._client.close()

    @property
    def client(self) -> Etcd3Client:
        return self._client

    @contextlib.asynccontextmanager
    async def _call(self, what: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except TimeoutError as exc:
            raise Unavailable(f"etcd did not answer {what} within {self._timeout:.0f}s (quorum lost?)") from exc
        except EtcdError as exc:
            raise Unavailable(f"etcd {what} failed: {exc}") from exc
        except Exception as exc:  # grpc.aio errors surface here when etcd is gone
            if type(exc).__name__ in {"AioRpcError", "UsageError"}:
                raise Unavailable(f"etcd {what} failed: {exc}") from exc
            raise

    async def get(self, key: str) -> Entry | None:
        async with self._call("get"):
            resp = await self._client.kv.get(key)  # type: ignore[union-attr]
        return _as_entry(resp.kvs[0]) if resp.kvs else None

    async def get_prefix(
        self, prefix: str, *, start_after: str = "", start_at: str = "", end: str = "", limit: int = 0, keys_only: bool = False
    ) -> tuple[list[Entry], int]:
        """Entries under prefix in key order (after start_after, or from start_at; before end
        if given), and the store revision they were read at.

        No sort is asked for: etcd returns a range in key order anyway, and etcd 3.4 reads the
        whole range to sort it before applying the limit (a page of 100 over 100,000 keys:
        560 ms sorted, 76 ms not). It still walks its index over the whole range, so callers
        paging through a very large prefix bound the range with ``end`` (registry.py slices
        the VM key space)."""
        start = (start_after + "\0") if start_after else (start_at or prefix)
        async with self._call("range"):
            resp = await self._client.kv.get(  # type: ignore[union-attr]
                start,
                range_end=end.encode() if end else prefix_range_end(prefix.encode()),
                limit=limit,
                sort_order=SortOrder.NONE,
                sort_target=SortTarget.KEY,
                keys_only=keys_only,
            )
        return [_as_entry(kv) for kv in resp.kvs], resp.header.revision

    async def count_prefix(self, prefix: str) -> int:
        async with self._call("count"):
            resp = await self._client.kv.get(prefix, range_end=prefix_range_end(prefix.encode()), count_only=True)  # type: ignore[union-attr]
        return int(resp.count)

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        async with self._call("put"):
            resp = await self._client.kv.put(key, value, lease=lease)  # type: ignore[union-attr]
        return int(resp.header.revision)

    async def delete(self, key: str) -> None:
        async with self._call("delete"):
            await self._client.kv.delete(key)  # type: ignore[union-attr]

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> tuple[bool, int]:
        """Applies ops atomically if every compare holds. Returns whether it did, and the store
        revision after it (the mod_revision of every key it wrote)."""
        cmp = [_pb_compare(c) for c in compares]
        requests = [_pb_op(op) for op in ops]
        async with self._call("txn"):
            resp = await self._client.kv.txn(cmp, requests)  # type: ignore[union-attr]
        return bool(resp.succeeded), int(resp.header.revision)

    async def txn_many(self, items: Sequence[TxnItem]) -> list[TxnOutcome]:
        """Several independent transactions in one etcd request (one raft entry): each is
        applied if its own compares hold, whatever the others do. The caller keeps their key
        sets disjoint (etcd refuses a request that writes one key twice, and every compare is
        evaluated before any write)."""
        requests = [_txn_request(item) for item in items]
        if len(requests) == 1:
            req = requests[0]
            async with self._call("txn"):
                resp = await self._client.kv.txn(req.compare, req.success, req.failure)  # type: ignore[union-attr]
            return [_outcome(resp, int(resp.header.revision))]
        async with self._call("txn"):
            resp = await self._client.kv.txn([], [RequestOp(request_txn=r) for r in requests])  # type: ignore[union-attr]
        revision = int(resp.header.revision)
        return [_outcome(r.response_txn, revision) for r in resp.responses]

    async def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        """Several keys read in one request per MAX_TXN_OPS keys (a read-only transaction:
        linearizable, no raft entry)."""
        out: list[Entry | None] = []
        for start in range(0, len(keys), MAX_TXN_OPS):
            chunk = keys[start : start + MAX_TXN_OPS]
            if len(chunk) == 1:
                out.append(await self.get(chunk[0]))
                continue
            async with self._call("get"):
                resp = await self._client.kv.txn([], [KVService.txn_op_get(k) for k in chunk])  # type: ignore[union-attr]
            out += [_as_entry(r.response_range.kvs[0]) if r.response_range.kvs else None for r in resp.responses]
        return out

    async def watch_prefix(self, prefix: str, start_revision: int = 0) -> AsyncIterator[Event]:
        """Events under prefix from start_revision on; reconnects across member failures.
        Raises WatchCompacted when etcd no longer has the revisions asked for: events were
        lost, and the caller must read the prefix again."""
        async for resp in self._client.watch.watch(  # type: ignore[union-attr]
            prefix, range_end=prefix_range_end(prefix.encode()), start_revision=start_revision
        ):
            if resp.compact_revision > 0:
                raise WatchCompacted(f"watch of {prefix} from revision {start_revision}: compacted up to {resp.compact_revision}")
            for ev in resp.events:
                yield Event(
                    key=ev.kv.key.decode(),
                    value=ev.kv.value,
                    deleted=ev.type == 1,
                    revision=ev.kv.mod_revision,
                )

    async def watch_key(self, key: str, start_revision: int = 0) -> AsyncIterator[Event]:
        async for resp in self._client.watch.watch(key, start_revision=start_revision):  # type: ignore[union-attr]
            for ev in resp.events:
                yield Event(key=key, value=ev.kv.value, deleted=ev.type == 1, revision=ev.kv.mod_revision)

    async def grant_lease(self, ttl: int) -> int:
        async with self._call("lease grant"):
            resp = await self._client.lease.grant(ttl=ttl)  # type: ignore[union-attr]
        return int(resp.ID)

    async def revoke_lease(self, lease_id: int) -> None:
        with contextlib.suppress(Exception):
            async with self._call("lease revoke"):
                await self._client.lease.revoke(lease_id)  # type: ignore[union-attr]

    def keep_alive(self, lease: int, ttl: int, on_expired: Callable[[], None]) -> EtcdLeaseKeeper:
        keeper = EtcdLeaseKeeper(self.endpoints, ttl, on_expired)
        keeper.start(lease)
        return keeper


class EtcdLeaseKeeper:
    """Renews one lease every ttl/3 seconds from its own thread; calls ``on_expired`` (in the
    event loop that started it) when etcd says the lease is gone.

    The keepalive runs in a thread of its own with a plain (blocking) gRPC channel, not as a
    task of the process's event loop. A loop busy with work (an agent process booting
    thousands of simulated VMs, a replica under a burst) runs its tasks late, and a keepalive
    that comes seconds late lets the lease expire: every record vanishes, the reconciler marks
    every VM of those hosts UNKNOWN, and the recovery makes the loop busier still. Seen at
    10,000 simulated hosts. A busy process is alive; only a dead or cut-off one should lose
    its lease. (It speaks etcd's lease protocol itself: etcd3aio's keepalive is a task of the
    event loop.)"""

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


def _pb_compare(c: Compare) -> PbCompare:
    return KVService.txn_compare_create_revision(c.key, 0) if c.mod_revision == 0 else _compare_mod(c.key, c.mod_revision)


def _pb_op(op: Put | Delete) -> RequestOp:
    if isinstance(op, Put):
        return KVService.txn_op_put(op.key, op.value, lease=op.lease)
    end = prefix_range_end(op.key.encode()) if op.prefix else None
    return KVService.txn_op_delete(op.key, range_end=end)


def _txn_request(item: TxnItem) -> TxnRequest:
    return TxnRequest(
        compare=[_pb_compare(c) for c in item.compares],
        success=[_pb_op(op) for op in item.ops],
        failure=[KVService.txn_op_get(k) for k in item.reads_on_failure],
    )


def _outcome(resp: object, revision: int) -> TxnOutcome:
    if resp.succeeded:  # type: ignore[attr-defined]
        return TxnOutcome(True, revision)
    reads = tuple(_as_entry(r.response_range.kvs[0]) if r.response_range.kvs else None for r in resp.responses)  # type: ignore[attr-defined]
    return TxnOutcome(False, revision, reads)


def _compare_mod(key: str, revision: int) -> PbCompare:
    return PbCompare(result=PbCompare.EQUAL, target=PbCompare.MOD, key=key.encode(), mod_revision=revision)
