from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.occi_helpers import memory_app


@pytest.fixture
async def occi(tmp_path: Path) -> AsyncIterator[TestClient]:
    """The OCCI app over the in-memory backend; users alice (atlas) and bob (cms)."""
    async with TestClient(TestServer(memory_app(tmp_path))) as client:
        yield client
