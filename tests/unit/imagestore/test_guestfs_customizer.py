"""The pure parts of image customisation: what is refused, what is recorded, module load order."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.imagestore.guestfs_customizer import Customization, FileSpec, kernel_release, module_load_order


def test_describe_records_each_change_for_people() -> None:
    spec = Customization(files=(FileSpec("/etc/motd", b"hi\n"),), syslog_to_hypervisor=True, kernel_modules=("dummy",),
                         authorized_keys=("ssh-ed25519 AAAAKEY alice@site",), script="#!/bin/sh\napt-get clean\n")
    assert spec.describe() == [
        "file /etc/motd (3 bytes, mode 0644)",
        "syslog relayed to the hypervisor over the guest channel",
        "kernel modules loaded at boot: dummy",
        "root authorized key ssh-ed25519 alice@site",
        "site script (2 lines): apt-get clean",
    ]


@pytest.mark.parametrize("spec", [
    Customization(),
    Customization(files=(FileSpec("etc/relative", b""),)),
    Customization(files=(FileSpec("/etc/../../x", b""),)),
    Customization(kernel_modules=("bad name",)),
    Customization(authorized_keys=("not-a-key",)),
    Customization(files=(FileSpec("/big", b"x" * (4 << 20)),)),
])
def test_refused_before_anything_is_copied(spec: Customization) -> None:
    with pytest.raises(InvalidArgument):
        spec.check()


def test_modules_come_after_their_dependencies(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\nkernel/nf-x.ko:\n"
    )
    assert module_load_order(tmp_path, ("a", "nf_x")) == ["kernel/c.ko", "kernel/b.ko", "kernel/a.ko", "kernel/nf-x.ko"]
    with pytest.raises(InvalidArgument):
        module_load_order(tmp_path, ("missing",))


def test_kernel_release_is_read_from_the_image(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\0" * 100 + b"Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)" + b"\0")
    assert kernel_release(kernel) == "6.1.0-56-amd64"
    kernel.write_bytes(b"\x1f\x8b compressed")
    with pytest.raises(FailedPrecondition):
        kernel_release(kernel)
