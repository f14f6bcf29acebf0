"""``manifest.json``: name, architecture, format, kernel command line, kernel release, os-release
and the sha256 and size of every file of an image folder (what the dev stack registers, and what
a recipe's upload declares)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from deploy.images.kernel import KERNEL_CMDLINE, Kernel
from deploy.images.outputs import write_atomic
from services.common.digests import sha256_file


def parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def manifest(name: str, base: str, kernel: Kernel, os_release: str, files: Sequence[Path], **extra: object) -> dict[str, object]:
    """What every image's manifest holds, and extra (a recipe's owner, source, customisations)."""
    return {
        "name": name,
        "architecture": "x86_64",
        "format": "qcow2",
        "cmdline": KERNEL_CMDLINE,
        "kernel_release": kernel.release,
        "min_memory_mib": 128 if base == "tiny" else 256,
        "os_release": parse_os_release(os_release),
        **extra,
        "files": {f.name: {"sha256": sha256_file(f), "size": f.stat().st_size} for f in files},
    }


def write_manifest(path: Path, data: dict[str, object]) -> None:
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
