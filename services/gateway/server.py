"""Wires the gateway: channels to the internal services -> the core -> its ways in (the public
wnodes.v1 gRPC services, OCCI)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from services.common import config, serve, telemetry
from services.gateway.auth import TrustedHeaderAuthenticator
from services.gateway.core import GatewayCore
from services.gateway.internal_channels import InternalChannels
from services.gateway.occi.core_backend import CoreCloudBackend
from services.gateway.occi.server import OcciConfig, start_occi
from services.gateway.servicer import add_public_services

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
    internal = InternalChannels(list(cfg.nameservers), cfg.imagestore)
    core = GatewayCore(internal)
    server, health, port = await serve.make_server(cfg.listen)
    add_public_services(server, core, TrustedHeaderAuthenticator())
    await server.start()
    # OCCI is a second way in over the same core.
    occi_runner = await start_occi(cfg.occi, CoreCloudBackend(core)) if cfg.occi is not None else None
    await serve.set_serving(health)
    LOG.info("gateway serving wnodes.v1 on %s:%d", cfg.listen.rsplit(":", 1)[0], port)
    await stop.wait()
    if occi_runner is not None:
        await occi_runner[0].cleanup()
    await server.stop(grace=2)
    await internal.close()


def main(argv: list[str] | None = None) -> None:
    serve.setup_logging("gateway")
    cfg = parse_args(argv)
    serve.run(lambda stop: serve_gateway(cfg, stop))
