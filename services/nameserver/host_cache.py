"""Each replica's view of the hosts, fed by etcd watches instead of a scan per placement.

Placement reads hosts from here and proves it was right with the transaction: the usage key's
revision is compared, so a stale view costs a retry, never an overbooked host. The view is kept
as a ``HostIndex`` (hosts by free vCPUs), updated per event, so that a placement samples a few
hosts instead of building and ranking a list of all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from services.common import records
from services.common.keys import Keys
from services.common.prefix_watch import follow_prefix
from services.common.records import HostUsage, HypervisorRecord
from services.common.store import Entry, Event, Store
from services.nameserver.scheduling.host_index import HostIndex
from services.nameserver.scheduling.host_state import HostState

LOG = logging.getLogger(__name__)


class HostCache:
    def __init__(self, store: Store, keys: Keys) -> None:
        self._store = store
        self._keys = keys
        self.hypervisors: dict[str, HypervisorRecord] = {}
        self.usage: dict[str, tuple[HostUsage, Entry]] = {}
        self.index = HostIndex()
        self._tasks: list[asyncio.Task[None]] = []
        self._loaded: set[str] = set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._follow(self._keys.hypervisor(), self._on_hypervisor)),
            asyncio.create_task(self._follow(self._keys.usage(), self._on_usage)),
        ]

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Returns once both prefixes have been loaded once."""
        async with asyncio.timeout(timeout):
            while len(self._loaded) < 2:
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def vm_count(self) -> int:
        """VMs holding resources on some host (as the usage records say)."""
        return sum(len(usage.vms) for usage, _ in self.usage.values())

    def note_usage(self, host: str, usage: HostUsage, entry: Entry) -> None:
        """Records a write this replica just made, so its next placement sees it at once."""
        current = self.usage.get(host)
        if current is None or current[1].mod_revision < entry.mod_revision:
            self.usage[host] = (usage, entry)
            self._reindex(host)

    def _reindex(self, name: str) -> None:
        hv = self.hypervisors.get(name)
        if hv is None:
            self.index.remove(name)
            return
        usage = self.usage.get(name, (HostUsage(), None))[0]
        self.index.put(
            HostState(
                name=name,
                vcpu_count=hv.vcpu_count,
                memory_mib=hv.memory_mib,
                vcpus_used=usage.vcpus_used,
                memory_mib_used=usage.memory_mib_used,
                cached_images=frozenset(hv.cached_images),
            )
        )

    def _on_hypervisor(self, key: str, value: bytes, deleted: bool, entry: Entry | None) -> None:
        name = key.rsplit("/", 1)[-1]
        if deleted:
            self.hypervisors.pop(name, None)
        else:
            self.hypervisors[name] = records.load(HypervisorRecord, value)
        self._reindex(name)

    def _on_usage(self, key: str, value: bytes, deleted: bool, entry: Entry | None) -> None:
        name = key.rsplit("/", 1)[-1]
        if deleted or entry is None:
            self.usage.pop(name, None)
            self._reindex(name)
        else:
            self.note_usage(name, records.load(HostUsage, value), entry)

    async def _follow(self, prefix: str, apply: Callable[[str, bytes, bool, Entry | None], None]) -> None:
        """Loads a prefix, then applies its watch events; reloads if the watch breaks."""
        target = self.hypervisors if prefix == self._keys.hypervisor() else self.usage

        def load(entries: list[Entry]) -> None:
            fresh: set[str] = set()
            for e in entries:
                apply(e.key, e.value, False, e)
                fresh.add(e.key.rsplit("/", 1)[-1])
            for gone in set(target) - fresh:
                target.pop(gone, None)
                self._reindex(gone)
            self._loaded.add(prefix)

        def event(ev: Event) -> None:
            apply(ev.key, ev.value, ev.deleted, Entry(ev.key, ev.value, ev.revision, 0))

        # etcd unavailable: the last view is kept until a load succeeds
        await follow_prefix(self._store, prefix, event, on_load=load, what=f"host cache: following {prefix}")
