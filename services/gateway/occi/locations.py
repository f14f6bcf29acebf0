"""Entity locations: "/compute/vm-1" or the same as an absolute URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from services.common import names
from services.common.errors import InvalidArgument


def path_of(uri: str) -> str:
    """The path of a location given as a path or an absolute URL (any host: clients behind
    proxies see other host names; the path is what identifies the entity)."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise InvalidArgument(f"{uri[:200]!r} is not a URI", reason="INVALID_LOCATION") from exc
    return parts.path or "/"


def split(uri: str) -> tuple[str, str]:
    """'/compute/vm-1' -> ('/compute/', 'vm-1'); raises for anything else."""
    path = path_of(uri)
    collection, _, entity_id = path.rstrip("/").rpartition("/")
    if not collection or not is_entity_id(entity_id):
        raise InvalidArgument(f"{uri[:200]!r} is not the location of an entity (e.g. /compute/ID)", reason="INVALID_LOCATION")
    return collection + "/", entity_id


def is_entity_id(text: str) -> bool:
    """A resource's id, or a storage link's (two ids joined by '.')."""
    return names.is_resource_id(text) or names.is_link_id(text)
