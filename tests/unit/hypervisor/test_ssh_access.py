"""SSH ports and the contextualisation script (services/hypervisor/ssh_access.py)."""

from __future__ import annotations

import subprocess

import pytest

from services.common.errors import NoCapacity
from services.hypervisor.drivers.fake import FakeDriver
from services.hypervisor.ssh_access import SshPorts, contextualisation_script, port_of

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example"


def test_ports_are_kept_per_vm_and_never_shared() -> None:
    # Prepare
    ports = SshPorts(22000, 22002, is_free=lambda _p: True)

    # Execute
    first = ports.assign("vm-a")
    second = ports.assign("vm-b")
    again = ports.assign("vm-a", first)

    # Assert
    assert (first, second, again) == ("127.0.0.1:22000", "127.0.0.1:22001", "127.0.0.1:22000")


def test_a_port_taken_meanwhile_is_replaced() -> None:
    busy = {22000}
    ports = SshPorts(22000, 22005, is_free=lambda p: p not in busy)
    assert ports.assign("vm-a", "127.0.0.1:22000") == "127.0.0.1:22001"


def test_a_stopped_vms_port_is_not_given_away() -> None:
    ports = SshPorts(22000, 22005, is_free=lambda _p: True)
    ports.note("vm-stopped", "127.0.0.1:22000")
    assert ports.assign("vm-new") == "127.0.0.1:22001"
    ports.release("vm-stopped")
    assert ports.assign("vm-newer") == "127.0.0.1:22000"


def test_no_free_port_is_no_capacity() -> None:
    ports = SshPorts(22000, 22000, is_free=lambda _p: False)
    with pytest.raises(NoCapacity):
        ports.assign("vm-a")


def test_port_of() -> None:
    assert port_of("127.0.0.1:22001") == 22001
    assert port_of("") == port_of("10.0.0.1:22") == 0


@pytest.mark.parametrize("shell", ["dash", "busybox sh"])
def test_the_script_parses_in_both_guest_shells(shell: str) -> None:
    script = contextualisation_script([KEY], b"#!/bin/sh\necho 'quotes ' \"and\" $(things)\n")
    result = subprocess.run([*shell.split(), "-n"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


async def test_a_fake_guest_receives_exactly_the_keys_and_user_data() -> None:
    # Prepare
    from pathlib import Path

    from services.hypervisor.drivers.base import DomainSpec, Exit

    driver = FakeDriver()
    await driver.define_and_start(DomainSpec("vm-1", 1, 128, Path("/nonexistent"), "h", "52:54:00:00:00:01"))
    user_data = b"#cloud-config\nkey: 'value'\n\x00\xff"

    # Execute
    events = [e async for e in driver.guest("vm-1").exec(contextualisation_script([KEY, KEY + "2"], user_data))]

    # Assert
    assert events == [Exit(0)]
    context = driver.contexts["vm-1"]
    assert context.ssh_public_keys == [KEY, KEY + "2"] and context.user_data == user_data
