from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.errors import FailedPrecondition
from services.common.records import ImageRecord
from services.hypervisor.image_cache import ImageCache


class Source:
    """Serves blobs from memory; can be told to cut a transfer short once."""

    def __init__(self, blobs: dict[str, bytes], cut_after: int | None = None) -> None:
        self.blobs = blobs
        self.calls: list[tuple[str, int]] = []
        self.cut_after = cut_after

    async def download(self, sha256: str, offset: int) -> AsyncIterator[bytes]:
        self.calls.append((sha256, offset))
        data = self.blobs[sha256][offset:]
        for i in range(0, len(data), 1000):
            await asyncio.sleep(0)
            if self.cut_after is not None and offset + i >= self.cut_after:
                self.cut_after = None
                raise ConnectionError("transfer cut")
            yield data[i : i + 1000]


def image(data: bytes, sha: str | None = None) -> ImageRecord:
    return ImageRecord(image="tiny", version=1, owner_vo="wnodes",
                       disk={"sha256": sha or hashlib.sha256(data).hexdigest(), "size_bytes": len(data)})


async def test_concurrent_requests_share_one_transfer(tmp_path: Path) -> None:
    data = b"x" * 50_000
    source = Source({hashlib.sha256(data).hexdigest(): data})
    cache = ImageCache(tmp_path, source)
    results = await asyncio.gather(*(cache.ensure(image(data)) for _ in range(3)))
    assert len(source.calls) == 1 and cache.transfers == 1
    assert {r.disk for r in results} == {results[0].disk}
    assert results[0].disk.read_bytes() == data


async def test_interrupted_transfer_resumes_where_it_stopped(tmp_path: Path) -> None:
    data = bytes(range(256)) * 400
    sha = hashlib.sha256(data).hexdigest()
    source = Source({sha: data}, cut_after=30_000)
    cache = ImageCache(tmp_path, source)
    with pytest.raises(ConnectionError):
        await cache.ensure(image(data))
    cached = await cache.ensure(image(data))
    assert source.calls == [(sha, 0), (sha, 30_000)]
    assert cached.disk.read_bytes() == data


async def test_corrupt_blob_is_refused_and_not_cached(tmp_path: Path) -> None:
    data = b"good" * 100
    wrong = hashlib.sha256(b"other").hexdigest()
    cache = ImageCache(tmp_path, Source({wrong: data}))
    with pytest.raises(FailedPrecondition) as info:
        await cache.ensure(image(data, sha=wrong))
    assert info.value.reason == "IMAGE_CHECKSUM_MISMATCH"
    assert not cache.has(image(data, sha=wrong))
    assert not list((tmp_path / "blobs").iterdir())


def _blob(tag: bytes) -> tuple[bytes, str]:
    data = tag * 10_000
    return data, hashlib.sha256(data).hexdigest()


async def test_over_its_limit_the_cache_evicts_the_least_recently_used_unused_blob(tmp_path: Path) -> None:
    # Prepare: room for two 10 kB blobs; a is the oldest but a VM holds it
    (a, sa), (b, sb), (c, sc) = _blob(b"a"), _blob(b"b"), _blob(b"c")
    cache = ImageCache(tmp_path, Source({sa: a, sb: b, sc: c}), max_bytes=25_000)
    await cache.ensure(image(a), holder="vm-a")
    await cache.ensure(image(b), holder="vm-b")
    cache.release("vm-b")
    # Execute: a third image arrives
    await cache.ensure(image(c), holder="vm-c")
    # Assert: b (unused) went, a (in use, older) stayed
    assert cache.has(image(a)) and cache.has(image(c)) and not cache.has(image(b))
    assert cache.cached_bytes() <= 25_000


async def test_blobs_in_use_are_never_evicted_even_above_the_limit(tmp_path: Path) -> None:
    (a, sa), (b, sb) = _blob(b"a"), _blob(b"b")
    cache = ImageCache(tmp_path, Source({sa: a, sb: b}), max_bytes=5_000)
    await cache.ensure(image(a), holder="vm-a")
    await cache.ensure(image(b), holder="vm-b")
    assert cache.has(image(a)) and cache.has(image(b))
    cache.release("vm-a")
    assert cache.evict() == [sa]


async def test_a_use_refreshes_a_blob_s_place_in_the_eviction_order(tmp_path: Path) -> None:
    (a, sa), (b, sb), (c, sc) = _blob(b"a"), _blob(b"b"), _blob(b"c")
    cache = ImageCache(tmp_path, Source({sa: a, sb: b, sc: c}), max_bytes=25_000)
    await cache.ensure(image(a))
    await cache.ensure(image(b))
    os.utime(tmp_path / "blobs" / sb, (1, 1))  # b is older than a's first use
    os.utime(tmp_path / "blobs" / sa, (0, 0))
    await cache.ensure(image(a))  # a used again: now the most recent
    await cache.ensure(image(c))
    assert cache.has(image(a)) and not cache.has(image(b))
    assert (cache.hits, cache.misses, cache.transfers) == (1, 3, 3)


async def test_superseded_unused_versions_leave_after_their_retention(tmp_path: Path) -> None:
    (a, sa), (b, sb) = _blob(b"a"), _blob(b"b")
    cache = ImageCache(tmp_path, Source({sa: a, sb: b}))
    await cache.ensure(image(a), holder="vm-a")
    await cache.ensure(image(b))
    os.utime(tmp_path / "blobs" / sb, (0, 0))
    os.utime(tmp_path / "blobs" / sa, (0, 0))
    assert cache.remove_unused({sa, sb}, older_than=time.time() - 3600) == [sb]  # a is in use
    cache.release("vm-a")
    assert cache.remove_unused({sa}, older_than=-1.0) == []  # not yet past its retention
    assert cache.remove_unused({sa}, older_than=time.time() + 1) == [sa]
