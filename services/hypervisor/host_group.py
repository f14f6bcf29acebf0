"""The hosts one agent process serves, sharing one lease, one watch and one convergence loop.

A real hypervisor runs one agent process for its one host. The fake driver's ``--simulate N``
runs N hosts in one process; each used to have its own etcd lease (a keepalive every ~2 s), its
own watch and its own periodic pass reading its placements: at 10,000 hosts, thousands of
keepalives and range reads a second and 10,000 watch streams, for nothing a real site needs.
Here the hosts of a process share:

- one lease: their records live and die with the process (``LeaseGroup``);
- one watch over the common prefix of their placement keys, each event handed to its host;
- one periodic pass, which reads the placements of all the hosts in a few paged range reads
  and lets each host converge; a host that asks for a pass between two (a VM failed, a lease
  was granted again) gets one of its own, read with one range of its placements.

Everything a host does with what it read stays in ``Agent`` (lifecycle.py), unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence

from services.common import records
from services.common.keys import Keys
from services.common.prefix_watch import follow_prefix
from services.common.registration import LeaseGroup
from services.common.store import Event, Store
from services.hypervisor.lifecycle import Agent

LOG = logging.getLogger(__name__)

PAGE = 5000
YIELD_EVERY = 20


class HostGroup:
    def __init__(self, store: Store, keys: Keys, agents: Sequence[Agent], lease_ttl: int = 5, resync_interval: float = 5.0) -> None:
        """``resync_interval``: seconds between full passes over every host (the watch handles
        changes as they come; the pass is the level-triggered safety net)."""
        self._store = store
        self._keys = keys
        self.agents = {a.cfg.host: a for a in agents}
        self._lease = LeaseGroup(store, lease_ttl, self._lease_lost)
        self._resync = resync_interval
        self._root = keys.placements("").removesuffix("/")  # <root>/placements/
        names = list(self.agents)
        # One host: its own prefix (with the slash: hv1 must not see hv10's keys). Several: the
        # prefix their names share; keys of hosts that are not ours are ignored.
        self._prefix = keys.placements(names[0]) if len(names) == 1 else self._root + os.path.commonprefix(names)
        self._full = asyncio.Event()
        self._dirty: set[str] = set()
        self._some_dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for agent in self.agents.values():
            record = await agent.prepare()
            self._lease.add(self._keys.hypervisor(agent.cfg.host), lambda r=record: records.dump(r))  # type: ignore[misc]
            agent.request_pass = lambda host=agent.cfg.host: self.request_pass(host)  # type: ignore[misc]
            agent.publish = lambda host=agent.cfg.host: self._lease.publish(self._keys.hypervisor(host))  # type: ignore[misc]
        await self._lease.start()
        LOG.info("registered %d host(s) under lease %x", len(self.agents), self._lease.lease)
        self._tasks = [
            asyncio.create_task(self._watch()),
            asyncio.create_task(self._full_passes()),
            asyncio.create_task(self._host_passes()),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for agent in self.agents.values():
            await agent.stop()
        await self._lease.stop()

    def request_pass(self, host: str) -> None:
        self._dirty.add(host)
        self._some_dirty.set()

    def _lease_lost(self) -> None:
        for agent in self.agents.values():
            agent.lease_lost()  # marks every VM for a recheck; the full pass below runs it
        self._full.set()

    def _host_of(self, key: str) -> tuple[str, str]:
        host, _, vm_id = key.removeprefix(self._root).partition("/")
        return host, vm_id

    async def _watch(self) -> None:
        await follow_prefix(
            self._store, self._prefix, self._on_placement,
            on_load=lambda _: self._full.set(),  # anything missed before the watch started: a full pass reads it
            values=False, what=f"placement watch of {len(self.agents)} host(s)",
        )  # fmt: skip

    def _on_placement(self, ev: Event) -> None:
        if ev.deleted:
            return
        host, vm_id = self._host_of(ev.key)
        agent = self.agents.get(host)
        if agent is not None and vm_id:
            agent.on_placement(vm_id, ev.value)

    async def _full_passes(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._resync):
                    await self._full.wait()
            self._full.clear()
            try:
                await self._converge_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                LOG.warning("convergence pass over %d host(s) failed (%s); retrying", len(self.agents), exc)
                await asyncio.sleep(0.5)
                self._full.set()

    async def _converge_all(self) -> None:
        wanted: dict[str, dict[str, bytes]] = {host: {} for host in self.agents}
        after = ""
        while True:
            entries, _ = await self._store.get_prefix(self._prefix, start_after=after, limit=PAGE)
            for e in entries:
                host, vm_id = self._host_of(e.key)
                if host in wanted and vm_id:
                    wanted[host][vm_id] = e.value
            if len(entries) < PAGE:
                break
            after = entries[-1].key
        self._dirty.difference_update(wanted)  # this pass serves them too
        for i, (host, placed) in enumerate(wanted.items()):
            await self._converge(host, placed)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                # A host's pass awaits nothing that blocks (the fake driver answers at once):
                # without this, 10,000 of them would hold the event loop for seconds and starve
                # the lease keepalive (the lease of every host then expires at once).
                await asyncio.sleep(0)

    async def _host_passes(self) -> None:
        while True:
            await self._some_dirty.wait()
            self._some_dirty.clear()
            while self._dirty:
                await asyncio.sleep(0)  # as in _converge_all: never hold the loop for long
                host = self._dirty.pop()
                try:
                    entries, _ = await self._store.get_prefix(self._keys.placements(host))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    LOG.warning("hypervisor %s: reading its placements failed (%s); the next full pass retries", host, exc)
                    continue
                await self._converge(host, {e.key.rsplit("/", 1)[-1]: e.value for e in entries})

    async def _converge(self, host: str, placed: dict[str, bytes]) -> None:
        agent = self.agents.get(host)
        if agent is None:
            return
        try:
            await agent.converge(placed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            LOG.warning("hypervisor %s: convergence failed (%s); retrying", host, exc)
