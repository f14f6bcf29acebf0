"""The CloudBackend contract for the in-memory backend (the gRPC backend runs the same suite
against a real control plane in tests/integration/test_occi.py)."""

from __future__ import annotations

import pytest

from services.gateway.occi.memory_backend import MemoryCloudBackend
from tests.contract.occi_backend_contract import CloudBackendContract


class TestMemoryCloudBackend(CloudBackendContract):
    @pytest.fixture
    def backend(self) -> MemoryCloudBackend:
        return MemoryCloudBackend()
