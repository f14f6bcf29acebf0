"""A forward port that something else took since the agent chose it: the driver says so with a
type (HostForwardUnavailable) and the agent chooses another port, once."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, cast

import libvirt
import pytest

from services.common.keys import Keys
from services.common.records import VmRecord, VmState
from services.hypervisor.drivers.base import DomainSpec, DriverError, HostForwardUnavailable, PortForward, UserNetworkSpec
from services.hypervisor.drivers.fake import FakeDriver
from services.hypervisor.drivers.libvirt.driver import start_failed
from services.hypervisor.lifecycle import Agent, AgentConfig
from services.hypervisor.ssh_access import port_of
from services.hypervisor.vm_records import VmRecords
from tests.unit.hypervisor.fake_records import FakeRecords

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example"


def agent(tmp_path: Path, driver: FakeDriver, vm: VmRecord) -> Agent:
    cfg = AgentConfig("h1", "127.0.0.1:1", tmp_path / "run", tmp_path / "volumes", ssh_ports=(41000, 41999))
    # No etcd: the store is never reached on this path, the records are a stand-in.
    a = Agent(cfg, cast(Any, None), Keys(), driver, None)
    a._records = cast(VmRecords, FakeRecords(vm))
    return a


def starting_vm() -> VmRecord:
    return VmRecord(id="vm-1", image="tiny", image_version="images/tiny/versions/1", vcpu_count=1, memory_mib=128,
                    owner_user="alice", owner_vo="vo", state=VmState.STARTING, ssh_public_keys=[KEY],
                    hostname="h-1", mac_address="52:54:00:00:00:01")


async def test_a_taken_forward_port_is_chosen_again(tmp_path: Path) -> None:
    # Prepare: the port the agent chose is taken before QEMU binds it.
    driver, vm = FakeDriver(), starting_vm()
    a = agent(tmp_path, driver, vm)
    first = a._ssh_ports.assign(vm.id)
    driver.taken_ports.add(port_of(first))

    # Execute
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port_of(first)))  # so the agent's free-port check sees it taken
        endpoint = await a._define_and_start(vm, None, first)

    # Assert: another port, recorded and forwarded.
    spec = driver.domains[vm.id]
    assert endpoint and endpoint != first
    assert spec.user_network is not None and spec.user_network.forwards[0].host_port == port_of(endpoint)
    assert cast(FakeRecords, a._records).vms[vm.id].ssh_endpoint == endpoint


async def test_other_start_failures_are_not_retried(tmp_path: Path) -> None:
    driver, vm = FakeDriver(fail_on=frozenset({"vm-1"})), starting_vm()
    a = agent(tmp_path, driver, vm)
    with pytest.raises(DriverError) as info:
        await a._define_and_start(vm, None, a._ssh_ports.assign(vm.id))
    assert not isinstance(info.value, HostForwardUnavailable)
    assert cast(FakeRecords, a._records).vms[vm.id].ssh_endpoint == ""


async def test_the_fake_driver_refuses_a_taken_port_and_starts_nothing() -> None:
    driver = FakeDriver(taken_ports=frozenset({41007}))
    net = UserNetworkSpec("52:54:00:00:00:01", (PortForward(41007, 22),))
    with pytest.raises(HostForwardUnavailable):
        await driver.define_and_start(DomainSpec("vm-1", 1, 128, Path("/nonexistent"), "h", "52:54:00:00:00:01", user_network=net))
    assert await driver.list() == []


@pytest.mark.parametrize(
    ("message", "typed"),
    [
        ("internal error: qemu unexpectedly closed the monitor: Could not set up host forwarding rule 'tcp:127.0.0.1:22000-:22'", True),
        ("internal error: process exited while connecting to monitor: invalid hostfwd rule", True),
        ("internal error: qemu unexpectedly closed the monitor: cannot allocate memory", False),
    ],
)
def test_the_libvirt_driver_tells_a_refused_forward_apart(message: str, typed: bool) -> None:
    libvirt.virResetLastError()  # libvirtError takes the thread's last error over its message
    err = start_failed("wnodes-vm-1", libvirt.libvirtError(message))
    assert isinstance(err, HostForwardUnavailable) is typed
    assert isinstance(err, DriverError) and message in str(err)
