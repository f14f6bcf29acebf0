"""Wires a nameserver replica: etcd store -> host cache, scheduler, registry -> servicer."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from dataclasses import dataclass, field

from services.common import config, serve, telemetry
from services.common.etcd_store import EtcdStore
from services.common.identity import Principal
from services.common.keys import Keys
from services.common.records import NameserverRecord
from services.nameserver import addressing
from services.nameserver.duties import Duty, Membership, Reconciler
from services.nameserver.host_cache import HostCache
from services.nameserver.registry import Registry
from services.nameserver.scheduling.scheduler import Scheduler, SchedulerConfig
from services.nameserver.servicer import RegistryServicer
from wnodes.nameserver.v1 import registry_service_pb2_grpc

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class NameserverConfig:
    listen: str = "127.0.0.1:0"
    """host:port to serve the internal registry API on."""
    etcd: tuple[str, ...] = ("127.0.0.1:2379",)
    """etcd endpoints (every member: the client fails over between them)."""
    key_root: str = "/wnodes/v1"
    """Root of the etcd key space (one per stack)."""
    replica_id: str = field(default_factory=socket.gethostname)
    """This replica's name in nameservers/ and in elections."""
    reconcile_interval: float = 2.0
    """Seconds between runs of the reconciler duty."""
    network_pool: str = addressing.DEFAULT_POOL
    """Private IPv4 range from which networks created without a cidr get theirs."""
    network_prefix: int = addressing.DEFAULT_POOL_PREFIX
    """Prefix length of each subnet chosen from network_pool."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


def parse_args(argv: list[str] | None = None) -> NameserverConfig:
    p = argparse.ArgumentParser(prog="wnodes-nameserver", description="WNoDeS nameserver replica (stateless; state in etcd)")
    p.add_argument("--listen", default=config.env("NAMESERVER_LISTEN", "127.0.0.1:0"))
    p.add_argument("--etcd", default=config.env("ETCD", "127.0.0.1:2379"), help="comma-separated etcd endpoints")
    p.add_argument("--key-root", default=config.env("KEY_ROOT", "/wnodes/v1"))
    p.add_argument("--id", default=config.env("NAMESERVER_ID", socket.gethostname()))
    p.add_argument("--pack", action="store_true", help="fill hosts before using the next (default: spread)")
    p.add_argument("--network-pool", default=config.env("NETWORK_POOL", addressing.DEFAULT_POOL),
                   help="private IPv4 range for networks created without a cidr")
    p.add_argument("--network-prefix", type=int, default=int(config.env("NETWORK_PREFIX", str(addressing.DEFAULT_POOL_PREFIX))),
                   help="prefix length of each subnet taken from --network-pool")
    a = p.parse_args(argv)
    sign = -1.0 if a.pack else 1.0
    sched = SchedulerConfig(weighers={"free_cores": sign, "free_memory": sign, "image_cached": 0.5})
    return NameserverConfig(
        listen=a.listen, etcd=tuple(config.split_endpoints(a.etcd)), key_root=a.key_root, replica_id=a.id, scheduler=sched,
        network_pool=a.network_pool, network_prefix=a.network_prefix,
    )


async def serve_nameserver(cfg: NameserverConfig, stop: asyncio.Event, on_ready: object = None) -> None:
    telemetry.setup("wnodes-nameserver")
    pool = addressing.SubnetPool.parse(cfg.network_pool, cfg.network_prefix)  # a bad pool stops the replica here
    keys = Keys(cfg.key_root)
    store = EtcdStore(cfg.etcd)
    await store.connect()
    hosts = HostCache(store, keys)
    await hosts.start()
    await hosts.wait_ready()
    registry = Registry(store, keys, Scheduler(cfg.scheduler), hosts, pool)
    server, health, port = await serve.make_server(cfg.listen)
    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(registry), server)
    await server.start()
    endpoint = f"{cfg.listen.rsplit(':', 1)[0]}:{port}"
    membership = Membership(store, keys, NameserverRecord(id=cfg.replica_id, endpoint=endpoint))
    await membership.start()
    system = Principal(user="wnodes-reconciler", vo="wnodes", roles=frozenset({"admin"}))
    reconcile = Reconciler(
        store, keys, lambda vm_id: registry.delete_vm(vm_id, system, ""), hosts, cfg.reconcile_interval,
        remove_orphan_interfaces=registry.networks.remove_orphans,
    )
    reconciler = Duty("reconciler", store, keys, membership, cfg.replica_id, reconcile.step, cfg.reconcile_interval)
    reconciler.start()
    await serve.set_serving(health)
    LOG.info("nameserver %s serving on %s (etcd %s)", cfg.replica_id, endpoint, ",".join(cfg.etcd))
    if callable(on_ready):
        on_ready(endpoint)
    await stop.wait()
    LOG.info("nameserver %s stopping", cfg.replica_id)
    await reconciler.stop()
    await server.stop(grace=2)
    await membership.stop()
    await hosts.stop()
    await store.close()


def main(argv: list[str] | None = None) -> None:
    serve.setup_logging("nameserver")
    cfg = parse_args(argv)
    serve.run(lambda stop: serve_nameserver(cfg, stop))
