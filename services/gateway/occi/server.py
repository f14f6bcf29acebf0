"""Starts the OCCI HTTP(S) listener inside the gateway process."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from services.gateway.occi.app import make_app
from services.gateway.occi.auth import OcciAuthenticator
from services.gateway.occi.cloud_backend import CloudBackend
from services.gateway.occi.service import OcciService
from services.gateway.occi.site_users import SiteUsers
from services.gateway.occi.templates import load_sizes

LOG = logging.getLogger(__name__)
MAX_HEADER = 64 * 1024
"""text/occi carries whole renderings in headers (user data among them)."""


@dataclass(frozen=True)
class OcciConfig:
    listen: str = "127.0.0.1:0"
    """host:port of the OCCI listener; port 0 picks a free one (logged)."""
    users_file: Path | None = None
    """The site user file (site_users.py); without it nobody can authenticate."""
    sizes_file: Path | None = None
    """resource_tpl sizes (templates.py); without it small, medium and large."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca_dir: Path | None = None
    """CA certificates that sign client certificates (a grid-security/certificates folder)."""
    default_image: str = "tiny"


def tls_context(cfg: OcciConfig) -> ssl.SSLContext | None:
    if cfg.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    if cfg.tls_ca_dir is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL  # a certificate, or basic auth over TLS
        ctx.verify_flags |= ssl.VERIFY_ALLOW_PROXY_CERTS  # RFC 3820 proxies (grid users)
        for ca in sorted(cfg.tls_ca_dir.iterdir()):
            if ca.suffix in (".pem", ".crt") or ca.suffix[1:].isdigit():
                ctx.load_verify_locations(cafile=str(ca))
    return ctx


async def start_occi(cfg: OcciConfig, backend: CloudBackend) -> tuple[web.AppRunner, str]:
    """Starts listening; returns the runner (call ``cleanup()`` to stop) and the base URL."""
    users = SiteUsers.load(cfg.users_file) if cfg.users_file else SiteUsers({}, {})
    if cfg.users_file is None:
        LOG.warning("OCCI: no --occi-users file: every request will be refused")
    service = OcciService(backend, load_sizes(cfg.sizes_file), cfg.default_image)
    app = make_app(service, OcciAuthenticator(users))
    runner = web.AppRunner(app, access_log=None, handler_args={"max_field_size": MAX_HEADER, "max_line_size": MAX_HEADER})
    await runner.setup()
    host, _, port = cfg.listen.rpartition(":")
    ctx = tls_context(cfg)
    site = web.TCPSite(runner, host or "127.0.0.1", int(port), ssl_context=ctx)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else int(port)
    url = f"{'https' if ctx else 'http'}://{host or '127.0.0.1'}:{bound}"
    LOG.info("OCCI 1.2 serving on %s (%d users, %s)", url, len(users.by_name), "TLS" if ctx else "plain HTTP")
    return runner, url
