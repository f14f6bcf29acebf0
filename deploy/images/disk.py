"""``disk.qcow2``: an ext4 root file system made from a directory (``mkfs.ext4 -d``, no loop
mounts), converted to qcow2."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path


def make_disk(root: Path, out: Path, size_mib: int, compress: bool) -> None:
    """ext4 from a directory (mkfs.ext4 -d) into a raw file, then qcow2."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".disk-") as tmp:
        raw = Path(tmp) / "root.raw"
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-L", "wnodes-root", "-b", "4096", "-m", "0",
             "-O", "^has_journal", "-E", "root_owner=0:0", "-d", str(root), str(raw),
             f"{size_mib}M"],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        qcow = Path(tmp) / "disk.qcow2"
        cmd = ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2"]
        cmd += ["-c"] if compress else []
        subprocess.run([*cmd, str(raw), str(qcow)], check=True)
        os.chmod(qcow, 0o644)
        os.replace(qcow, out)


def dir_size_mib(root: Path) -> int:
    out = subprocess.run(["du", "-s", "-x", "--block-size=1M", str(root)], check=True,
                         capture_output=True, text=True)  # fmt: skip
    return int(out.stdout.split()[0])

