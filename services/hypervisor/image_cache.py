"""The host's image cache: each blob pulled once, verified, and shared by every VM on the host.

Blobs are content-addressed (``blobs/<sha256>``), so an image version is present when its blobs
are. Concurrent requests for one blob share one transfer (one task per sha256). A transfer
writes ``<sha256>.part`` and resumes from its length if it was interrupted; the result is only
renamed into place once its sha256 and size match the catalogue.

The cache may be given a size limit. Above it, the blobs no VM holds are removed least recently
used first (a blob's mtime is its last use, so the order survives an agent restart); a blob a
VM holds (``hold``) is never removed, even if that leaves the cache above its limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import queue
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.common.errors import FailedPrecondition
from services.common.records import ImageRecord

LOG = logging.getLogger(__name__)
# Chunks (1 MiB each) received ahead of the thread that hashes and writes them.
_PIPELINE_CHUNKS = 16


class BlobSource(Protocol):
    def download(self, sha256: str, offset: int) -> AsyncIterator[bytes]:
        """Streams the blob's bytes from offset."""
        ...


@dataclass(frozen=True)
class CachedImage:
    disk: Path
    kernel: Path | None
    initrd: Path | None
    cmdline: str


def blob_shas(image: ImageRecord) -> list[str]:
    return [str(b["sha256"]) for b in (image.disk, image.kernel, image.initrd) if b]


class ImageCache:
    def __init__(self, root: Path, source: BlobSource, max_bytes: int = 0) -> None:
        """max_bytes: the size the cache keeps itself under by evicting unused blobs (0: no limit)."""
        self._blobs = root / "blobs"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._source = source
        self._max_bytes = max_bytes
        self._pulls: dict[str, asyncio.Task[Path]] = {}
        self._holds: dict[str, set[str]] = {}  # holder (a VM id) -> blob shas it uses
        self.transfers = 0  # completed network transfers, for tests and metrics
        self.bytes_transferred = 0
        self.hits = 0
        self.misses = 0

    def has(self, image: ImageRecord) -> bool:
        return all((self._blobs / sha).exists() for sha in blob_shas(image))

    async def ensure(self, image: ImageRecord, holder: str = "") -> CachedImage:
        """The image's blobs on local disk, pulled if missing. With a holder (a VM id), its blobs
        are held for that VM until ``release(holder)``: eviction never removes them."""
        if holder:
            self.hold(holder, image)
        if self.has(image):
            self.hits += 1
        else:
            self.misses += 1
        disk = await self._blob(image.disk)
        kernel = await self._blob(image.kernel) if image.kernel else None
        initrd = await self._blob(image.initrd) if image.initrd else None
        return CachedImage(disk=disk, kernel=kernel, initrd=initrd, cmdline=image.cmdline)

    def hold(self, holder: str, image: ImageRecord) -> None:
        """The holder (a VM) uses the image's blobs: eviction leaves them alone."""
        self._holds[holder] = set(blob_shas(image))

    def release(self, holder: str) -> None:
        """The VM no longer uses its image (it was deleted)."""
        self._holds.pop(holder, None)

    def in_use(self) -> set[str]:
        return set().union(*self._holds.values()) if self._holds else set()

    def cached_shas(self) -> set[str]:
        return {p.name for p in self._blobs.iterdir() if not p.name.endswith(".part")}

    def cached_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._blobs.iterdir() if not p.name.endswith(".part"))

    def evict(self, keep: frozenset[str] = frozenset()) -> list[str]:
        """Removes unused blobs, least recently used first, until the cache is under its limit.
        Returns the shas removed. Blobs held by a VM, being pulled, or in keep stay."""
        if not self._max_bytes:
            return []
        blobs = [(st.st_mtime, st.st_size, p) for p in self._blobs.iterdir() if not p.name.endswith(".part") for st in [p.stat()]]
        total = sum(size for _, size, _ in blobs)
        protected = self.in_use() | set(self._pulls) | keep
        removed = []
        for _, size, path in sorted(blobs, key=lambda b: b[0]):
            if total <= self._max_bytes:
                break
            if path.name in protected:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed.append(path.name)
            LOG.info("evicted blob %s (%d bytes, least recently used) to keep the cache under %d bytes", path.name[:12], size, self._max_bytes)
        if total > self._max_bytes:
            LOG.warning("image cache holds %d bytes, above its %d limit: the rest is in use", total, self._max_bytes)
        return removed

    def remove_unused(self, shas: set[str], older_than: float) -> list[str]:
        """Removes these blobs if no VM holds them and they were last used before older_than
        (a wall-clock time): superseded versions leave the cache after their retention."""
        removed = []
        for sha in shas - self.in_use() - set(self._pulls):
            path = self._blobs / sha
            if path.exists() and path.stat().st_mtime < older_than:
                path.unlink(missing_ok=True)
                removed.append(sha)
                LOG.info("removed blob %s: its version is superseded and unused", sha[:12])
        return removed

    async def _blob(self, ref: dict[str, object]) -> Path:
        sha, size = str(ref["sha256"]), int(ref["size_bytes"])  # type: ignore[call-overload]
        path = self._blobs / sha
        if path.exists():
            os.utime(path)  # last use, for least-recently-used eviction
            return path
        task = self._pulls.get(sha)
        if task is None:
            task = asyncio.create_task(self._pull(sha, size, path))
            self._pulls[sha] = task
            task.add_done_callback(lambda _t: self._pulls.pop(sha, None))
        return await asyncio.shield(task)

    async def _pull(self, sha: str, size: int, path: Path) -> Path:
        part = path.with_suffix(".part")
        digest = hashlib.sha256()
        offset = 0
        if part.exists():  # resume: re-hash what is there, ask only for the rest
            offset = part.stat().st_size
            with part.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            LOG.info("resuming blob %s at %d of %d bytes", sha[:12], offset, size)
        # Hashing and writing happen in a thread while the event loop receives the next chunks:
        # sha256 alone runs at about the disk's copy speed here, so done in line it halves it.
        chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_PIPELINE_CHUNKS)

        def sink() -> None:
            with part.open("ab") as out:
                while (chunk := chunks.get()) is not None:
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())

        writer = asyncio.create_task(asyncio.to_thread(sink))
        try:
            async for chunk in self._source.download(sha, offset):
                if writer.done():
                    break  # the sink failed (disk full?): its error is raised below
                if chunks.full():
                    await asyncio.to_thread(chunks.put, chunk)
                else:
                    chunks.put_nowait(chunk)
                offset += len(chunk)
                self.bytes_transferred += len(chunk)
        finally:
            if not writer.done():
                await asyncio.to_thread(chunks.put, None)
            await writer
        if offset != size or digest.hexdigest() != sha:
            part.unlink(missing_ok=True)
            raise FailedPrecondition(
                f"blob {sha[:12]} failed verification ({offset} of {size} bytes, sha256 {digest.hexdigest()[:12]})",
                reason="IMAGE_CHECKSUM_MISMATCH",
            )
        part.rename(path)
        self.transfers += 1
        LOG.info("cached blob %s (%d bytes)", sha[:12], size)
        self.evict(keep=frozenset({sha}))
        return path
