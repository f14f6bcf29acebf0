"""A farm in one process for the nameserver's domain tests: the registry with a real HostCache
and Scheduler on the in-memory store, and per host a real ``Agent`` on the fake driver, on the
same store. No ports, no etcd: a test runs in milliseconds.

Agents are driven by hand (``Farm.converge``): one pass of each host does what the HostGroup's
full pass does (read the host's placements, let its agent converge) and waits until the agent is
done, so a test says exactly when the agents' side happens (a VM goes from SCHEDULED to ACTIVE,
a power action is applied, a volume is attached) and never sleeps to find out.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.common import records
from services.common.identity import Principal
from services.common.keys import Keys
from services.common.memory_store import MemoryStore
from services.common.records import ImageRecord, VmRecord
from services.hypervisor.drivers.fake import FakeDriver
from services.hypervisor.lifecycle import Agent, AgentConfig
from services.nameserver.host_cache import HostCache
from services.nameserver.operations import OperationView
from services.nameserver.registry import Registry, VmSpec
from services.nameserver.scheduling.scheduler import Scheduler, SchedulerConfig

ALICE = Principal("alice", "atlas")
ALICE_VO = Principal("carol", "atlas")  # same VO, another user
BOB = Principal("bob", "cms")
ADMIN = Principal("ops", "wnodes", frozenset({"admin"}))
IMAGE = "images/tiny"


@dataclass
class Farm:
    store: MemoryStore
    keys: Keys
    registry: Registry
    hosts: HostCache
    tmp: Path
    agents: dict[str, Agent] = field(default_factory=dict)

    async def add_host(self, name: str, vcpus: int = 4, memory_mib: int = 8192) -> Agent:
        """A hypervisor that registers its record as an agent does, seen by the host cache."""
        cfg = AgentConfig(host=name, endpoint=f"{name}.example:7100", run_dir=self.tmp / name, volume_dir=self.tmp / "volumes" / name)
        agent = Agent(cfg, self.store, self.keys, FakeDriver(vcpu_count=vcpus, memory_mib=memory_mib), None)
        self.agents[name] = agent
        record = await agent.prepare()
        await self.store.put(self.keys.hypervisor(name), records.dump(record))
        await eventually(lambda: _true(name in self.hosts.hypervisors))
        return agent

    async def host_down(self, name: str) -> None:
        """The host's lease expired: its record is gone (its VMs stay placed on it)."""
        await self.store.delete(self.keys.hypervisor(name))
        await eventually(lambda: _true(name not in self.hosts.hypervisors))

    async def converge(self) -> None:
        """One full pass of every agent, and the work it started, to the end."""
        for name, agent in self.agents.items():
            entries, _ = await self.store.get_prefix(self.keys.placements(name))
            await agent.converge({e.key.rsplit("/", 1)[-1]: e.value for e in entries})
            await _settle(agent)

    async def create(self, principal: Principal = ALICE, request_id: str = "", **spec: object) -> OperationView:
        wanted: dict[str, object] = {"image": IMAGE, "vcpu_count": 1, "memory_mib": 512, **spec}
        return await self.registry.create_vm(VmSpec(**wanted), principal, request_id, {})  # type: ignore[arg-type]

    async def running(self, principal: Principal = ALICE, **spec: object) -> VmRecord:
        """A VM created and booted by its agent (ACTIVE)."""
        view = await self.create(principal, **spec)
        await self.converge()
        return await self.registry.get_vm(view.op.vm_id, principal)

    async def vm(self, vm_id: str) -> VmRecord:
        return await self.registry.get_vm(vm_id, ADMIN)


async def _settle(agent: Agent) -> None:
    """Waits for every task the agent started (a boot, a power action, an attach...)."""
    while True:
        tasks = [t.task for t in agent._vms.all() if t.task is not None and not t.task.done()]
        tasks += [t for t in agent._background if not t.done()]
        if not tasks:
            return
        await asyncio.wait(tasks, timeout=5)


async def _true(value: bool) -> bool:
    return value


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.001)


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Farm]:
    store, keys = MemoryStore(), Keys(f"/test-{uuid.uuid4().hex[:8]}")
    await store.put(keys.image_version("tiny", 1), records.dump(ImageRecord("tiny", 1, "wnodes")))
    hosts = HostCache(store, keys)
    await hosts.start()
    await eventually(lambda: _true(len(hosts._loaded) == 2))  # wait_ready polls every 50 ms: too slow here
    registry = Registry(store, keys, Scheduler(SchedulerConfig()), hosts)
    farm = Farm(store, keys, registry, hosts, tmp_path)
    try:
        yield farm
    finally:
        for agent in farm.agents.values():
            await agent.stop()
        await hosts.stop()
