"""The whole control plane in one process, with no ports: for tests that run the farm's real
logic in milliseconds.

One ``MemoryStore`` holds what etcd would; on it run the nameserver (HostCache, Scheduler,
Registry, RegistryServicer, and the Reconciler, stepped on demand), the imagestore (Catalog,
BlobStore in a temporary directory, ImagestoreServicer) and one hypervisor agent with ``hosts``
simulated hosts (Agent + HostGroup on the FakeDriver, AgentServicer). Services reach each other
through ``LocalChannel`` (services/common/local_channel.py): the same generated stubs as over the
network, messages copied as bytes, errors as real ``AioRpcError``s with their google.rpc.Status.
The gateway core (services/gateway/core.py) runs on top unchanged, so every way in (the gRPC
adapter, OCCI) can be tested over the real path: front end -> core -> nameserver -> agents.

It lives in ``services/`` rather than ``tests/`` because it wires the services' own classes: a
changed constructor breaks it under mypy at once, and benches may use it too. Nothing in a
deployment imports it.

    async with control_plane(tmp_path) as plane:
        op = await plane.core.call(ALICE, "CreateVirtualMachine", request)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc

from services.common.errors import Unavailable
from services.common.group_commit import GroupCommit
from services.common.identity import Principal
from services.common.keys import Keys
from services.common.local_channel import LocalChannel, LocalServer
from services.common.memory_store import MemoryStore
from services.gateway.core import GatewayCore
from services.hypervisor.drivers.fake import FakeDriver
from services.hypervisor.exec_sessions import ExecSessions
from services.hypervisor.host_group import HostGroup
from services.hypervisor.imagestore_client import ImagestoreClient
from services.hypervisor.lifecycle import Agent, AgentConfig
from services.hypervisor.servicer import AgentServicer
from services.imagestore.blobs import BlobStore
from services.imagestore.catalog import Catalog
from services.imagestore.customization_service import CustomizeService, ProcessCustomizer
from services.imagestore.servicer import ImagestoreServicer
from services.nameserver import addressing
from services.nameserver.duties import Reconciler
from services.nameserver.host_cache import HostCache
from services.nameserver.registry import Registry
from services.nameserver.scheduling.scheduler import Scheduler, SchedulerConfig
from services.nameserver.servicer import RegistryServicer
from wnodes.hypervisor.v1 import agent_service_pb2_grpc
from wnodes.imagestore.v1 import imagestore_service_pb2_grpc
from wnodes.nameserver.v1 import registry_service_pb2_grpc
from wnodes.v1 import hypervisor_service_pb2, image_pb2, image_service_pb2

ADMIN = Principal("wnodes-admin", "wnodes", frozenset({"admin"}))
AGENT_ENDPOINT = "agent.local:1"
"""The agent's endpoint as the registry records it (nothing listens there)."""


@dataclass(frozen=True)
class ImageSpec:
    name: str
    vo: str = ""
    """"" : public; else only this VO sees it."""
    description: str = ""


DEFAULT_IMAGES = (ImageSpec("tiny"), ImageSpec("debian12"), ImageSpec("atlas-sw", vo="atlas"))


def _channel(server: LocalServer) -> grpc.aio.Channel:
    # A LocalChannel offers what generated stubs call on a channel; the stubs' types want a real one.
    return cast(grpc.aio.Channel, LocalChannel(server))


def _registrar(server: LocalServer) -> grpc.aio.Server:
    # The same for the generated add_*Servicer_to_server functions and a LocalServer.
    return cast(grpc.aio.Server, server)


class _LocalImagestoreClient(ImagestoreClient):
    """The agent's imagestore client (blob downloads, saved disks) over the local channel."""

    def __init__(self, server: LocalServer) -> None:  # no super().__init__(): it would open a socket
        self._channel = _channel(server)
        self._stub = imagestore_service_pb2_grpc.ImagestoreServiceStub(self._channel)


