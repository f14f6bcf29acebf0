"""Wires a hypervisor agent: driver, image cache and control loop over etcd, plus its gRPC API.

With ``--driver fake --simulate N`` one process runs N simulated hosts (for tests and scale
simulation); with ``--driver libvirt`` it runs the real host.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from services.common import config, serve, telemetry
from services.common.etcd_store import EtcdStore
from services.common.group_commit import GroupCommit
from services.common.keys import Keys
from services.common.records import ImageRecord
from services.hypervisor.drivers.base import HypervisorDriver
from services.hypervisor.drivers.fake import FakeDriver
from services.hypervisor.exec_sessions import ExecSessions
from services.hypervisor.host_group import HostGroup
from services.hypervisor.image_cache import ImageCache
from services.hypervisor.image_updates import ImageUpdater
from services.hypervisor.imagestore_client import ImagestoreClient
from services.hypervisor.lifecycle import Agent, AgentConfig
from services.hypervisor.servicer import AgentServicer
from wnodes.hypervisor.v1 import agent_service_pb2_grpc

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class HypervisorAgentConfig:
    host: str
    """Hypervisor name (with --simulate: the prefix of the simulated hosts' names)."""
    driver: str
    """'libvirt' or 'fake'."""
    listen: str
    etcd: tuple[str, ...]
    key_root: str
    imagestore: str
    """The imagestore's internal endpoint, for image blobs."""
    state_dir: Path
    """Holds run/ (per-VM overlays and sockets), volumes/ (volume data) and cache/ (image blobs)."""
    libvirt_uri: str = "qemu:///system"
    simulate: int = 1
    fake_vcpus: int = 16
    fake_memory_mib: int = 65536
    lease_ttl: int = 0
    """Seconds after the agent's death at which its hosts' records disappear; 0: 5 s, or 30 s
    for more than 1,000 simulated hosts (losing their one lease marks every VM of every host
    UNKNOWN: on a starved machine a short TTL turns a slow etcd into that storm)."""
    resync_interval: float = 0.0
    """Seconds between full convergence passes over every host; 0: 5 s, plus 5 s per 1,000
    simulated hosts beyond the first 1,000 (the watch handles changes as they come)."""
    cpu_allocation_ratio: float = 1.0
    domain_prefix: str = ""
    """libvirt domain names of this agent's VMs start with this (default wnodes-<host>-); the
    agent treats every domain with the prefix as its own."""
    cache_max_bytes: int = 0
    """The image cache's size limit (0: none); unused versions are evicted least recently used."""
    cache_retention_seconds: float = 3600.0
    """How long a superseded, unused image version stays in the cache after its last use."""
    fake_image_cache: bool = False
    """With the fake driver, still pull images into the cache (distribution tests, benchmarks)."""
    qemu_as_root: bool = False
    """Run QEMU as root (a one-machine development stack whose state lives in private
    directories); a site keeps libvirt's unprivileged qemu user."""


def parse_args(argv: list[str] | None = None) -> HypervisorAgentConfig:
    p = argparse.ArgumentParser(prog="wnodes-hypervisor", description="WNoDeS hypervisor agent (one per physical host)")
    p.add_argument("--host", default=config.env("HYPERVISOR_HOST", socket.gethostname()))
    p.add_argument("--driver", choices=["libvirt", "fake"], default=config.env("HYPERVISOR_DRIVER", "libvirt"))
    p.add_argument("--listen", default=config.env("HYPERVISOR_LISTEN", "127.0.0.1:0"))
    p.add_argument("--etcd", default=config.env("ETCD", "127.0.0.1:2379"))
    p.add_argument("--key-root", default=config.env("KEY_ROOT", "/wnodes/v1"))
    p.add_argument("--imagestore", default=config.env("IMAGESTORE", ""))
    p.add_argument("--state-dir", type=Path, default=Path(config.env("HYPERVISOR_STATE_DIR", "/var/lib/wnodes/hypervisor")))
    p.add_argument("--libvirt-uri", default=config.env("LIBVIRT_URI", "qemu:///system"))
    p.add_argument("--simulate", type=int, default=1, help="with --driver fake: how many hosts to simulate")
    p.add_argument("--fake-vcpus", type=int, default=16)
    p.add_argument("--fake-memory-mib", type=int, default=65536)
    p.add_argument("--lease-ttl", type=int, default=0, help="seconds (default: 5; 30 for more than 1,000 simulated hosts)")
    p.add_argument("--resync-interval", type=float, default=0.0,
                   help="seconds between full convergence passes (default: 5, longer for thousands of simulated hosts)")
    p.add_argument("--cpu-allocation-ratio", type=float, default=1.0, help="vCPUs offered per physical CPU")
    p.add_argument("--domain-prefix", default=config.env("HYPERVISOR_DOMAIN_PREFIX", ""),
                   help="libvirt domain name prefix (default wnodes-<host>-); every domain with it is this agent's")
    p.add_argument("--cache-max-bytes", type=int, default=int(config.env("HYPERVISOR_CACHE_MAX_BYTES", "0")),
                   help="image cache size limit in bytes (0: none); unused versions are evicted least recently used")
    p.add_argument("--cache-retention-seconds", type=float, default=float(config.env("HYPERVISOR_CACHE_RETENTION_SECONDS", "3600")),
                   help="how long a superseded, unused image version stays cached")
    p.add_argument("--fake-image-cache", action="store_true", help="with --driver fake: still pull images into the cache")
    p.add_argument("--qemu-as-root", action="store_true", help="run QEMU as root (development stacks in private directories)")
    a = p.parse_args(argv)
    if a.simulate > 1 and a.driver != "fake":
        p.error("--simulate needs --driver fake")
    return HypervisorAgentConfig(
        host=a.host, driver=a.driver, listen=a.listen, etcd=tuple(config.split_endpoints(a.etcd)), key_root=a.key_root,
        imagestore=a.imagestore, state_dir=a.state_dir, libvirt_uri=a.libvirt_uri, simulate=a.simulate,
        fake_vcpus=a.fake_vcpus, fake_memory_mib=a.fake_memory_mib, lease_ttl=a.lease_ttl, resync_interval=a.resync_interval, qemu_as_root=a.qemu_as_root,
        cache_max_bytes=a.cache_max_bytes, cache_retention_seconds=a.cache_retention_seconds, fake_image_cache=a.fake_image_cache, domain_prefix=a.domain_prefix, cpu_allocation_ratio=a.cpu_allocation_ratio,
    )


def _driver(cfg: HypervisorAgentConfig, run_dir: Path) -> HypervisorDriver:
    if cfg.driver == "fake":
        return FakeDriver(vcpu_count=cfg.fake_vcpus, memory_mib=cfg.fake_memory_mib)
    from services.hypervisor.drivers.libvirt.driver import LibvirtDriver

    return LibvirtDriver(
        uri=cfg.libvirt_uri, run_dir=run_dir, domain_prefix=cfg.domain_prefix or f"wnodes-{cfg.host}-", dac_label="+0:+0" if cfg.qemu_as_root else None
    )


async def serve_agent(cfg: HypervisorAgentConfig, stop: asyncio.Event) -> None:
    telemetry.setup("wnodes-hypervisor")
    store = EtcdStore(cfg.etcd)
    await store.connect()
    keys = Keys(cfg.key_root)
    server, health, port = await serve.make_server(cfg.listen)
    endpoint = f"{cfg.listen.rsplit(':', 1)[0]}:{port}"
    imagestore = ImagestoreClient(cfg.imagestore) if cfg.imagestore else None
    # The fake driver boots nothing: no image cache (saves still upload, a placeholder disk),
    # unless asked for to measure distribution.
    wants_cache = cfg.driver != "fake" or cfg.fake_image_cache
    cache = ImageCache(cfg.state_dir / "cache", imagestore, cfg.cache_max_bytes) if imagestore and wants_cache else None
    names = [cfg.host] if cfg.simulate <= 1 else [f"{cfg.host}-{i:03d}" for i in range(cfg.simulate)]
    agents = []
    commits = GroupCommit(store)  # the hosts' reads and writes of VM records leave together
    for name in names:
        run_dir = cfg.state_dir / "run" / name
        run_dir.mkdir(parents=True, exist_ok=True)
        agent_cfg = AgentConfig(
            host=name, endpoint=endpoint, run_dir=run_dir, volume_dir=cfg.state_dir / "volumes" / name,
            cpu_allocation_ratio=cfg.cpu_allocation_ratio,
        )  # fmt: skip
        agents.append(Agent(agent_cfg, store, keys, _driver(cfg, run_dir), cache, imagestore, commits))
    resync = cfg.resync_interval or 5.0 * max(1.0, len(agents) / 1000)
    lease_ttl = cfg.lease_ttl or (30 if len(agents) > 1000 else 5)
    group = HostGroup(store, keys, agents, lease_ttl=lease_ttl, resync_interval=resync)
    sessions = ExecSessions()
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(agents, sessions), server)
    await server.start()
    await group.start()
    updater = None
    if cache is not None:

        async def advertise(record: ImageRecord) -> None:
            for agent in agents:
                await agent.note_cached(record.name)

        updater = ImageUpdater(store, keys, cache, cfg.host, retention_seconds=cfg.cache_retention_seconds, on_cached=advertise)
        await updater.start()
    await serve.set_serving(health)
    LOG.info("hypervisor agent serving %d host(s) on %s with the %s driver", len(agents), endpoint, cfg.driver)
    await stop.wait()
    LOG.info("hypervisor agent stopping (VMs keep running; a restarted agent adopts them)")
    await server.stop(grace=1)
    if updater is not None:
        await updater.stop()
    await sessions.close()
    await group.stop()
    for agent in agents:
        await agent.driver.close()
    await commits.close()
    if imagestore:
        await imagestore.close()
    await store.close()


def main(argv: list[str] | None = None) -> None:
    serve.setup_logging("hypervisor")
    cfg = parse_args(argv)
    serve.run(lambda stop: serve_agent(cfg, stop))
