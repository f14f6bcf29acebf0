"""Volumes on the in-memory store, with real agents on the fake driver: records, ownership,
attach and detach (device names, one VM at a time, the host holding the data), online and
offline, and the pinning of a new VM to the host of the volumes it names."""

from __future__ import annotations

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, VirtualMachineNotFound, VolumeNotFound
from services.common.records import AttachmentState, VolumeRecord, VolumeState
from services.nameserver import convert
from services.nameserver.power import PowerAction
from services.nameserver.volumes import parse_volume_name
from tests.unit.nameserver.conftest import ADMIN, ALICE, BOB, Farm
from wnodes.v1 import virtual_machine_pb2, virtual_machine_service_pb2


async def _volume(farm: Farm, title: str = "data", principal: object = ALICE) -> VolumeRecord:
    return await farm.registry.volumes.create(title, 1.0, principal, "")  # type: ignore[arg-type]


async def _attached(farm: Farm, volume_id: str, vm_id: str, device: str = "") -> str:
    """Attaches and lets the agent do it; returns the device."""
    view = await farm.registry.volumes.attach(volume_id, vm_id, device, ALICE)
    await farm.converge()
    done = await farm.registry.operations.get(view.op.name, ALICE)
    assert done.done and done.error is None, done.error
    return (await farm.registry.volumes.get(volume_id, ALICE)).attachment["device"]


async def _detached(farm: Farm, volume_id: str) -> None:
    view = await farm.registry.volumes.detach(volume_id, "", ALICE)
    await farm.converge()
    done = await farm.registry.operations.get(view.op.name, ALICE)
    assert done.done and done.error is None, done.error


# --- records --------------------------------------------------------------------------------


async def test_a_volume_is_created_once_per_request_id_and_is_its_owners(farm: Farm) -> None:
    # Execute
    first = await farm.registry.volumes.create("scratch", 2.5, ALICE, "req-1")
    again = await farm.registry.volumes.create("scratch", 2.5, ALICE, "req-1")
    # Assert
    assert again.id == first.id and (first.state, first.hypervisor, first.attachment) == (VolumeState.ONLINE, "", {})
    assert parse_volume_name(first.name) == first.id
    with pytest.raises(VolumeNotFound):
        await farm.registry.volumes.get(first.id, BOB)
    assert (await farm.registry.volumes.get(first.id, ADMIN)).title == "scratch"


@pytest.mark.parametrize(("title", "size"), [("x" * 257, 1.0), ("bad\ntitle", 1.0), ("t", 0.0), ("t", 2000.0), ("t", float("nan"))])
async def test_a_volume_needs_a_printable_title_and_a_sane_size(farm: Farm, title: str, size: float) -> None:
    with pytest.raises(InvalidArgument):
        await farm.registry.volumes.create(title, size, ALICE, "")


