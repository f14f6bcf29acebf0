"""The store: the only durable state of WNoDeS, as the services see it.

A small key-value protocol in etcd's terms (revisions, compares, transactions, ranges in key
order, watches, leases). ``etcd_store.EtcdStore`` is the real one; ``memory_store.MemoryStore``
has the same semantics in one process, for tests that run the control plane's logic in
milliseconds. ``tests/contract/store_contract.py`` is the one suite both pass: a rule stated
here is checked there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(frozen=True)
class Event:
    key: str
    value: bytes  # empty for deletes
    deleted: bool
    revision: int


@dataclass(frozen=True)
class Compare:
    """A transaction guard. ``revision`` 0 means "the key does not exist"."""

    key: str
    mod_revision: int

    @staticmethod
    def unchanged(entry: Entry | None, key: str) -> Compare:
        return Compare(key, entry.mod_revision if entry else 0)


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True)
class TxnItem:
    """One transaction among several sent together (``Store.txn_many``)."""

    compares: Sequence[Compare]
    ops: Sequence[Put | Delete]
    reads_on_failure: Sequence[str] = ()
    """Keys read in the same revision when a compare fails: the caller learns why without
    another round trip."""


@dataclass(frozen=True)
class TxnOutcome:
    succeeded: bool
    revision: int
    """The store revision after the request (the mod_revision of every key it wrote)."""
    reads: tuple[Entry | None, ...] = ()
    """On failure, the entries of ``reads_on_failure`` (None where the key does not exist)."""


# etcd refuses a transaction with more operations than this in one branch (--max-txn-ops).
MAX_TXN_OPS = 128


class WatchCompacted(Exception):
    """The revisions a watch asked for were compacted away: read the prefix again."""


class LeaseKeepalive(Protocol):
    """Keeps one lease alive until stopped (``Store.keep_alive``)."""

    def renew_as(self, lease: int) -> None:
        """Keep this (new) lease alive from now on, instead of the one it was started with."""

    def stop(self) -> None:
        """No renewal after this returns."""


class Store(Protocol):
    """What the services need of a store. Errors: a store that cannot answer (no quorum, no
    connection, a call slower than its timeout) raises ``services.common.errors.Unavailable``;
    so does a request the store refuses (a key written twice in one request, an unknown
    lease).

    Revisions: one counter for the whole store, raised by one for every request that changes
    something (a put, a delete that found a key, a transaction that wrote; all the writes of
    one request share the revision). An entry's ``mod_revision`` is the revision of its last
    write, ``create_revision`` that of the write that created it (kept across updates, new
    after a delete). Reads report the store revision they were read at."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, key: str) -> Entry | None: ...

    async def get_prefix(
        self, prefix: str, *, start_after: str = "", start_at: str = "", end: str = "", limit: int = 0, keys_only: bool = False
    ) -> tuple[list[Entry], int]:
        """Entries in key order (byte order of the UTF-8 keys), and the store revision they
        were read at. The range starts at ``prefix``, or just after ``start_after``, or at
        ``start_at``; it ends before ``end`` if given, else after the last key under
        ``prefix`` (``end`` replaces the prefix bound: the range is [start, end)). ``limit``
        0 means no limit. ``keys_only``: the entries' values are empty. Never sorted
        otherwise: a range comes back in key order."""
        ...

    async def count_prefix(self, prefix: str) -> int:
        """How many keys are under prefix."""
        ...

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Writes key (bound to lease if not 0: it is deleted when the lease ends; a put
        without a lease unbinds it). Returns the new store revision."""
        ...

    async def delete(self, key: str) -> None: ...

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> tuple[bool, int]:
        """Applies ops atomically if every compare holds (a key's mod_revision equals the
        compare's; revision 0: the key does not exist). Returns whether it did, and the store
        revision after it (the mod_revision of every key it wrote). A key written twice is
        refused (Unavailable)."""
        ...

    async def txn_many(self, items: Sequence[TxnItem]) -> list[TxnOutcome]:
        """Several independent transactions in one request (one revision): each is applied if
        its own compares hold, whatever the others do; a failed one reads its
        ``reads_on_failure`` keys instead. Every compare is evaluated before any write, so
        the caller keeps the items' key sets disjoint (a key written by two items is refused,
        Unavailable). Outcomes in item order. Limits (etcd's): one item takes MAX_TXN_OPS
        compares, ops and reads each; n > 1 items (at most MAX_TXN_OPS) take MAX_TXN_OPS - n
        each."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        """The entries of keys, in their order (None where a key does not exist); any number
        of keys (the implementation splits them into requests of MAX_TXN_OPS)."""
        ...

    def watch_prefix(self, prefix: str, start_revision: int = 0) -> AsyncIterator[Event]:
        """Events under prefix, in revision order, from start_revision on (0: from the next
        write); a delete's event has an empty value and the revision of the delete. A
        start_revision older than the history the store keeps raises WatchCompacted: events
        were lost, and the caller must read the prefix again. A loaded prefix followed without
        a gap: read it (revision R), watch from R + 1."""
        ...

    def watch_key(self, key: str, start_revision: int = 0) -> AsyncIterator[Event]:
        """As watch_prefix, for exactly one key, except for a compacted start_revision: it
        does not raise WatchCompacted, it sends nothing (etcd cancels the watch, and the
        client does not say so). A caller bounds its wait (registry.py waits a few seconds
        for a VM to change, then reads it again)."""
        ...

    async def grant_lease(self, ttl: int) -> int:
        """A new lease of ttl seconds. When it expires (not renewed within ttl) or is revoked,
        every key bound to it is deleted, with a delete event for each."""
        ...

    async def revoke_lease(self, lease_id: int) -> None:
        """Ends the lease now (its keys are deleted). Never raises: a lease that cannot be
        revoked expires."""
        ...

    def keep_alive(self, lease: int, ttl: int, on_expired: Callable[[], None]) -> LeaseKeepalive:
        """Renews lease every ttl/3 seconds until stopped, whatever the caller's event loop is
        busy with. When the store says the lease is gone (it expired anyway, or was revoked),
        calls ``on_expired`` once in the event loop that started the keepalive, then waits for
        ``renew_as`` with a new lease. Must be called from a running event loop."""
        ...
