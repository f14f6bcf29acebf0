"""The registry on the in-memory store, with real agents on the fake driver: create and
placement, idempotent request ids, capacity, delete, power actions, lists, labels and etags,
operations and exec targets."""

from __future__ import annotations

import asyncio

import pytest

from services.common import records
from services.common.errors import (
    Aborted,
    FailedPrecondition,
    ImageNotFound,
    InvalidArgument,
    NoCapacity,
    NotFound,
    PermissionDenied,
    VirtualMachineNotFound,
)
from services.common.records import HostUsage, ImageRecord, VmRecord, VmState
from services.hypervisor.vm_records import VmRecords
from services.nameserver.power import PowerAction
from services.nameserver.servicer import RegistryServicer
from tests.unit.nameserver.conftest import ADMIN, ALICE, ALICE_VO, BOB, Farm

IMAGE_OF_WNODES = "images/tiny"  # the farm's image, of VO wnodes

# --- create and placement -------------------------------------------------------------------


async def test_a_create_places_the_vm_and_is_done_when_its_agent_booted_it(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    # Execute
    view = await farm.create(vcpu_count=2, memory_mib=1024, labels={"team": "t1"})
    # Assert: placed in one transaction (VM, usage, placement, leases), not done yet
    vm = view.vm
    assert vm is not None and not view.done and view.op.name == f"operations/create-{vm.id}"
    assert (vm.state, vm.hypervisor, vm.image_version) == (VmState.SCHEDULED, "hv1", "images/tiny/versions/1")
    assert (vm.owner_user, vm.owner_vo, vm.labels) == ("alice", "atlas", {"team": "t1"})
    usage = records.load(HostUsage, (await farm.store.get(farm.keys.usage("hv1"))).value)  # type: ignore[union-attr]
    assert (usage.vcpus_used, usage.memory_mib_used, list(usage.vms)) == (2, 1024, [vm.id])
    assert await farm.store.get(farm.keys.placement("hv1", vm.id)) is not None
    assert await farm.store.get(farm.keys.mac_lease(vm.mac_address)) is not None
    assert await farm.store.get(farm.keys.hostname_lease(vm.hostname)) is not None
    # Execute: the agent's pass boots it
    await farm.converge()
    done = await farm.registry.operations.get(view.op.name, ALICE)
    assert done.done and done.error is None and done.vm is not None and done.vm.state == VmState.ACTIVE


async def test_a_retried_create_gets_the_first_operation_and_no_second_vm(farm: Farm) -> None:
    # Prepare: a host with room for one VM
    await farm.add_host("hv1", vcpus=1)
    first = await farm.create(request_id="r-1")
    # Execute: the same request again (the host is full now), and a new one
    again = await farm.create(request_id="r-1")
    # Assert
    assert again.op.name == first.op.name
    entries, _ = await farm.store.get_prefix(farm.keys.vm())
    assert len(entries) == 1
    with pytest.raises(NoCapacity):
        await farm.create(request_id="r-2")


async def test_capacity_is_freed_when_a_deleted_vm_is_torn_down(farm: Farm) -> None:
    # Prepare: two cores, two VMs
    await farm.add_host("hv1", vcpus=2)
    a = await farm.create()
    await farm.create()
    with pytest.raises(NoCapacity) as exc:
        await farm.create()
    assert exc.value.metadata == {"filter": "cores"}
    # Execute
    await farm.registry.delete_vm(a.op.vm_id, ALICE, "")
    await farm.converge()
    # Assert
    view = await farm.create()
    assert view.vm is not None and view.vm.hypervisor == "hv1"


async def test_no_host_up_is_no_capacity(farm: Farm) -> None:
    with pytest.raises(NoCapacity) as exc:
        await farm.create()
    assert exc.value.reason == "NO_HYPERVISOR_UP"


async def test_a_pinned_vm_goes_to_its_host(farm: Farm) -> None:
    # Prepare
    for name in ("hv1", "hv2", "hv3"):
        await farm.add_host(name)
    # Execute
    views = [await farm.create(pinned_hypervisor="hypervisors/hv2") for _ in range(3)]
    # Assert
    assert {v.vm.hypervisor for v in views if v.vm} == {"hv2"}
    with pytest.raises(NoCapacity):
        await farm.create(pinned_hypervisor="hv9")


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"vcpu_count": 0}, InvalidArgument),
        ({"memory_mib": 1}, InvalidArgument),
        ({"image": "images/nothing"}, ImageNotFound),
        ({"image": "not an image"}, InvalidArgument),
        ({"labels": {"": "x"}}, InvalidArgument),
        ({"request_id": "not a request id!"}, InvalidArgument),
    ],
)
async def test_a_create_is_refused_for_what_it_asks(farm: Farm, spec: dict[str, object], error: type[Exception]) -> None:
    await farm.add_host("hv1")
    with pytest.raises(error):
        await farm.create(**spec)


