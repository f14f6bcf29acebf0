from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.names import parse_image, parse_resource_id
from services.nameserver import validation


@pytest.mark.parametrize(
    ("name", "expected"),
    [("tiny", ("tiny", None)), ("images/tiny", ("tiny", None)), ("images/debian12/versions/3", ("debian12", 3))],
)
def test_parse_image(name: str, expected: tuple[str, int | None]) -> None:
    assert parse_image(name) == expected


@pytest.mark.parametrize("name", ["", "Tiny", "images/", "images/x/versions/", "../etc", "a" * 70])
def test_bad_image_names(name: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_image(name)


@pytest.mark.parametrize(("cpus", "mem"), [(0, 256), (-1, 256), (2000, 256), (1, 0), (1, 64), (1, 10**12)])
def test_bad_sizes(cpus: int, mem: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.check_size(cpus, mem)
    assert "got" in info.value.message


def test_good_size() -> None:
    validation.check_size(1, 128)


def test_resource_ids() -> None:
    assert parse_resource_id("virtualMachines/vm-1", "virtualMachines") == "vm-1"
    assert parse_resource_id("vm-1", "virtualMachines") == "vm-1"
    with pytest.raises(InvalidArgument):
        parse_resource_id("virtualMachines/../x", "virtualMachines")


def test_request_id() -> None:
    validation.check_request_id("4f1c-aa:b.c_d")
    with pytest.raises(InvalidArgument):
        validation.check_request_id("has space")


ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example"


def test_ssh_keys_are_kept_as_single_lines() -> None:
    assert validation.check_ssh_public_keys([f"  {ED25519}\n"]) == [ED25519]


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("", "one line"),
        (ED25519 + "\nssh-ed25519 AAAA injected", "one line"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "not the private one"),
        ('command="rm -rf /" ' + ED25519, "known key type"),
        ("ssh-rsa " + ED25519.split()[1], "not a ssh-rsa public key"),
        ("ssh-ed25519 not-base64!", "not a ssh-ed25519 public key"),
    ],
)
def test_bad_ssh_keys_say_what_is_wrong(key: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.check_ssh_public_keys([key])
    assert says in info.value.message and "ssh_public_keys[0]" in info.value.message
    assert info.value.reason == "INVALID_SSH_KEY"
