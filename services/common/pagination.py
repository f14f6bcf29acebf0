"""Offset pagination for lists that are read whole from etcd and then filtered (small
collections: hypervisors, image versions). The VM list pages by key instead (registry.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from services.common.errors import InvalidArgument

T = TypeVar("T")

MAX_PAGE_SIZE = 1000


def page_of(items: Sequence[T], page_size: int, page_token: str, default_size: int = 100) -> tuple[list[T], str]:
    """The page starting at page_token's offset, and the token of the next page ("" at the end)."""
    if page_size < 0:
        raise InvalidArgument(f"page_size must not be negative (got {page_size})", reason="INVALID_PAGE_SIZE")
    if page_token and not page_token.isdigit():
        raise InvalidArgument("page_token is not one this service returned", reason="INVALID_PAGE_TOKEN")
    start = int(page_token or 0)
    size = min(page_size or default_size, MAX_PAGE_SIZE)
    end = start + size
    return list(items[start:end]), str(end) if end < len(items) else ""
