"""The image catalogue: registering versions in etcd (reads are shared, see
services/common/image_catalog.py)."""

from __future__ import annotations

import logging
import re

from services.common import records
from services.common.errors import InvalidArgument, Unavailable
from services.common.image_catalog import ImageCatalog
from services.common.keys import Keys
from services.common.records import ImageRecord
from services.common.store import Compare, EtcdStore, Put

LOG = logging.getLogger(__name__)

IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
VISIBILITIES = {"PRIVATE", "VO", "PUBLIC"}


class Catalog(ImageCatalog):
    def __init__(self, store: EtcdStore, keys: Keys) -> None:
        super().__init__(store, keys)
        self._store = store
        self._keys = keys

    async def register(self, record: ImageRecord) -> ImageRecord:
        """Adds the record as the image's next version (numbers are never reused)."""
        for _ in range(20):
            existing = await self.versions(record.image)
            record.version = max((r.version for r in existing), default=0) + 1
            key = self._keys.image_version(record.image, record.version)
            ok, _ = await self._store.txn([Compare(key, 0)], [Put(key, records.dump(record))])
            if ok:
                LOG.info("registered %s (%s, VO %s)", record.name, record.visibility, record.owner_vo)
                return record
        raise Unavailable(f"could not register a new version of {record.image}: too many concurrent uploads")


def check_header(image: str, visibility: str, blobs: dict[str, tuple[str, int]]) -> None:
    if not IMAGE_NAME.match(image):
        raise InvalidArgument(f"image name {image!r} must be 1-63 characters of a-z, 0-9, '.', '_', '-'", reason="INVALID_IMAGE_NAME")
    if visibility not in VISIBILITIES:
        raise InvalidArgument(f"visibility must be one of {', '.join(sorted(VISIBILITIES))}")
    if "disk" not in blobs:
        raise InvalidArgument("the header must declare the disk blob (sha256 and size)", reason="DISK_REQUIRED")
    for part, (sha, size) in blobs.items():
        if not SHA256.match(sha):
            raise InvalidArgument(f"{part}: sha256 must be 64 lowercase hex digits", reason="INVALID_SHA256")
        if size <= 0:
            raise InvalidArgument(f"{part}: size_bytes must be positive")
