"""Parsing resource names ("images/tiny/versions/3", "virtualMachines/vm-1")."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

_IMAGE_RE = re.compile(r"^(?:images/)?([a-z0-9][a-z0-9._-]{0,62})(?:/versions/([0-9]{1,9}))?$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def parse_image(image: str) -> tuple[str, int | None]:
    """'tiny', 'images/tiny' or 'images/tiny/versions/3' -> ('tiny', None|3)."""
    if not image:
        raise InvalidArgument("image is required (e.g. 'tiny' or 'images/tiny/versions/1')", reason="IMAGE_REQUIRED")
    m = _IMAGE_RE.match(image)
    if not m:
        raise InvalidArgument(
            f"image {image!r} is not a valid image name: use 'NAME' or 'images/NAME/versions/N'",
            reason="INVALID_IMAGE_NAME",
        )
    return m.group(1), int(m.group(2)) if m.group(2) else None


def parse_resource_id(name: str, collection: str) -> str:
    """'virtualMachines/vm-1' -> 'vm-1' (a bare id is accepted too)."""
    prefix = f"{collection}/"
    rid = name[len(prefix) :] if name.startswith(prefix) else name
    if not _ID_RE.match(rid):
        raise InvalidArgument(f"{name!r} is not a valid name: expected '{collection}/ID'", reason="INVALID_NAME")
    return rid
