"""The driver contract (services/hypervisor/drivers/base.py), checked for every implementation:
the fake driver and the libvirt driver on libvirt's in-memory test:///default hypervisor.
Real QEMU guests are covered by tests/e2e."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest

from services.hypervisor.drivers.base import (
    DomainNotFound,
    DomainSpec,
    DriverError,
    ExecutionLost,
    Exit,
    HypervisorDriver,
    Stdout,
    VolumeSpec,
    new_exec_key,
)
from services.hypervisor.drivers.fake import FakeDriver
from services.hypervisor.drivers.libvirt.driver import LibvirtDriver

_ids = itertools.count()


@pytest.fixture(params=["fake", "libvirt-test"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> HypervisorDriver:
    if request.param == "fake":
        return FakeDriver(vcpu_count=8, memory_mib=8192)
    return LibvirtDriver("test:///default", f"wnodes-contract-{next(_ids)}-", run_dir=tmp_path, virtualization="qemu")


def spec(vm_id: str, tmp_path: Path) -> DomainSpec:
    # The disk sits in the VM's own directory of the driver's run_dir, as the agent puts it.
    disk = tmp_path / vm_id / "disk.qcow2"
    disk.parent.mkdir(parents=True, exist_ok=True)
    disk.touch()
    return DomainSpec(vm_id=vm_id, vcpu_count=1, memory_mib=128, disk_path=disk,
                      hostname=f"h-{vm_id}", mac_address="52:54:00:00:00:01")


async def test_start_then_list_then_destroy(driver: HypervisorDriver, tmp_path: Path) -> None:
    await driver.define_and_start(spec("vm-a1", tmp_path))
    listed = await driver.list()
    assert [d.vm_id for d in listed] == ["vm-a1"] and listed[0].running
    await driver.destroy("vm-a1")
    assert await driver.list() == []


async def test_destroy_is_idempotent(driver: HypervisorDriver, tmp_path: Path) -> None:
    await driver.destroy("vm-never-existed")
    await driver.define_and_start(spec("vm-b1", tmp_path))
    await driver.destroy("vm-b1")
    await driver.destroy("vm-b1")
    assert await driver.list() == []


async def test_a_second_start_of_the_same_vm_fails_and_leaves_the_first(driver: HypervisorDriver, tmp_path: Path) -> None:
    await driver.define_and_start(spec("vm-c1", tmp_path))
    with pytest.raises(DriverError):
        await driver.define_and_start(spec("vm-c1", tmp_path))
    assert [d.vm_id for d in await driver.list()] == ["vm-c1"]
    await driver.destroy("vm-c1")


async def test_stop_keeps_the_disk_and_start_boots_it_again(driver: HypervisorDriver, tmp_path: Path) -> None:
    # Prepare
    vm = spec("vm-s1", tmp_path)
    await driver.define_and_start(vm)
    vm.disk_path.write_bytes(b"the guest's files")

    # Execute
    await driver.stop("vm-s1")
    await driver.stop("vm-s1")  # idempotent

    # Assert
    assert await driver.list() == []
    assert vm.disk_path.read_bytes() == b"the guest's files"
    await driver.define_and_start(vm)
    assert [(d.vm_id, d.running) for d in await driver.list()] == [("vm-s1", True)]
    await driver.destroy("vm-s1")


async def test_suspend_and_resume(driver: HypervisorDriver, tmp_path: Path) -> None:
    await driver.define_and_start(spec("vm-p1", tmp_path))

    await driver.suspend("vm-p1")
    await driver.suspend("vm-p1")  # a paused domain stays paused
    [paused] = await driver.list()
    assert (paused.running, paused.paused) == (False, True)

    await driver.resume("vm-p1")
    await driver.resume("vm-p1")  # a running domain stays running
    [running] = await driver.list()
    assert (running.running, running.paused) == (True, False)
    await driver.destroy("vm-p1")


async def test_suspend_or_resume_of_a_missing_domain_raises(driver: HypervisorDriver) -> None:
    with pytest.raises(DomainNotFound):
        await driver.suspend("vm-missing")
    with pytest.raises(DomainNotFound):
        await driver.resume("vm-missing")


async def test_export_disk_copies_and_leaves_the_domain_as_it_found_it(driver: HypervisorDriver, tmp_path: Path) -> None:
    # Prepare: a real qcow2 (the libvirt driver copies it with qemu-img; the fake writes a placeholder)
    vm = spec("vm-e1", tmp_path)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(vm.disk_path), "16M"], check=True)
    await driver.define_and_start(vm)

    # Execute / Assert: running stays running, paused stays paused, no domain is fine
    await driver.export_disk("vm-e1", vm.disk_path, tmp_path / "running.qcow2")
    assert [(d.running, d.paused) for d in await driver.list()] == [(True, False)]
    await driver.suspend("vm-e1")
    await driver.export_disk("vm-e1", vm.disk_path, tmp_path / "paused.qcow2", compress=True)
    assert [(d.running, d.paused) for d in await driver.list()] == [(False, True)]
    await driver.stop("vm-e1")
    await driver.export_disk("vm-e1", vm.disk_path, tmp_path / "stopped.qcow2")
    for name in ("running", "paused", "stopped"):
        assert (tmp_path / f"{name}.qcow2").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.glob("*.part")) == []


async def test_libvirt_export_failure_leaves_no_copy_and_resumes_the_domain(tmp_path: Path) -> None:
    driver = LibvirtDriver("test:///default", f"wnodes-contract-{next(_ids)}-", run_dir=tmp_path, virtualization="qemu")
    vm = spec("vm-e2", tmp_path)
    await driver.define_and_start(vm)
    with pytest.raises(DriverError) as info:
        await driver.export_disk("vm-e2", tmp_path / "no-such-disk.qcow2", tmp_path / "copy.qcow2")
    assert "could not copy" in str(info.value)
    assert not (tmp_path / "copy.qcow2").exists() and not list(tmp_path.glob("*.part"))
    assert [(d.running, d.paused) for d in await driver.list()] == [(True, False)]
    await driver.destroy("vm-e2")


async def test_fake_export_failure_injection(tmp_path: Path) -> None:
    driver = FakeDriver(fail_on=frozenset({"vm-bad"}))
    with pytest.raises(DriverError):
        await driver.export_disk("vm-bad", tmp_path / "disk.qcow2", tmp_path / "copy.qcow2")
    assert not (tmp_path / "copy.qcow2").exists()


async def test_volumes_attach_and_detach_idempotently(driver: HypervisorDriver, tmp_path: Path) -> None:
    if isinstance(driver, LibvirtDriver):
        pytest.skip("libvirt's test:///default driver has no virDomainAttachDeviceFlags; tests/e2e/test_volumes.py covers libvirt")
    # Prepare
    await driver.define_and_start(spec("vm-v1", tmp_path))
    data = tmp_path / "vol-1.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data), "8M"], check=True)
    volume = VolumeSpec(data, "vdb", serial="vol-1")

    # Execute / Assert
    await driver.attach_volume("vm-v1", volume)
    await driver.attach_volume("vm-v1", volume)  # already there: left as it is
    await driver.detach_volume("vm-v1", volume)
    await driver.detach_volume("vm-v1", volume)  # not attached: nothing to do
    await driver.detach_volume("vm-missing", volume)
    with pytest.raises(DomainNotFound):
        await driver.attach_volume("vm-missing", volume)
    assert data.exists(), "detaching never touches the volume's data"
    await driver.destroy("vm-v1")


async def test_host_resources(driver: HypervisorDriver) -> None:
    res = await driver.host_resources()
    assert res.vcpu_count > 0 and res.memory_mib > 0
    assert res.virtualization in {"kvm", "qemu", "fake"}


async def test_fake_failure_injection_leaves_nothing(tmp_path: Path) -> None:
    driver = FakeDriver(fail_on=frozenset({"vm-bad"}))
    with pytest.raises(DriverError):
        await driver.define_and_start(spec("vm-bad", tmp_path))
    assert await driver.list() == []


async def test_fake_guest_speaks_the_channel_protocol(tmp_path: Path) -> None:
    driver = FakeDriver()
    await driver.define_and_start(spec("vm-d1", tmp_path))
    guest = driver.guest("vm-d1")
    assert (await guest.wait_ready(1)).kernel_release
    events = [e async for e in guest.exec("echo hi; exit 4")]
    assert [type(e).__name__ for e in events] == ["Stdout", "Exit"]
    assert events[0].data == b"hi\n" and events[1].code == 4  # type: ignore[union-attr]


async def test_fake_guest_keeps_an_execution_to_attach_to(tmp_path: Path) -> None:
    driver = FakeDriver()
    await driver.define_and_start(spec("vm-d2", tmp_path))
    key = new_exec_key()
    first = [e async for e in driver.guest("vm-d2").exec("echo a; exit 2", key=key)]
    again = [e async for e in driver.guest("vm-d2").attach(key)]
    assert again == first == [Stdout(b"a\n"), Exit(2)]
    await driver.guest("vm-d2").forget(key)
    with pytest.raises(ExecutionLost):
        [e async for e in driver.guest("vm-d2").attach(key)]
