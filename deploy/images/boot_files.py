"""``vmlinux`` and ``initrd.img`` of an image folder: the same bytes for every image."""

from __future__ import annotations

import time
from pathlib import Path

from deploy.images.busybox import BUSYBOX
from deploy.images.initramfs import BOOT_SCRIPT, build_initrd_bytes
from deploy.images.kernel import Kernel, extract_vmlinux, slim_elf
from deploy.images.outputs import BUILD_CODE, is_stale, write_atomic


def build_boot_files(image_dir: Path, kernel: Kernel, force: bool, timings: dict[str, float]) -> None:
    """vmlinux and initrd.img in image_dir, rebuilt when stale; the same bytes for every image."""
    vmlinux, initrd = image_dir / "vmlinux", image_dir / "initrd.img"
    started = time.monotonic()
    if force or is_stale([vmlinux], [kernel.vmlinuz, *BUILD_CODE]):
        write_atomic(vmlinux, slim_elf(extract_vmlinux(kernel.vmlinuz.read_bytes())), 0o644)
        timings["vmlinux"] = time.monotonic() - started
    started = time.monotonic()
    if force or is_stale([initrd], [kernel.modules_dir / "modules.dep", BUSYBOX, BOOT_SCRIPT, *BUILD_CODE]):
        write_atomic(initrd, build_initrd_bytes(kernel))
        timings["initrd"] = time.monotonic() - started
