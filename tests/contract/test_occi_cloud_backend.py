"""The CloudBackend contract for its one implementation, OCCI's backend over the gateway core, on
the whole control plane in one process (tests/integration/test_occi.py runs the same suite over
real processes). Plus what only the in-process plane lets a test see: where computes run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.errors import FailedPrecondition
from services.gateway.occi.cloud_backend import ComputeSpec, StorageSpec
from services.gateway.occi.core_backend import CoreCloudBackend
from services.testing.control_plane import ControlPlane, control_plane
from tests.contract.occi_backend_contract import ALICE, CloudBackendContract, until_active
from wnodes.v1 import virtual_machine_pb2, virtual_machine_service_pb2


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    async with control_plane(tmp_path, hosts=3) as plane:
        yield plane


class TestCoreCloudBackendInProcess(CloudBackendContract):
    @pytest.fixture
    def backend(self, plane: ControlPlane) -> CoreCloudBackend:
        return CoreCloudBackend(plane.core)

    async def test_storage_linked_at_create_pins_the_compute_to_its_data(self, plane: ControlPlane, backend: CoreCloudBackend) -> None:
        """OCCI only names the storage (VirtualMachine.volumes); the nameserver pins the VM to
        the host holding its data and refuses storage that is attached elsewhere."""
        async def host_of(compute_id: str) -> str:
            request = virtual_machine_service_pb2.GetVirtualMachineRequest(name=f"virtualMachines/{compute_id}")
            return (await plane.core.call_as(ALICE, "GetVirtualMachine", request, virtual_machine_pb2.VirtualMachine)).hypervisor

        storage = await backend.create_storage(ALICE, StorageSpec(0.25))
        first = await backend.create_compute(ALICE, ComputeSpec(self.image, 1, 256, storage_ids=[storage.id]))
        await until_active(backend, first.id)
        await backend.attach_storage(ALICE, first.id, storage.id)  # its data is made on first's host
        home = await host_of(first.id)
        with pytest.raises(FailedPrecondition) as refused:
            await backend.create_compute(ALICE, ComputeSpec(self.image, 1, 256, storage_ids=[storage.id]))
        assert refused.value.reason == "VOLUME_ATTACHED"
        await backend.delete_compute(ALICE, first.id)
        for _ in range(4):  # with three hosts, placement alone would miss home by chance
            again = await backend.create_compute(ALICE, ComputeSpec(self.image, 1, 256, storage_ids=[storage.id]))
            assert await host_of(again.id) == home
            await backend.delete_compute(ALICE, again.id)
