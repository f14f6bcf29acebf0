"""The image catalogue: registering versions in etcd (reads are shared, see
services/common/image_catalog.py)."""

from __future__ import annotations

import logging
import re

from services.common import records
from services.common.error_reasons import image_state_reason
from services.common.errors import Aborted, FailedPrecondition, ImageNotFound, InvalidArgument, PermissionDenied, Unavailable
from services.common.identity import Principal
from services.common.image_catalog import ImageCatalog
from services.common.keys import Keys
from services.common.names import check_image_name
from services.common.records import ImageRecord, PrefetchRecord
from services.common.store import Compare, Put, Store

LOG = logging.getLogger(__name__)

SHA256 = re.compile(r"^[0-9a-f]{64}$")
VISIBILITIES = {"PRIVATE", "VO", "PUBLIC"}

# The life of a version: which state each catalogue action may start from. DELETED is final;
# a DEPRECATED version may be published again (an operator undoing a deprecation).
TRANSITIONS: dict[str, tuple[set[str], str]] = {
    "publish": ({"BUILDING", "DEPRECATED", "AVAILABLE"}, "AVAILABLE"),
    "deprecate": ({"AVAILABLE", "DEPRECATED"}, "DEPRECATED"),
    "delete": ({"BUILDING", "AVAILABLE", "DEPRECATED", "DELETED"}, "DELETED"),
}


class Catalog(ImageCatalog):
    def __init__(self, store: Store, keys: Keys) -> None:
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

    async def request_prefetch(self, image: str, hosts: list[str], principal: Principal) -> ImageRecord:
        """Records that hosts should cache (and follow) the image; returns the version they pull."""
        if not principal.is_admin:
            raise PermissionDenied("only admins may prefetch images into host caches")
        newest = await self.resolve(image, None, principal)
        request = PrefetchRecord(image=image, hosts=sorted(hosts), requested_by=principal.user)
        await self._store.put(self._keys.prefetch(image), records.dump(request))
        LOG.info("prefetch of %s requested on %s", newest.name, ", ".join(request.hosts) or "every host")
        return newest

    async def transition(self, image: str, version: int, action: str, principal: Principal) -> ImageRecord:
        """Moves a version to the state the action leads to, as one etcd compare-and-swap.
        Only the owner VO (or an admin) may; a version the caller cannot see is NOT_FOUND.
        Repeating an action is not an error (publish of an AVAILABLE version returns it)."""
        allowed, target = TRANSITIONS[action]
        key = self._keys.image_version(image, version)
        for _ in range(5):
            entry = await self._store.get(key)
            record = records.load(ImageRecord, entry.value) if entry else None
            if record is None or not record.visible_to(principal.vo, principal.is_admin, principal.user):
                raise ImageNotFound(f"images/{image}/versions/{version} does not exist or is not visible to you", metadata={"image": image})
            if record.owner_vo != principal.vo and not principal.is_admin:
                raise PermissionDenied(f"only VO {record.owner_vo!r} or an admin may {action} {record.name}")
            if record.state not in allowed:
                raise FailedPrecondition(f"cannot {action} {record.name}: it is {record.state.lower()}", reason=image_state_reason(record.state))
            if record.state == target:
                return record
            record.state = target
            assert entry is not None
            ok, _ = await self._store.txn([Compare(key, entry.mod_revision)], [Put(key, records.dump(record))])
            if ok:
                LOG.info("%s is now %s (by %s/%s)", record.name, target, principal.user, principal.vo)
                return record
        raise Aborted(f"{image}/versions/{version} changed concurrently; try again")


def check_header(image: str, visibility: str, blobs: dict[str, tuple[str, int]]) -> None:
    check_image_name(image)
    if visibility not in VISIBILITIES:
        raise InvalidArgument(f"visibility must be one of {', '.join(sorted(VISIBILITIES))}")
    if "disk" not in blobs:
        raise InvalidArgument("the header must declare the disk blob (sha256 and size)", reason="DISK_REQUIRED")
    for part, (sha, size) in blobs.items():
        if not SHA256.match(sha):
            raise InvalidArgument(f"{part}: sha256 must be 64 lowercase hex digits", reason="INVALID_SHA256")
        if size <= 0:
            raise InvalidArgument(f"{part}: size_bytes must be positive")
