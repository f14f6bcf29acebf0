"""The host's image cache: each blob pulled once, verified, and shared by every VM on the host.

Blobs are content-addressed (``blobs/<sha256>``), so an image version is present when its blobs
are. Concurrent requests for one blob share one transfer (one task per sha256). A transfer
writes ``<sha256>.part`` and resumes from its length if it was interrupted; the result is only
renamed into place once its sha256 and size match the catalogue.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.common.errors import FailedPrecondition
from services.common.records import ImageRecord

LOG = logging.getLogger(__name__)


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


class ImageCache:
    def __init__(self, root: Path, source: BlobSource) -> None:
        self._blobs = root / "blobs"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._source = source
        self._pulls: dict[str, asyncio.Task[Path]] = {}
        self.transfers = 0  # completed network transfers, for tests and metrics

    def has(self, image: ImageRecord) -> bool:
        return all((self._blobs / b["sha256"]).exists() for b in (image.disk, image.kernel, image.initrd) if b)

    async def ensure(self, image: ImageRecord) -> CachedImage:
        disk = await self._blob(image.disk)
        kernel = await self._blob(image.kernel) if image.kernel else None
        initrd = await self._blob(image.initrd) if image.initrd else None
        return CachedImage(disk=disk, kernel=kernel, initrd=initrd, cmdline=image.cmdline)

    async def _blob(self, ref: dict[str, object]) -> Path:
        sha, size = str(ref["sha256"]), int(ref["size_bytes"])  # type: ignore[call-overload]
        path = self._blobs / sha
        if path.exists():
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
        with part.open("ab") as out:
            async for chunk in self._source.download(sha, offset):
                digest.update(chunk)
                out.write(chunk)
                offset += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if offset != size or digest.hexdigest() != sha:
            part.unlink(missing_ok=True)
            raise FailedPrecondition(
                f"blob {sha[:12]} failed verification ({offset} of {size} bytes, sha256 {digest.hexdigest()[:12]})",
                reason="IMAGE_CHECKSUM_MISMATCH",
            )
        part.rename(path)
        self.transfers += 1
        LOG.info("cached blob %s (%d bytes)", sha[:12], size)
        return path
