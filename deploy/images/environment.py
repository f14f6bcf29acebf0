"""What a build needs from this machine, checked before anything starts."""

from __future__ import annotations

import os
from pathlib import Path

from deploy.images.debootstrap import debian_mirror
from deploy.images.kernel import Kernel, find_kernel


def build_environment(kernel_path: Path | None = None, mirror: str | None = None) -> tuple[Kernel, str]:
    """The kernel and Debian mirror a build uses; refuses to start what would fail half way."""
    if os.geteuid() != 0:
        raise SystemExit("image builds must run as root (debootstrap, chroot, file ownership in the images)")
    kernel = find_kernel(kernel_path)
    if not kernel.modules_dir.is_dir():
        raise SystemExit(f"{kernel.modules_dir} is missing for {kernel.vmlinuz}")
    return kernel, mirror or debian_mirror()
