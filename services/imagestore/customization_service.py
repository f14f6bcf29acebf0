"""Making a new image version by customising a copy of another one's disk.

The source blob is content-addressed and never opened for writing: its disk is copied to a
temporary file in the blob directory, the copy is customised (``GuestfsCustomizer.apply`` in a
worker process, awaited, so the server's event loop keeps serving), hashed, moved into place under its own
sha256 and registered with the source's kernel, initrd and command line and the list of what was
applied. A failure at any step leaves no blob and no version behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from services.common.digests import sha256_file
from services.common.errors import PermissionDenied, WnodesError, error_from_dict
from services.common.identity import Principal
from services.common.records import ImageRecord
from services.imagestore.blobs import BlobStore
from services.imagestore.catalog import Catalog
from services.imagestore.guestfs_customizer import Customization, Progress, job_to_json

LOG = logging.getLogger(__name__)


class Customizer(Protocol):
    async def apply(self, disk: Path, fmt: str, kernel: Path | None, spec: Customization, progress: Progress) -> list[str]:
        """Customises disk in place; calls progress(text, percent) as it goes; returns what was applied."""
        ...


@dataclass(frozen=True)
class ProcessCustomizer:
    """Runs GuestfsCustomizer in a child process (services/imagestore/guestfs_customizer.py main())."""

    cache_dir: Path | None = None

    async def apply(self, disk: Path, fmt: str, kernel: Path | None, spec: Customization, progress: Progress) -> list[str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.imagestore.guestfs_customizer",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write(job_to_json(disk, fmt, kernel, spec, self.cache_dir))
            await proc.stdin.drain()
            proc.stdin.close()
            stderr_task = asyncio.ensure_future(proc.stderr.read())
            result: dict[str, Any] = {}
            while line := await proc.stdout.readline():
                try:
                    msg = json.loads(line)
                except ValueError:
                    LOG.debug("customisation worker said: %s", line.decode(errors="replace").rstrip())
                    continue
                if "step" in msg:
                    progress(msg["step"], int(msg["percent"]))
                else:
                    result = msg
            code = await proc.wait()
            stderr = (await stderr_task).decode(errors="replace").strip()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if "error" in result:
            raise error_from_dict(result["error"])
        if code != 0 or "applied" not in result:
            LOG.error("customisation worker exited %s: %s", code, stderr[-2000:])
            raise WnodesError(f"the customisation worker failed (exit {code}); see the imagestore log")
        LOG.info("libguestfs launch took %s s", ", ".join(f"{s:.1f}" for s in result.get("launch_seconds", [])))
        return list(result["applied"])


@dataclass(frozen=True)
class Step:
    text: str
    percent: int
    record: ImageRecord | None = None


class CustomizeService:
    """One customisation at a time per imagestore: each runs a QEMU appliance (~0.5 GiB, a CPU)."""

    def __init__(self, catalog: Catalog, blobs: BlobStore, customizer: Customizer) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._customizer = customizer
        self._slot = asyncio.Semaphore(1)

    async def run(
        self, source: ImageRecord, image: str, spec: Customization, principal: Principal, visibility: str, description: str
    ) -> AsyncIterator[Step]:
        spec.check()
        await self._check_target(image, principal)
        steps: asyncio.Queue[Step] = asyncio.Queue()

        def progress(text: str, percent: int) -> None:
            LOG.info("customising %s into images/%s: %s", source.name, image, text)
            steps.put_nowait(Step(text, percent))

        if self._slot.locked():
            yield Step("waiting for another customisation to finish", 0)
        async with self._slot:
            started = time.monotonic()
            fd, name = tempfile.mkstemp(dir=self._blobs.root, prefix=".customize-")
            os.close(fd)
            work = Path(name)
            try:
                yield Step(f"copying the disk of {source.name} ({int(source.disk['size_bytes']) >> 20} MiB)", 5)
                await asyncio.to_thread(shutil.copyfile, self._blobs.root / str(source.disk["sha256"]), work)
                kernel = self._blobs.root / str(source.kernel["sha256"]) if source.kernel else None
                task = asyncio.ensure_future(self._customizer.apply(work, source.format, kernel, spec, progress))
                while not task.done() or not steps.empty():
                    getter = asyncio.ensure_future(steps.get())
                    await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield getter.result()
                    else:
                        getter.cancel()
                applied = task.result()
                yield Step("computing the new disk's sha256", 90)
                sha = await asyncio.to_thread(sha256_file, work)
                size = work.stat().st_size
                os.replace(work, self._blobs.root / sha)
            finally:
                work.unlink(missing_ok=True)
            record = ImageRecord(
                image=image,
                version=0,
                owner_vo=principal.vo,
                owner_user=principal.user,
                visibility=visibility or source.visibility,
                architecture=source.architecture,
                format=source.format,
                disk={"sha256": sha, "size_bytes": size},
                kernel=dict(source.kernel),
                initrd=dict(source.initrd),
                cmdline=source.cmdline,
                description=description or f"{source.name}, customised",
                state="AVAILABLE",
                customizations=[f"from {source.name}", *applied],
            )
            record = await self._catalog.register(record)
            LOG.info("customised %s into %s in %.1f s", source.name, record.name, time.monotonic() - started)
            yield Step(f"registered {record.name} in {time.monotonic() - started:.1f} s", 100, record)

    async def _check_target(self, image: str, principal: Principal) -> None:
        """A new version of an existing image: only its owner VO (or an admin) may add one."""
        existing = await self._catalog.versions(image)
        owners = {r.owner_vo for r in existing}
        if owners and principal.vo not in owners and not principal.is_admin:
            raise PermissionDenied(f"images/{image} belongs to VO {', '.join(sorted(owners))}: pick another name")