@pytest.mark.parametrize("name", ["volumes/vol-123", "vol-XYZ0123456", "disks/vol-0123456789", ""])
def test_volume_names_are_checked(name: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_volume_name(name)
    assert exc.value.reason == "INVALID_NAME"


async def test_volume_lists_are_paged_and_the_callers_own(farm: Farm) -> None:
    # Prepare
    mine = {(await _volume(farm, f"a{i}")).id for i in range(5)}
    theirs = {(await _volume(farm, "b", BOB)).id}
    # Execute
    seen, token = [], ""
    while True:
        page, token = await farm.registry.volumes.list_volumes(ALICE, 2, token)
        seen += [v.id for v in page]
        if not token:
            break
    # Assert
    assert sorted(seen) == sorted(mine)
    assert {v.id for v in (await farm.registry.volumes.list_volumes(BOB, 0, ""))[0]} == theirs
    assert len((await farm.registry.volumes.list_volumes(ADMIN, 0, ""))[0]) == 6


# --- attach and detach ----------------------------------------------------------------------


async def test_attach_gives_the_first_free_device_and_pins_the_volume_to_the_vms_host(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    a, b = await _volume(farm, "a"), await _volume(farm, "b")
    # Execute
    view = await farm.registry.volumes.attach(a.id, vm.id, "", ALICE)
    # Assert: ATTACHING in both records until the agent did it
    assert not view.done and view.volume is not None and view.volume.attachment["state"] == AttachmentState.ATTACHING
    assert [e["state"] for e in (await farm.vm(vm.id)).volumes] == [AttachmentState.ATTACHING]
    assert (await farm.registry.volumes.attach(a.id, vm.id, "", ALICE)).op.id == view.op.id, "a retry gets the operation in flight"
    await farm.converge()
    done = await farm.registry.operations.get(view.op.name, ALICE)
    assert done.done and done.error is None
    attached = await farm.registry.volumes.get(a.id, ALICE)
    assert (attached.hypervisor, attached.attachment) == ("hv1", {"vm": vm.id, "device": "vdb", "state": AttachmentState.ATTACHED})
    assert [(v.volume, v.device) for v in convert.vm_to_proto(await farm.vm(vm.id)).volumes] == [(a.name, "vdb")]
    assert "vdb" in farm.agents["hv1"].driver.volumes[vm.id]  # type: ignore[attr-defined]
    # a retry once done is done at once; the next volume gets the next device
    assert (await farm.registry.volumes.attach(a.id, vm.id, "", ALICE)).done
    assert await _attached(farm, b.id, vm.id) == "vdc"


async def test_a_device_asked_for_must_be_free_and_valid(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    a, b = await _volume(farm, "a"), await _volume(farm, "b")
    assert await _attached(farm, a.id, vm.id, "vdf") == "vdf"
    # Execute / Assert
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.volumes.attach(b.id, vm.id, "vdf", ALICE)
    assert exc.value.reason == "DEVICE_IN_USE"
    with pytest.raises(InvalidArgument) as bad:
        await farm.registry.volumes.attach(b.id, vm.id, "vda", ALICE)
    assert bad.value.reason == "INVALID_DEVICE"


async def test_a_volume_is_attached_to_one_vm_at_a_time_and_stays_on_its_host(farm: Farm) -> None:
    # Prepare: a volume attached on hv1, VMs on hv1 and hv2
    await farm.add_host("hv1")
    await farm.add_host("hv2")
    vm1 = await farm.running(pinned_hypervisor="hv1")
    other1 = await farm.running(pinned_hypervisor="hv1")
    vm2 = await farm.running(pinned_hypervisor="hv2")
    volume = await _volume(farm)
    await _attached(farm, volume.id, vm1.id)
    # Execute / Assert
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.volumes.attach(volume.id, other1.id, "", ALICE)
    assert exc.value.reason == "VOLUME_ATTACHED"
    await _detached(farm, volume.id)
    assert (await farm.registry.volumes.get(volume.id, ALICE)).attachment == {}
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.volumes.attach(volume.id, vm2.id, "", ALICE)
    assert exc.value.reason == "VOLUME_ON_OTHER_HYPERVISOR"
    assert exc.value.metadata == {"volume_hypervisor": "hv1", "vm_hypervisor": "hv2"}
    assert await _attached(farm, volume.id, other1.id) == "vdb"


async def test_detach_needs_an_attached_volume_and_a_vm_that_can_let_go(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    volume = await _volume(farm)
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.volumes.detach(volume.id, "", ALICE)
    assert exc.value.reason == "VOLUME_NOT_ATTACHED"
    await _attached(farm, volume.id, vm.id)
    await farm.registry.power_action(vm.id, ALICE, PowerAction.SUSPEND)
    await farm.converge()
    # Execute / Assert
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.volumes.detach(volume.id, "", ALICE)
    assert exc.value.reason == "INVALID_VM_STATE"
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.volumes.detach(volume.id, "vm-0000000000", ALICE)
    assert exc.value.reason == "VOLUME_NOT_ATTACHED"


async def test_an_attached_volume_is_neither_deleted_nor_taken_offline(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    volume = await _volume(farm)
    await _attached(farm, volume.id, vm.id)
    # Execute / Assert
    for refused in (farm.registry.volumes.delete(volume.id, ALICE), farm.registry.volumes.set_online(volume.id, ALICE, online=False)):
        with pytest.raises(FailedPrecondition) as exc:
            await refused
        assert exc.value.reason == "VOLUME_ATTACHED"
    await _detached(farm, volume.id)
    offline = await farm.registry.volumes.set_online(volume.id, ALICE, online=False)
    assert offline.state == VolumeState.OFFLINE
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.volumes.attach(volume.id, vm.id, "", ALICE)
    assert exc.value.reason == "VOLUME_NOT_ONLINE"
    assert (await farm.registry.volumes.set_online(volume.id, ALICE, online=True)).state == VolumeState.ONLINE
    await farm.registry.volumes.delete(volume.id, ALICE)
    with pytest.raises(VolumeNotFound):
        await farm.registry.volumes.get(volume.id, ALICE)


async def test_attach_needs_a_settled_vm_of_the_caller(farm: Farm) -> None:
    await farm.add_host("hv1")
    pending = await farm.create()
    volume = await _volume(farm)
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.volumes.attach(volume.id, pending.op.vm_id, "", ALICE)
    assert exc.value.reason == "INVALID_VM_STATE"
    theirs = await farm.running(BOB)
    with pytest.raises(VirtualMachineNotFound):
        await farm.registry.volumes.attach(volume.id, theirs.id, "", ALICE)


async def test_an_attach_to_a_vm_deleted_meanwhile_ends_in_an_error(farm: Farm) -> None:
    await farm.add_host("hv1")
    vm = await farm.running()
    volume = await _volume(farm)
    view = await farm.registry.volumes.attach(volume.id, vm.id, "", ALICE)
    await farm.registry.delete_vm(vm.id, ALICE, "")
    await farm.converge()
    done = await farm.registry.operations.get(view.op.name, ADMIN)
    assert done.done and done.error is not None


# --- pinning a new VM to its volumes' host --------------------------------------------------


async def _volume_on(farm: Farm, host: str) -> VolumeRecord:
    """A detached volume whose data lives on host."""
    vm = await farm.running(pinned_hypervisor=host)
    volume = await _volume(farm, f"on-{host}")
    await _attached(farm, volume.id, vm.id)
    await _detached(farm, volume.id)
    return await farm.registry.volumes.get(volume.id, ALICE)


async def test_a_vm_created_with_volumes_is_pinned_to_the_host_of_their_data(farm: Farm) -> None:
    # Prepare: three hosts, a volume whose data is on hv2 and a new one (no data yet)
    for name in ("hv1", "hv2", "hv3"):
        await farm.add_host(name, vcpus=16)
    on_hv2, fresh = await _volume_on(farm, "hv2"), await _volume(farm, "fresh")
    # Execute
    views = [await farm.create(volumes=[on_hv2.name, fresh.name]) for _ in range(3)]
    # Assert: pinned there; pin only, nothing attached
    assert {(v.vm.hypervisor, v.vm.pinned_hypervisor) for v in views if v.vm} == {("hv2", "hv2")}
    assert (await farm.registry.volumes.get(on_hv2.id, ALICE)).attachment == {}
    assert all(not v.vm.volumes for v in views if v.vm)
    # an explicit pin that agrees is kept; volumes without data leave the pin to the caller
    agreed = await farm.create(volumes=[on_hv2.name], pinned_hypervisor="hypervisors/hv2")
    assert agreed.vm is not None and agreed.vm.hypervisor == "hv2"
    free = await farm.create(volumes=[fresh.name], pinned_hypervisor="hv3")
    assert free.vm is not None and free.vm.hypervisor == "hv3"


async def test_volumes_on_two_hosts_or_against_the_pin_are_refused(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    await farm.add_host("hv2")
    on_hv1, on_hv2 = await _volume_on(farm, "hv1"), await _volume_on(farm, "hv2")
    # Execute / Assert
    with pytest.raises(FailedPrecondition) as exc:
        await farm.create(volumes=[on_hv1.name, on_hv2.name])
    assert exc.value.reason == "VOLUME_ON_OTHER_HYPERVISOR"
    with pytest.raises(FailedPrecondition) as exc:
        await farm.create(volumes=[on_hv1.name], pinned_hypervisor="hypervisors/hv2")
    assert exc.value.reason == "VOLUME_ON_OTHER_HYPERVISOR"
    assert exc.value.metadata == {"volume_hypervisor": "hv1", "pinned_hypervisor": "hv2"}


async def test_a_vm_cannot_be_created_with_a_volume_attached_elsewhere_or_not_the_callers(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    attached, theirs = await _volume(farm, "a"), await _volume(farm, "b", BOB)
    await _attached(farm, attached.id, vm.id)
    # Execute / Assert
    with pytest.raises(FailedPrecondition) as exc:
        await farm.create(volumes=[attached.name])
    assert exc.value.reason == "VOLUME_ATTACHED"
    with pytest.raises(VolumeNotFound):
        await farm.create(volumes=[theirs.name])
    with pytest.raises(InvalidArgument) as bad:
        await farm.create(volumes=["volumes/nope"])
    assert bad.value.reason == "INVALID_NAME"


async def test_a_retried_create_with_volumes_gets_its_first_operation_once_they_are_attached(farm: Farm) -> None:
    # Prepare: the create, then the attach OCCI makes once the VM runs
    await farm.add_host("hv1")
    volume = await _volume(farm)
    first = await farm.create(request_id="with-volume", volumes=[volume.name])
    await farm.converge()
    await _attached(farm, volume.id, first.op.vm_id)
    # Execute
    again = await farm.create(request_id="with-volume", volumes=[volume.name])
    # Assert
    assert again.op.name == first.op.name


def test_the_volumes_of_a_create_request_reach_the_spec() -> None:
    request = virtual_machine_service_pb2.CreateVirtualMachineRequest(virtual_machine=virtual_machine_pb2.VirtualMachine(
        image="images/tiny", vcpu_count=1, memory_mib=512,
        volumes=[virtual_machine_pb2.VolumeAttachment(volume="volumes/vol-0123456789")],
    ))  # fmt: skip
    assert convert.spec_from_request(request).volumes == ["volumes/vol-0123456789"]
