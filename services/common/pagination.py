"""Pagination. Offset pages for lists that are read whole from etcd and then filtered (small
collections: hypervisors, image versions); key pages for collections that can be large (VMs,
volumes): the token is the last key seen, so a page costs one range read however far in."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import TypeVar

from services.common.errors import InvalidArgument
from services.common.store import Entry, Store

T = TypeVar("T")

MAX_PAGE_SIZE = 1000


def page_of(items: Sequence[T], page_size: int, page_token: str, default_size: int = 100) -> tuple[list[T], str]:
    """The page starting at page_token's offset, and the token of the next page ("" at the end)."""
    size = page_size_of(page_size, default_size)
    if page_token and not page_token.isdigit():
        raise InvalidArgument("page_token is not one this service returned", reason="INVALID_PAGE_TOKEN")
    start = int(page_token or 0)
    end = start + size
    return list(items[start:end]), str(end) if end < len(items) else ""


async def page_by_key(
    store: Store, prefix: str, keep: Callable[[Entry], T | None], page_size: int, page_token: str
) -> tuple[list[T], str]:
    """Up to page_size items under prefix in key order, starting after page_token's key; keep
    turns an entry into an item, or None to skip it (not the caller's)."""
    page_size = page_size_of(page_size)
    start_after = decode_key_token(page_token)
    out: list[T] = []
    while len(out) < page_size:
        entries, _ = await store.get_prefix(prefix, start_after=start_after, limit=page_size)
        for e in entries:
            item = keep(e)
            if item is not None:
                out.append(item)
            start_after = e.key
            if len(out) == page_size:
                break
        if len(entries) < page_size:
            return out, ""
    return out, encode_key_token(start_after)


def page_size_of(page_size: int, default_size: int = 100) -> int:
    """The page size a request asks for, within bounds (0: the default)."""
    if page_size < 0:
        raise InvalidArgument(f"page_size must not be negative (got {page_size})", reason="INVALID_PAGE_SIZE")
    return min(page_size or default_size, MAX_PAGE_SIZE)


def encode_key_token(key: str) -> str:
    """A key-page token: the last key seen ("" at the end)."""
    return base64.urlsafe_b64encode(key.encode()).decode() if key else ""


def decode_key_token(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except ValueError as exc:
        raise InvalidArgument("page_token is not one this service returned", reason="INVALID_PAGE_TOKEN") from exc