@dataclass
class LocalServices:
    """``InternalServices`` (services/gateway/internal_channels.py) over local channels."""

    nameserver: LocalServer
    imagestore_server: LocalServer
    agents: dict[str, LocalServer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._registry = registry_service_pb2_grpc.RegistryServiceStub(_channel(self.nameserver))
        self._imagestore = imagestore_service_pb2_grpc.ImagestoreServiceStub(_channel(self.imagestore_server))

    @property
    def registry(self) -> registry_service_pb2_grpc.RegistryServiceAsyncStub:
        return self._registry

    @property
    def imagestore(self) -> imagestore_service_pb2_grpc.ImagestoreServiceAsyncStub:
        return self._imagestore

    def agent(self, endpoint: str) -> agent_service_pb2_grpc.AgentServiceAsyncStub:
        server = self.agents.get(endpoint)
        if server is None:
            raise Unavailable(f"no agent serves {endpoint}")
        return agent_service_pb2_grpc.AgentServiceStub(_channel(server))

    async def close(self) -> None:
        return None


@dataclass
class ControlPlane:
    store: MemoryStore
    keys: Keys
    registry: Registry
    reconciler: Reconciler
    catalog: Catalog
    agents: Sequence[Agent]
    drivers: Sequence[FakeDriver]
    services: LocalServices
    core: GatewayCore

    async def reconcile(self) -> None:
        """One step of the reconciler duty (a real replica runs one every 2 s as leader)."""
        await self.reconciler.step()

    async def upload_image(self, spec: ImageSpec, disk: bytes = b"placeholder disk\n") -> image_pb2.ImageVersion:
        """Registers an available version of ``spec.name`` (public, or ``spec.vo``'s only) through the core."""
        owner = ADMIN if not spec.vo else Principal(f"{spec.vo}-librarian", spec.vo)
        visibility = image_pb2.ImageVersion.Visibility.PUBLIC if not spec.vo else image_pb2.ImageVersion.Visibility.VO
        header = image_pb2.ImageVersion(
            image=spec.name, visibility=visibility, format="qcow2", architecture="x86_64",
            description=spec.description or f"image {spec.name}", state=image_pb2.ImageVersion.AVAILABLE,
            disk=image_pb2.Blob(sha256=hashlib.sha256(disk).hexdigest(), size_bytes=len(disk)),
        )  # fmt: skip

        async def messages() -> AsyncIterator[image_service_pb2.UploadImageVersionRequest]:
            yield image_service_pb2.UploadImageVersionRequest(header=header)
            yield image_service_pb2.UploadImageVersionRequest(chunk=image_service_pb2.UploadImageVersionRequest.Chunk(part="disk", data=disk))

        return await self.core.upload_image_version(owner, messages())


async def _hosts_up(core: GatewayCore, count: int, timeout: float = 10.0) -> None:
    """Waits until the nameserver sees every simulated host (their records come through the watch)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        listed = await core.call(ADMIN, "ListHypervisors", hypervisor_service_pb2.ListHypervisorsRequest(page_size=1000))
        assert isinstance(listed, hypervisor_service_pb2.ListHypervisorsResponse)
        if sum(1 for h in listed.hypervisors if h.state == h.State.UP) >= count:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"only {len(listed.hypervisors)} of {count} hypervisors registered")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def control_plane(
    tmp: Path, hosts: int = 2, vcpu_count: int = 16, memory_mib: int = 65536, images: Sequence[ImageSpec] = DEFAULT_IMAGES,
    start_delay: float = 0.0,
) -> AsyncIterator[ControlPlane]:
    """A running control plane with ``hosts`` simulated hosts (hv-000 ...) and ``images`` uploaded."""
    store = MemoryStore()
    await store.connect()
    keys = Keys("/wnodes/v1")
    # imagestore
    catalog, blobs = Catalog(store, keys), BlobStore(tmp / "blobs")
    imagestore_server = LocalServer("imagestore")
    customize = CustomizeService(catalog, blobs, ProcessCustomizer())
    imagestore_service_pb2_grpc.add_ImagestoreServiceServicer_to_server(ImagestoreServicer(catalog, blobs, customize), _registrar(imagestore_server))
    # one agent process with `hosts` simulated hosts
    commits = GroupCommit(store)
    imagestore_client = _LocalImagestoreClient(imagestore_server)
    drivers, agents = [], []
    for i in range(hosts):
        name = f"hv-{i:03d}"
        run_dir = tmp / "run" / name
        run_dir.mkdir(parents=True, exist_ok=True)
        driver = FakeDriver(vcpu_count=vcpu_count, memory_mib=memory_mib, start_delay=start_delay)
        cfg = AgentConfig(host=name, endpoint=AGENT_ENDPOINT, run_dir=run_dir, volume_dir=tmp / "volumes" / name)
        drivers.append(driver)
        agents.append(Agent(cfg, store, keys, driver, None, imagestore_client, commits))
    group = HostGroup(store, keys, agents)
    sessions = ExecSessions()
    agent_server = LocalServer("agent")
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(agents, sessions), _registrar(agent_server))
    # nameserver: its host cache loads while the agents register and the images go in
    host_cache = HostCache(store, keys)
    await host_cache.start()
    await group.start()
    pool = addressing.SubnetPool.parse(addressing.DEFAULT_POOL, addressing.DEFAULT_POOL_PREFIX)
    registry = Registry(store, keys, Scheduler(SchedulerConfig()), host_cache, pool)
    nameserver = LocalServer("nameserver")
    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(registry), _registrar(nameserver))
    reconciler = Reconciler(store, keys, lambda vm_id: registry.delete_vm(vm_id, ADMIN, ""), host_cache,
                            remove_orphan_interfaces=registry.networks.remove_orphans)
    services = LocalServices(nameserver, imagestore_server, {AGENT_ENDPOINT: agent_server})
    core = GatewayCore(services)
    plane = ControlPlane(store, keys, registry, reconciler, catalog, agents, drivers, services, core)
    try:
        for image in images:
            await plane.upload_image(image)
        await host_cache.wait_ready()  # loaded by now, as a rule: it polls every 50 ms otherwise
        await _hosts_up(core, hosts)
        yield plane
    finally:
        await sessions.close()
        await group.stop()
        for agent in agents:
            await agent.driver.close()
        await host_cache.stop()
        await commits.close()
        await store.close()
