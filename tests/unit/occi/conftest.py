from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.testing.control_plane import ControlPlane, control_plane
from tests.occi_helpers import occi_app


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    """The whole control plane in process: nameserver, imagestore, two simulated hosts."""
    async with control_plane(tmp_path / "plane") as plane:
        yield plane


@pytest.fixture
async def occi(tmp_path: Path, plane: ControlPlane) -> AsyncIterator[TestClient]:
    """The OCCI app over the gateway core and ``plane``; users alice (atlas) and bob (cms)."""
    async with TestClient(TestServer(occi_app(tmp_path, plane))) as client:
        yield client