async def test_a_vm_whose_start_fails_fails_its_create(farm: Farm) -> None:
    # Prepare
    agent = await farm.add_host("hv1")
    view = await farm.create()
    agent.driver._fail_on = frozenset({view.op.vm_id})  # type: ignore[attr-defined]
    # Execute
    await farm.converge()
    # Assert
    done = await farm.registry.operations.get(view.op.name, ALICE)
    assert done.done and done.error is not None and done.error.reason == "VM_START_FAILED"
    assert done.vm is not None and done.vm.state == VmState.FAILED


# --- delete ---------------------------------------------------------------------------------


async def test_a_delete_is_done_when_the_agent_tore_the_vm_down(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    # Execute
    op = await farm.registry.delete_vm(vm.id, ALICE, "")
    # Assert: DELETING, the same operation when asked again, gone after the agent's pass
    assert (await farm.vm(vm.id)).state == VmState.DELETING
    assert (await farm.registry.delete_vm(vm.id, ALICE, "")).id == op.id
    assert not (await farm.registry.operations.get(op.name, ALICE)).done
    await farm.converge()
    assert (await farm.registry.operations.get(op.name, ALICE)).done
    with pytest.raises(VirtualMachineNotFound):
        await farm.registry.get_vm(vm.id, ALICE)
    assert await farm.store.get(farm.keys.mac_lease(vm.mac_address)) is None
    assert await farm.store.get(farm.keys.hostname_lease(vm.hostname)) is None
    assert records.load(HostUsage, (await farm.store.get(farm.keys.usage("hv1"))).value).vms == {}  # type: ignore[union-attr]


async def test_a_vm_never_placed_is_deleted_at_once(farm: Farm) -> None:
    # Prepare: a record no host holds
    vm = VmRecord(id="vm-00000000aa", image="images/tiny", image_version="images/tiny/versions/1", vcpu_count=1,
                  memory_mib=512, owner_user="alice", owner_vo="atlas")  # fmt: skip
    await farm.store.put(farm.keys.vm(vm.id), records.dump(vm))
    # Execute
    op = await farm.registry.delete_vm(vm.id, ALICE, "")
    # Assert
    assert (await farm.registry.operations.get(op.name, ALICE)).done
    assert await farm.store.get(farm.keys.vm(vm.id)) is None


async def test_others_cannot_delete_or_see_a_vm(farm: Farm) -> None:
    await farm.add_host("hv1")
    view = await farm.create()
    with pytest.raises(VirtualMachineNotFound):
        await farm.registry.delete_vm(view.op.vm_id, BOB, "")
    with pytest.raises(VirtualMachineNotFound):
        await farm.registry.get_vm(view.op.vm_id, ALICE_VO)
    assert (await farm.registry.get_vm(view.op.vm_id, ADMIN)).id == view.op.vm_id


# --- power ----------------------------------------------------------------------------------


async def test_stop_start_suspend_resume_each_done_when_the_agent_applied_it(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    for action, state in [
        (PowerAction.STOP, VmState.STOPPED),
        (PowerAction.START, VmState.ACTIVE),
        (PowerAction.SUSPEND, VmState.SUSPENDED),
        (PowerAction.RESUME, VmState.ACTIVE),
        (PowerAction.RESTART, VmState.ACTIVE),
    ]:
        # Execute
        view = await farm.registry.power_action(vm.id, ALICE, action)
        assert not (await farm.registry.operations.get(view.op.name, ALICE)).done, action
        await farm.converge()
        # Assert
        done = await farm.registry.operations.get(view.op.name, ALICE)
        assert done.done and done.error is None and done.vm is not None and done.vm.state == state, action


async def test_one_power_action_at_a_time_and_a_retry_gets_its_operation(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    stop = await farm.registry.power_action(vm.id, ALICE, PowerAction.STOP)
    # Execute / Assert
    assert (await farm.registry.power_action(vm.id, ALICE, PowerAction.STOP)).op.id == stop.op.id
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.power_action(vm.id, ALICE, PowerAction.SUSPEND)
    assert exc.value.reason == "POWER_ACTION_IN_PROGRESS"
    await farm.converge()
    noop = await farm.registry.power_action(vm.id, ALICE, PowerAction.STOP)
    assert noop.done and noop.op.id != stop.op.id, "stopping a stopped VM is done at once"
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.power_action(vm.id, ALICE, PowerAction.RESTART)
    assert exc.value.reason == "INVALID_POWER_TRANSITION"


async def test_no_power_action_before_the_vm_is_up(farm: Farm) -> None:
    await farm.add_host("hv1")
    view = await farm.create()
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.power_action(view.op.vm_id, ALICE, PowerAction.STOP)
    assert exc.value.metadata == {"state": "SCHEDULED", "action": "stop"}


# --- save -----------------------------------------------------------------------------------


async def test_a_save_is_done_with_the_version_the_agent_recorded(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    # Execute
    view = await farm.registry.save_vm(vm.id, ALICE, "images/mine")
    again = await farm.registry.save_vm(vm.id, ALICE, "images/mine")
    # Assert
    assert not view.done and again.op.id == view.op.id
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.power_action(vm.id, ALICE, PowerAction.STOP)
    assert exc.value.reason == "SAVE_IN_PROGRESS"
    # the agent's side: the version is registered, the outcome written into the operation
    await farm.store.put(farm.keys.image_version("mine", 1), records.dump(ImageRecord("mine", 1, "atlas", visibility="VO")))
    assert await VmRecords(farm.store, farm.keys, "hv1").finish_save(vm.id, view.op.id, {"result": {"image_version": "images/mine/versions/1"}})
    done = await farm.registry.operations.get(view.op.name, ALICE)
    assert done.done and done.error is None and done.image is not None and done.image.name == "images/mine/versions/1"


async def test_a_save_is_refused_into_another_vos_image_or_before_the_vm_is_up(farm: Farm) -> None:
    await farm.add_host("hv1")
    vm = await farm.running()
    with pytest.raises(PermissionDenied):
        await farm.registry.save_vm(vm.id, ALICE, IMAGE_OF_WNODES)
    with pytest.raises(InvalidArgument):
        await farm.registry.save_vm(vm.id, ALICE, "images/mine/versions/3")
    pending = await farm.create()
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.save_vm(pending.op.vm_id, ALICE, "images/mine")
    assert exc.value.reason == "INVALID_VM_STATE"

# --- lists, labels --------------------------------------------------------------------------


async def test_lists_are_paged_and_show_each_caller_their_own(farm: Farm) -> None:
    # Prepare: 5 VMs of alice, 2 of bob, on two hosts
    await farm.add_host("hv1", vcpus=16)
    await farm.add_host("hv2", vcpus=16)
    mine = {(await farm.create(pinned_hypervisor="hv1" if i % 2 else "hv2")).op.vm_id for i in range(5)}
    theirs = {(await farm.create(BOB)).op.vm_id for _ in range(2)}
    # Execute: alice pages by two
    seen, token, pages = [], "", 0
    while True:
        page, token = await farm.registry.list_vms(ALICE, 2, token)
        seen += [v.id for v in page]
        pages += 1
        if not token:
            break
    # Assert
    assert sorted(seen) == sorted(mine) and pages == 3
    assert {v.id for v in (await farm.registry.list_vms(BOB, 0, ""))[0]} == theirs
    assert len((await farm.registry.list_vms(ADMIN, 0, ""))[0]) == 7
    on_hv1, _ = await farm.registry.list_vms(ALICE, 0, "", hypervisor="hypervisors/hv1")
    assert {v.hypervisor for v in on_hv1} == {"hv1"} and len(on_hv1) == 2
    _, token = await farm.registry.list_vms(ALICE, 1, "")
    with pytest.raises(InvalidArgument) as exc:
        await farm.registry.list_vms(ALICE, 1, token, hypervisor="hv1")
    assert exc.value.reason == "INVALID_PAGE_TOKEN"


async def test_labels_change_with_the_etag_read_and_keep_reserved_ones(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    vm = await farm.running()
    op = await farm.registry.delete_vm((await farm.running()).id, ALICE, "")  # a VM with a wnodes.* label
    deleting = await farm.vm(op.vm_id)
    # Execute
    updated = await farm.registry.update_vm_labels(vm.id, ALICE, {"a": "1"}, str(vm.revision))
    # Assert
    assert updated.labels == {"a": "1"} and updated.revision > vm.revision
    with pytest.raises(Aborted):
        await farm.registry.update_vm_labels(vm.id, ALICE, {"a": "2"}, str(vm.revision))
    with pytest.raises(InvalidArgument) as exc:
        await farm.registry.update_vm_labels(vm.id, ALICE, {"wnodes.x": "1"}, "")
    assert exc.value.reason == "RESERVED_LABEL"
    kept = await farm.registry.update_vm_labels(deleting.id, ALICE, {"b": "2"}, "")
    assert kept.labels == {"wnodes.delete_operation": op.id, "b": "2"}


# --- operations -----------------------------------------------------------------------------


async def test_operations_are_the_callers_own(farm: Farm) -> None:
    await farm.add_host("hv1")
    view = await farm.create()
    with pytest.raises(NotFound):
        await farm.registry.operations.get(view.op.name, BOB)
    with pytest.raises(NotFound):
        await farm.registry.operations.get("operations/0123456789abcdef", ALICE)
    assert (await farm.registry.operations.get(view.op.name, ADMIN)).op.id == view.op.id


async def test_wait_returns_once_the_operation_is_done_or_at_its_timeout(farm: Farm) -> None:
    # Prepare
    await farm.add_host("hv1")
    view = await farm.create()
    # Execute / Assert: not done within the timeout; done as soon as the agent booted the VM
    assert not (await farm.registry.operations.wait(view.op.name, ALICE, 0.02)).done
    waiting = asyncio.create_task(farm.registry.operations.wait(view.op.name, ALICE, 5.0))
    await asyncio.sleep(0)
    await farm.converge()
    async with asyncio.timeout(2):
        assert (await waiting).done


async def test_a_create_of_a_vm_deleted_before_it_booted_ends_in_an_error(farm: Farm) -> None:
    await farm.add_host("hv1")
    view = await farm.create()
    await farm.registry.delete_vm(view.op.vm_id, ALICE, "")
    await farm.converge()
    done = await farm.registry.operations.get(view.op.name, ADMIN)
    assert done.done and isinstance(done.error, VirtualMachineNotFound)


# --- exec targets ---------------------------------------------------------------------------


async def test_the_exec_target_of_a_running_vm_is_its_hosts_agent(farm: Farm) -> None:
    await farm.add_host("hv1")
    vm = await farm.running()
    target = await farm.registry.resolve_exec_target(vm.id, ALICE)
    assert (target.vm_id, target.hypervisor, target.agent_endpoint) == (vm.id, "hv1", "hv1.example:7100")
    assert (await farm.registry.resolve_exec_target(vm.id, ADMIN)) == target
    with pytest.raises(VirtualMachineNotFound):
        await farm.registry.resolve_exec_target(vm.id, BOB)


@pytest.mark.parametrize("action", [PowerAction.STOP, PowerAction.SUSPEND])
async def test_no_exec_target_for_a_stopped_or_suspended_vm(farm: Farm, action: PowerAction) -> None:
    await farm.add_host("hv1")
    vm = await farm.running()
    await farm.registry.power_action(vm.id, ALICE, action)
    await farm.converge()
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.resolve_exec_target(vm.id, ALICE)
    assert exc.value.reason == "VM_NOT_RUNNING"


async def test_no_exec_target_on_a_host_that_is_down(farm: Farm) -> None:
    await farm.add_host("hv1")
    vm = await farm.running()
    await farm.host_down("hv1")
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.resolve_exec_target(vm.id, ALICE)
    assert exc.value.reason == "HYPERVISOR_DOWN" and "hypervisors/hv1 is down" in exc.value.message


async def test_no_exec_target_for_a_vm_not_placed(farm: Farm) -> None:
    vm = VmRecord(id="vm-00000000bb", image="images/tiny", image_version="images/tiny/versions/1", vcpu_count=1,
                  memory_mib=512, owner_user="alice", owner_vo="atlas", state_message="waiting")  # fmt: skip
    await farm.store.put(farm.keys.vm(vm.id), records.dump(vm))
    with pytest.raises(FailedPrecondition) as exc:
        await farm.registry.resolve_exec_target(vm.id, ALICE)
    assert exc.value.reason == "VM_NOT_PLACED"


class _Context:
    """The little of a grpc.aio context the servicer uses."""

    def __init__(self, principal: object) -> None:
        self._metadata = principal.to_metadata()  # type: ignore[attr-defined]
        self.status: object = None

    def invocation_metadata(self) -> object:
        return self._metadata

    async def abort_with_status(self, status: object) -> None:
        self.status = status
        raise RuntimeError("aborted")


async def test_the_servicer_answers_resolve_exec_target_with_resource_names(farm: Farm) -> None:
    from wnodes.nameserver.v1 import registry_service_pb2

    await farm.add_host("hv1")
    vm = await farm.running()
    servicer = RegistryServicer(farm.registry)
    target = await servicer.ResolveExecTarget(registry_service_pb2.ResolveExecTargetRequest(name=vm.name), _Context(ALICE))  # type: ignore[arg-type]
    assert (target.vm_id, target.hypervisor, target.agent_endpoint) == (vm.id, "hypervisors/hv1", "hv1.example:7100")
    context = _Context(BOB)
    with pytest.raises(RuntimeError):
        await servicer.ResolveExecTarget(registry_service_pb2.ResolveExecTargetRequest(name=vm.name), context)  # type: ignore[arg-type]
    assert context.status is not None and context.status.code.name == "NOT_FOUND"  # type: ignore[attr-defined]
