"""The in-process control plane itself: it starts in milliseconds with every host up and the
three images, each VO sees what it may, and the reconciler duty runs on demand."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2

from services.common.errors import NotFound
from services.common.identity import Principal
from services.gateway.core import GatewayCore
from services.testing.control_plane import control_plane
from wnodes.v1 import hypervisor_service_pb2, image_service_pb2, virtual_machine_pb2, virtual_machine_service_pb2

ALICE = Principal("alice", "atlas")
BOB = Principal("bob", "cms")
vms = virtual_machine_service_pb2


async def _images(core: GatewayCore, principal: Principal) -> set[str]:
    listed = await core.call_as(principal, "ListImageVersions", image_service_pb2.ListImageVersionsRequest(),
                                image_service_pb2.ListImageVersionsResponse)
    return {v.image for v in listed.image_versions}


async def test_it_starts_fast_with_its_hosts_and_images(tmp_path: Path) -> None:
    started = time.monotonic()
    async with control_plane(tmp_path, hosts=3) as plane:
        assert time.monotonic() - started < 1.0
        listed = await plane.core.call_as(ALICE, "ListHypervisors", hypervisor_service_pb2.ListHypervisorsRequest(),
                                          hypervisor_service_pb2.ListHypervisorsResponse)
        assert sorted(h.name for h in listed.hypervisors) == ["hypervisors/hv-000", "hypervisors/hv-001", "hypervisors/hv-002"]
        assert await _images(plane.core, ALICE) == {"images/tiny", "images/debian12", "images/atlas-sw"}
        assert await _images(plane.core, BOB) == {"images/tiny", "images/debian12"}


async def test_the_reconciler_deletes_an_expired_vm(tmp_path: Path) -> None:
    async with control_plane(tmp_path) as plane:
        vm = virtual_machine_pb2.VirtualMachine(image="images/tiny", vcpu_count=1, memory_mib=256, labels={"expire_time": "1"})
        op = await plane.core.call_as(ALICE, "CreateVirtualMachine", vms.CreateVirtualMachineRequest(virtual_machine=vm),
                                      operations_pb2.Operation)
        wait = operations_pb2.WaitOperationRequest(name=op.name, timeout=duration_pb2.Duration(seconds=5))
        op = await plane.core.call_as(ALICE, "WaitOperation", wait, operations_pb2.Operation)
        created = virtual_machine_pb2.VirtualMachine()
        assert op.done and op.response.Unpack(created)
        await plane.reconcile()
        get = vms.GetVirtualMachineRequest(name=created.name)
        try:
            after = await plane.core.call_as(ALICE, "GetVirtualMachine", get, virtual_machine_pb2.VirtualMachine)
        except NotFound:
            return
        assert after.state == virtual_machine_pb2.VirtualMachine.State.DELETING


@pytest.mark.parametrize("hosts", [1, 4])
async def test_every_host_takes_vms(tmp_path: Path, hosts: int) -> None:
    async with control_plane(tmp_path, hosts=hosts, vcpu_count=1) as plane:
        placed = set()
        for _ in range(hosts):
            vm = virtual_machine_pb2.VirtualMachine(image="images/tiny", vcpu_count=1, memory_mib=256)
            op = await plane.core.call_as(ALICE, "CreateVirtualMachine", vms.CreateVirtualMachineRequest(virtual_machine=vm),
                                          operations_pb2.Operation)
            wait = operations_pb2.WaitOperationRequest(name=op.name, timeout=duration_pb2.Duration(seconds=5))
            done = await plane.core.call_as(ALICE, "WaitOperation", wait, operations_pb2.Operation)
            created = virtual_machine_pb2.VirtualMachine()
            assert done.done and done.response.Unpack(created), done
            placed.add(created.hypervisor)
        assert len(placed) == hosts  # one core each: every host got one
