"""Wires the gateway: channels to the internal services -> the public wnodes.v1 servicers."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass

from google.longrunning import operations_pb2_grpc

from services.common import config, serve, telemetry
from services.gateway.auth import TrustedHeaderAuthenticator
from services.gateway.backends import Backends
from services.gateway.servicer import (
    HypervisorServicer,
    ImageServicer,
    NetworkServicer,
    OperationsServicer,
    VirtualMachineServicer,
    VolumeServicer,
)
from wnodes.v1 import (
    hypervisor_service_pb2_grpc,
    image_service_pb2_grpc,
    network_service_pb2_grpc,
    virtual_machine_service_pb2_grpc,
    volume_service_pb2_grpc,
)

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayConfig:
    listen: str
    nameservers: tuple[str, ...]
    """Every nameserver replica's endpoint (calls are balanced and fail over)."""
    imagestore: str


def parse_args(argv: list[str] | None = None) -> GatewayConfig:
    p = argparse.ArgumentParser(prog="wnodes-gateway", description="WNoDeS gateway: the public wnodes.v1 gRPC API")
    p.add_argument("--listen", default=config.env("GATEWAY_LISTEN", "127.0.0.1:8443"))
    p.add_argument("--nameservers", default=config.env("NAMESERVERS", ""), help="comma-separated replica endpoints")
    p.add_argument("--imagestore", default=config.env("IMAGESTORE", ""))
    a = p.parse_args(argv)
    if not a.nameservers or not a.imagestore:
        p.error("--nameservers and --imagestore are required")
    return GatewayConfig(a.listen, tuple(config.split_endpoints(a.nameservers)), a.imagestore)


async def serve_gateway(cfg: GatewayConfig, stop: asyncio.Event) -> None:
    telemetry.setup("wnodes-gateway")
    backends = Backends(list(cfg.nameservers), cfg.imagestore)
    auth = TrustedHeaderAuthenticator()
    server, health, port = await serve.make_server(cfg.listen)
    virtual_machine_service_pb2_grpc.add_VirtualMachineServiceServicer_to_server(VirtualMachineServicer(backends, auth), server)
    image_service_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(backends, auth), server)
    volume_service_pb2_grpc.add_VolumeServiceServicer_to_server(VolumeServicer(backends, auth), server)
    network_service_pb2_grpc.add_NetworkServiceServicer_to_server(NetworkServicer(backends, auth), server)
    hypervisor_service_pb2_grpc.add_HypervisorServiceServicer_to_server(HypervisorServicer(backends, auth), server)
    operations_pb2_grpc.add_OperationsServicer_to_server(OperationsServicer(backends, auth), server)
    await server.start()
    await serve.set_serving(health)
    LOG.info("gateway serving wnodes.v1 on %s:%d", cfg.listen.rsplit(":", 1)[0], port)
    await stop.wait()
    await server.stop(grace=2)
    await backends.close()


def main(argv: list[str] | None = None) -> None:
    serve.setup_logging("gateway")
    cfg = parse_args(argv)
    serve.run(lambda stop: serve_gateway(cfg, stop))
