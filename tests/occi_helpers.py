"""Shared by the OCCI tests: an OCCI app over the real path (OCCI -> gateway core -> the
in-process control plane of services/testing/control_plane.py), users, and request helpers.

Users alice (atlas) and bob (cms); images tiny and debian12 are public, atlas-sw is atlas's."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from services.gateway.occi.app import make_app
from services.gateway.occi.auth import OcciAuthenticator
from services.gateway.occi.core_backend import CoreCloudBackend
from services.gateway.occi.service import OcciService
from services.gateway.occi.site_users import SiteUsers, write_user_file
from services.gateway.occi.templates import DEFAULT_SIZES
from services.testing.control_plane import ControlPlane

USERS = [("alice", "atlas", "alice-secret", "/DC=org/DC=wnodes/CN=Alice"), ("bob", "cms", "bob-secret", "")]
INFRA = "http://schemas.ogf.org/occi/infrastructure#"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ALICE = basic("alice", "alice-secret")
BOB = basic("bob", "bob-secret")


def occi_app(tmp: Path, plane: ControlPlane) -> web.Application:
    """The OCCI app over ``plane``'s gateway core (``control_plane(tmp)`` uploads the three images)."""
    users_file = tmp / "users.toml"
    write_user_file(users_file, USERS, rounds=4)
    return make_app(OcciService(CoreCloudBackend(plane.core), DEFAULT_SIZES), OcciAuthenticator(SiteUsers.load(users_file)))


def category(term: str, scheme: str = INFRA, cls: str = "kind") -> str:
    return f'Category: {term}; scheme="{scheme}"; class="{cls}"'


def plain(*lines: str) -> str:
    return "".join(line + "\r\n" for line in lines)


SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBdmsT0NAKpT8ZxvOhjrcSJtAp0v7k0wM8BM0XEYxV3q alice@host"


async def until_active(occi: TestClient, path: str, headers: dict[str, str] = ALICE, timeout: float = 10.0) -> str:
    """The compute's text rendering once it runs: a real VM boots first (OCCI shows it
    "inactive", starting) and only then offers the actions of a running compute."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while 'occi.compute.state="active"' not in (text := await (await occi.get(path, headers=headers)).text()):
        assert 'occi.compute.state="error"' not in text and loop.time() < deadline, text
        await asyncio.sleep(0.01)
    return text
