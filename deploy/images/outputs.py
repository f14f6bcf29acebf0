"""An image folder's files: when one must be rebuilt, and how each is written."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from services.common import kernel_modules

HERE = Path(__file__).resolve().parent
# The builder's own code: an output older than any of it is rebuilt (as when the builder was one
# file, build.py, and its own time was an input). The recipe modules build no default image.
BUILD_CODE = (*(p for p in sorted(HERE.glob("*.py")) if not p.name.startswith("recipe")), Path(kernel_modules.__file__).resolve())


def is_stale(outputs: Sequence[Path], inputs: Sequence[Path]) -> bool:
    if not all(p.exists() for p in outputs):
        return True
    oldest = min(p.stat().st_mtime for p in outputs)
    return any(p.stat().st_mtime > oldest for p in inputs)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
