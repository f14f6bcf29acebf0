"""Running qemu-img: the copy-on-write overlays of VMs and flat copies of their disks."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from services.hypervisor.drivers.base import DriverError


async def qemu_img(*args: str, what: str) -> None:
    """Runs qemu-img; DriverError (saying what failed, with qemu-img's message) if it fails. A
    cancelled call kills qemu-img: a deleted VM does not leave a copy running behind it."""
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise DriverError(f"{what}: {err.decode(errors='replace').strip()}")


async def create_overlay(base: Path, overlay: Path) -> None:
    """overlay: a new qcow2 whose reads fall through to base and whose writes stay in it."""
    await qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay),
                   what=f"qemu-img could not create the overlay {overlay}")  # fmt: skip


async def flatten(disk: Path, out: Path, *, compress: bool) -> None:
    """out: one self-contained qcow2 with what disk reads (its backing chain merged in). Reads
    even a disk a paused QEMU holds open (-U: QEMU flushed it when it paused). Written to a
    temporary name first: out exists only if it is whole."""
    part = out.with_name(out.name + ".part")
    try:
        await qemu_img("convert", "-q", "-U", "-O", "qcow2", *(["-c"] if compress else []), str(disk), str(part),
                       what=f"qemu-img could not copy {disk}")  # fmt: skip
        part.rename(out)
    finally:
        part.unlink(missing_ok=True)


async def create_volume(path: Path, size_mib: int) -> None:
    """A new, empty qcow2 of size_mib (sparse: it takes room only as the guest writes)."""
    part = path.with_name(path.name + ".part")
    try:
        await qemu_img("create", "-q", "-f", "qcow2", str(part), f"{size_mib}M", what=f"qemu-img could not create the volume {path}")
        part.rename(path)
    finally:
        part.unlink(missing_ok=True)
