"""Content-addressed blob storage on disk: ``<root>/<sha256>``. A blob is written to a temporary
file, hashed while it arrives, and only moved into place once it matches what was declared."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from services.common.errors import InvalidArgument, NotFound

CHUNK = 1 << 20


class BlobWriter:
    def __init__(self, root: Path, part: str, sha256: str, size: int) -> None:
        self.part, self.sha256, self.size = part, sha256, size
        fd, name = tempfile.mkstemp(dir=root, prefix=".upload-")
        self._file = os.fdopen(fd, "wb")
        self._path = Path(name)
        self._digest = hashlib.sha256()
        self.received = 0

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.size:
            raise InvalidArgument(f"{self.part}: more data than the declared {self.size} bytes", reason="BLOB_SIZE_MISMATCH")
        self._digest.update(data)
        self._file.write(data)

    def finish(self, root: Path) -> Path:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.received != self.size:
            raise InvalidArgument(
                f"{self.part}: received {self.received} of the declared {self.size} bytes (upload cut short?)",
                reason="BLOB_SIZE_MISMATCH",
            )
        actual = self._digest.hexdigest()
        if actual != self.sha256:
            raise InvalidArgument(
                f"{self.part}: content has sha256 {actual}, not the declared {self.sha256}", reason="BLOB_CHECKSUM_MISMATCH"
            )
        final = root / self.sha256
        os.replace(self._path, final)
        return final

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def has(self, sha256: str, size: int) -> bool:
        path = self.root / sha256
        return len(sha256) == 64 and path.is_file() and path.stat().st_size == size

    def writer(self, part: str, sha256: str, size: int) -> BlobWriter:
        return BlobWriter(self.root, part, sha256, size)

    def read(self, sha256: str, offset: int = 0) -> Iterator[bytes]:
        path = self.root / sha256
        if len(sha256) != 64 or not path.exists():
            raise NotFound(f"blob {sha256[:16]} does not exist", reason="BLOB_NOT_FOUND")
        with path.open("rb") as f:
            f.seek(offset)
            yield from iter(lambda: f.read(CHUNK), b"")
