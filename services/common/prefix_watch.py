"""Following a prefix: load it, then watch it from the revision after, again and again.

The host group (placements), the image updater (catalogue and prefetch requests) and the host
cache (hypervisors and usage) each keep something in step with a prefix of the store. The
loop is the same for all of them: read the prefix (revision R), apply its watch from R + 1 so
no write falls between the two, and when the watch breaks (the store unavailable, or
``WatchCompacted``: the revisions after R are gone) wait a little and read the prefix again,
since events may have been lost. What to do with what was read stays with the owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import NoReturn

from services.common.store import Entry, Event, Store

LOG = logging.getLogger(__name__)


def _ignore(entries: list[Entry]) -> None:
    pass


async def follow_prefix(
    store: Store,
    prefix: str,
    on_event: Callable[[Event], None],
    *,
    on_load: Callable[[list[Entry]], None] = _ignore,
    values: bool = True,
    retry_seconds: float = 0.5,
    what: str = "",
    log_level: int = logging.WARNING,
) -> NoReturn:
    """Calls ``on_load`` with every entry under prefix, then ``on_event`` with each change
    after them, until cancelled; after a failure, waits ``retry_seconds`` and loads again
    (``on_load`` then says: anything may have changed meanwhile). ``values=False``: the load
    reads only the revision and ``on_load`` gets no entries (an owner that reads what it needs
    itself). ``what`` names the loop in the log."""
    while True:
        try:
            if values:
                entries, revision = await store.get_prefix(prefix)
            else:
                entries, revision = [], (await store.get_prefix(prefix, keys_only=True, limit=1))[1]
            on_load(entries)
            async for ev in store.watch_prefix(prefix, revision + 1):
                on_event(ev)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store unavailable, or the watch compacted: load again
            LOG.log(log_level, "%s failed (%s); retrying", what or f"following {prefix}", exc)
        await asyncio.sleep(retry_seconds)
