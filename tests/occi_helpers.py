"""Shared by the OCCI tests: an OCCI app over the in-memory backend, users, and request helpers."""

from __future__ import annotations

import base64
from pathlib import Path

from aiohttp import web

from services.gateway.occi.app import make_app
from services.gateway.occi.auth import OcciAuthenticator
from services.gateway.occi.memory_backend import MemoryCloudBackend
from services.gateway.occi.service import OcciService
from services.gateway.occi.site_users import SiteUsers, write_user_file
from services.gateway.occi.templates import DEFAULT_SIZES

USERS = [("alice", "atlas", "alice-secret", "/DC=org/DC=wnodes/CN=Alice"), ("bob", "cms", "bob-secret", "")]
INFRA = "http://schemas.ogf.org/occi/infrastructure#"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ALICE = basic("alice", "alice-secret")
BOB = basic("bob", "bob-secret")


def memory_app(tmp: Path, backend: MemoryCloudBackend | None = None) -> web.Application:
    users_file = tmp / "users.toml"
    write_user_file(users_file, USERS, rounds=4)
    backend = backend or MemoryCloudBackend(images={"tiny": {"*"}, "debian12": {"*"}, "atlas-sw": {"atlas"}})
    return make_app(OcciService(backend, DEFAULT_SIZES), OcciAuthenticator(SiteUsers.load(users_file)))


def category(term: str, scheme: str = INFRA, cls: str = "kind") -> str:
    return f'Category: {term}; scheme="{scheme}"; class="{cls}"'


def plain(*lines: str) -> str:
    return "".join(line + "\r\n" for line in lines)
