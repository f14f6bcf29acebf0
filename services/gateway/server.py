"""Wires the gateway: channels to the internal services -> the public wnodes.v1 servicers."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from google.longrunning import operations_pb2_grpc

from services.common import config, serve, telemetry
from services.gateway.auth import TrustedHeaderAuthenticator
from services.gateway.backends import Backends
from services.gateway.occi.grpc_backend import GrpcCloudBackend
from services.gateway.occi.server import OcciConfig, start_occi
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
    occi: OcciConfig | None = field(default_factory=OcciConfig)
    """The OCCI 1.2 HTTP listener; None turns it off."""


def _path(value: str) -> Path | None:
    return Path(value) if value else None


def parse_args(argv: list[str] | None = None) -> GatewayConfig:
    p = argparse.ArgumentParser(prog="wnodes-gateway", description="WNoDeS gateway: the public wnodes.v1 gRPC API")
    p.add_argument("--listen", default=config.env("GATEWAY_LISTEN", "127.0.0.1:8443"))
    p.add_argument("--nameservers", default=config.env("NAMESERVERS", ""), help="comma-separated replica endpoints")
    p.add_argument("--imagestore", default=config.env("IMAGESTORE", ""))
    occi = p.add_argument_group("OCCI 1.2 (HTTP)")
    occi.add_argument("--occi-listen", default=config.env("OCCI_LISTEN", "127.0.0.1:0"),
                      help="host:port of the OCCI listener (port 0: a free one, logged); 'off' disables it")
    occi.add_argument("--occi-users", default=config.env("OCCI_USERS", ""), help="site user file (TOML: user -> VO, bcrypt hash, DN)")
    occi.add_argument("--occi-sizes", default=config.env("OCCI_SIZES", ""), help="resource_tpl sizes (TOML); default small/medium/large")
    occi.add_argument("--occi-tls-cert", default=config.env("OCCI_TLS_CERT", ""), help="server certificate (PEM): serve HTTPS")
    occi.add_argument("--occi-tls-key", default=config.env("OCCI_TLS_KEY", ""), help="its private key (PEM)")
    occi.add_argument("--occi-ca-dir", default=config.env("OCCI_CA_DIR", ""),
                      help="CAs of client certificates (X.509 and RFC 3820 proxy login), e.g. /etc/grid-security/certificates")
    occi.add_argument("--occi-default-image", default=config.env("OCCI_DEFAULT_IMAGE", "tiny"), help="image of a compute without os_tpl")
    a = p.parse_args(argv)
    if not a.nameservers or not a.imagestore:
        p.error("--nameservers and --imagestore are required")
    if a.occi_tls_key and not a.occi_tls_cert or a.occi_ca_dir and not a.occi_tls_cert:
        p.error("--occi-tls-key and --occi-ca-dir need --occi-tls-cert")
    occi_cfg = None if a.occi_listen == "off" else OcciConfig(
        a.occi_listen, _path(a.occi_users), _path(a.occi_sizes), _path(a.occi_tls_cert), _path(a.occi_tls_key) or _path(a.occi_tls_cert),
        _path(a.occi_ca_dir), a.occi_default_image,
    )
    return GatewayConfig(a.listen, tuple(config.split_endpoints(a.nameservers)), a.imagestore, occi_cfg)


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
    # OCCI is a second front end over the same backends: its handlers make the same calls.
    occi_runner = await start_occi(cfg.occi, GrpcCloudBackend(backends)) if cfg.occi is not None else None
    await serve.set_serving(health)
    LOG.info("gateway serving wnodes.v1 on %s:%d", cfg.listen.rsplit(":", 1)[0], port)
    await stop.wait()
    if occi_runner is not None:
        await occi_runner[0].cleanup()
    await server.stop(grace=2)
    await backends.close()


def main(argv: list[str] | None = None) -> None:
    serve.setup_logging("gateway")
    cfg = parse_args(argv)
    serve.run(lambda stop: serve_gateway(cfg, stop))
