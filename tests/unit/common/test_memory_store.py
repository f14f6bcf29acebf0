"""MemoryStore's test hooks (the Store contract itself is tests/contract/store_contract.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common.errors import Unavailable
from services.common.memory_store import MemoryStore
from services.common.store import Put, TxnItem


async def test_while_unavailable_every_call_raises_and_nothing_changes() -> None:
    # Prepare
    store = MemoryStore()
    await store.put("/a", b"1")
    store.unavailable = True
    # Execute / Assert
    for call in (store.get("/a"), store.get_prefix("/"), store.count_prefix("/"), store.put("/b", b""), store.delete("/a"),
                 store.txn([], [Put("/b", b"")]), store.txn_many([TxnItem([], [])]), store.get_many(["/a"]), store.grant_lease(5)):  # fmt: skip
        with pytest.raises(Unavailable):
            await call
    with pytest.raises(Unavailable):
        await anext(store.watch_prefix("/"))
    await store.revoke_lease(1)  # never raises
    store.unavailable = False
    assert (await store.get_prefix("/"))[0][0].value == b"1"


async def test_expire_lease_ends_it_now_and_tells_its_keepalive() -> None:
    # Prepare
    store = MemoryStore()
    told = asyncio.Event()
    lease = await store.grant_lease(60)
    await store.put("/a", b"", lease=lease)
    keepalive = store.keep_alive(lease, 60, told.set)
    # Execute
    store.expire_lease(lease)
    # Assert
    assert await store.get("/a") is None
    async with asyncio.timeout(1):
        await told.wait()
    keepalive.stop()


async def test_a_lease_kept_alive_expires_while_the_store_is_unavailable() -> None:
    # Prepare
    store = MemoryStore()
    told = asyncio.Event()
    lease = await store.grant_lease(1)
    await store.put("/a", b"", lease=lease)
    keepalive = store.keep_alive(lease, 1, told.set)
    # Execute: the renewals do not reach the store
    store.unavailable = True
    async with asyncio.timeout(3):
        await told.wait()
    # Assert
    store.unavailable = False
    assert await store.get("/a") is None and store.lease_of("/a") == 0
    keepalive.stop()


async def test_ranges_stay_fast_over_many_keys() -> None:
    # Prepare: 50,000 keys
    store = MemoryStore()
    for i in range(0, 50_000, 100):
        await store.txn_many([TxnItem([], [Put(f"/vms/{j:06d}", b"x")]) for j in range(i, i + 100)])
    # Execute: 2,000 pages of 10
    started = time.perf_counter()
    for i in range(2_000):
        entries, _ = await store.get_prefix("/vms/", start_after=f"/vms/{i * 20:06d}", limit=10)
        assert len(entries) == 10
    # Assert: a bisection per page, not a scan (a scan takes seconds here)
    assert time.perf_counter() - started < 0.5
    assert await store.count_prefix("/vms/") == 50_000
