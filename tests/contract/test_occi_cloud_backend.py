"""The CloudBackend contract for its one implementation, OCCI's backend over the gateway core, on
the whole control plane in one process (tests/integration/test_occi.py runs the same suite over
real processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.gateway.occi.core_backend import CoreCloudBackend
from services.testing.control_plane import control_plane
from tests.contract.occi_backend_contract import CloudBackendContract


class TestCoreCloudBackendInProcess(CloudBackendContract):
    @pytest.fixture
    async def backend(self, tmp_path: Path) -> AsyncIterator[CoreCloudBackend]:
        async with control_plane(tmp_path) as plane:
            yield CoreCloudBackend(plane.core)
