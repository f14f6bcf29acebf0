"""This machine's static busybox (busybox-static): the initramfs's shell, the tiny image's whole
userland and the guest agent's tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

BUSYBOX = Path("/bin/busybox")


def busybox_applets() -> list[str]:
    """Paths (relative to /) busybox installs its applets at, e.g. 'usr/bin/awk'."""
    out = subprocess.run([str(BUSYBOX), "--list-full"], check=True, capture_output=True, text=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]
