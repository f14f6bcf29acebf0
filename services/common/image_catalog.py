"""Reading the image catalogue from etcd: shared by the imagestore (which writes it) and the
nameserver (which resolves the image a VM asks for)."""

from __future__ import annotations

import time

from services.common import records
from services.common.error_reasons import image_state_reason
from services.common.errors import FailedPrecondition, ImageNotFound
from services.common.identity import Principal
from services.common.keys import Keys
from services.common.records import ImageRecord
from services.common.store import Store


class ImageCatalog:
    def __init__(self, store: Store, keys: Keys, cache_seconds: float = 0.0) -> None:
        """cache_seconds > 0 lets reads be that stale (the nameserver resolves an image per
        create; a newly published version becomes visible within that time)."""
        self._store = store
        self._keys = keys
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, list[ImageRecord]]] = {}

    async def versions(self, image: str = "", *, fresh: bool = False) -> list[ImageRecord]:
        """The image's versions (every image's with ""); fresh skips the cache."""
        now = time.monotonic()
        hit = self._cache.get(image)
        if hit is not None and now - hit[0] < self._cache_seconds and not fresh:
            return hit[1]
        entries, _ = await self._store.get_prefix(self._keys.image_version(image))
        found = [records.load(ImageRecord, e.value) for e in entries]
        if self._cache_seconds > 0:
            self._cache[image] = (now, found)
        return found

    async def visible(self, image: str, principal: Principal, *, fresh: bool = False) -> list[ImageRecord]:
        """The image's versions the caller may see (every image's with "")."""
        return [r for r in await self.versions(image, fresh=fresh) if r.visible_to(principal.vo, principal.is_admin, principal.user)]

    async def get(self, image: str, version: int | None, principal: Principal) -> ImageRecord:
        """The version named (in any state), or the newest AVAILABLE one. A version the caller
        may not see is reported exactly like one that does not exist: NOT_FOUND, no details."""
        if version is None:
            return await self.resolve(image, None, principal)
        for r in await self.visible(image, principal, fresh=True):
            if r.version == version:
                return r
        raise ImageNotFound(f"images/{image}/versions/{version} does not exist or is not visible to you", metadata={"image": image})

    async def resolve(self, image: str, version: int | None, principal: Principal) -> ImageRecord:
        """The version to boot: the one named, or the newest AVAILABLE one the caller may use.
        A name the cache does not know is looked up afresh before it is called missing: a
        version made a moment ago (a save) is found at once. The newest version may lag by up
        to cache_seconds."""
        cached = await self.versions(image)
        if not any(r.version == version or version is None for r in cached):
            cached = await self.versions(image, fresh=True)
        visible = [r for r in cached if r.visible_to(principal.vo, principal.is_admin, principal.user)]
        if not visible:
            names = sorted({r.image for r in await self.visible("", principal)})
            raise ImageNotFound(
                f"image {image!r} does not exist or is not visible to VO {principal.vo!r}; "
                f"available: {', '.join(names) or 'none'}",
                metadata={"image": image},
            )
        available = [r for r in visible if r.state == "AVAILABLE"]
        if version is not None:
            for r in visible:
                if r.version == version:
                    if r.state != "AVAILABLE":
                        raise FailedPrecondition(unusable_message(r, available), reason=image_state_reason(r.state))
                    return r
            raise ImageNotFound(f"images/{image} has no version {version}", metadata={"image": image})
        if not available:
            states = ", ".join(sorted({r.state.lower() for r in visible}))
            raise FailedPrecondition(f"images/{image} has no available version (its versions are {states})", reason="IMAGE_NOT_AVAILABLE")
        return max(available, key=lambda r: r.version)


def unusable_message(record: ImageRecord, available: list[ImageRecord]) -> str:
    """Why a version cannot boot new VMs, and what to use instead."""
    newest = max(available, key=lambda r: r.version, default=None)
    instead = f"; use {newest.name} (or just {record.image!r} for the newest)" if newest else ""
    return f"{record.name} is {record.state.lower()}: new VMs cannot use it (running VMs keep it){instead}"
