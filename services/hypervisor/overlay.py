"""Copy-on-write overlays: each VM writes to its own qcow2 layer over the cached image."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.hypervisor.drivers.base import DriverError


async def create_overlay(base: Path, overlay: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise DriverError(f"qemu-img could not create the overlay {overlay}: {err.decode().strip()}")
