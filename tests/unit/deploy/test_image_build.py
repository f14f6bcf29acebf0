"""The pure parts of the image build (deploy/images/): the kernel's extraction and slimming, the
initramfs's cpio, when an output is stale, what a manifest says. The builds themselves (root,
debootstrap, mkfs) are `make images`'s."""

from __future__ import annotations

import hashlib
import lzma
import os
import struct
import subprocess
from pathlib import Path

import pytest

from deploy.images.cpio import Cpio
from deploy.images.kernel import KERNEL_CMDLINE, Kernel, extract_vmlinux, find_kernel, slim_elf
from deploy.images.manifest import manifest
from deploy.images.outputs import BUILD_CODE, is_stale, write_atomic


def elf_with_one_segment(data: bytes, memsz: int) -> bytes:
    """A 64-bit little-endian ELF: header, one PT_LOAD program header, its data, then junk
    standing for the section headers and symbols."""
    phoff, phentsize = 64, 56
    offset = phoff + phentsize
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<Q", header, 0x28, 4096)  # e_shoff
    struct.pack_into("<HH", header, 0x36, phentsize, 1)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)
    program = struct.pack("<IIQQQQQQ", 1, 5, offset, 0, 0, len(data), memsz, 4096)
    return bytes(header) + program + data + b"SECTIONS AND SYMBOLS"


def test_the_kernel_is_found_in_the_xz_stream_of_a_bzimage() -> None:
    # Setup: a decoy XZ stream that is no ELF, then the kernel
    elf = elf_with_one_segment(b"code", 4)
    bzimage = b"setup code" + lzma.compress(b"not a kernel", format=lzma.FORMAT_XZ) + b"pad" + lzma.compress(elf, format=lzma.FORMAT_XZ)

    # Execute / Verify
    assert extract_vmlinux(bzimage) == elf
    with pytest.raises(ValueError, match="no XZ-compressed ELF"):
        extract_vmlinux(b"setup code only")


def test_slimming_moves_trailing_zeros_into_memsz_and_drops_what_follows() -> None:
    # Setup
    elf = elf_with_one_segment(b"code" + b"\0" * 100, 200)

    # Execute
    slim = slim_elf(elf)

    # Verify: the segment keeps its memory size, the file only its non-zero bytes
    filesz, memsz = struct.unpack_from("<QQ", slim, 64 + 0x20)
    assert (filesz, memsz) == (4, 200)
    assert slim.endswith(b"code") and len(slim) == 64 + 56 + 4
    assert struct.unpack_from("<Q", slim, 0x28)[0] == 0  # no section headers
    with pytest.raises(ValueError, match="64-bit"):
        slim_elf(b"\x7fELF\x01\x01" + b"\0" * 58)


def test_an_explicit_kernel_names_its_release() -> None:
    # Execute
    kernel = find_kernel(Path("/boot/vmlinuz-6.1.0-57-amd64"))

    # Verify
    assert kernel == Kernel(Path("/boot/vmlinuz-6.1.0-57-amd64"), "6.1.0-57-amd64")
    assert kernel.modules_dir == Path("/lib/modules/6.1.0-57-amd64")


def test_the_cpio_archive_reads_back_with_cpio(tmp_path: Path) -> None:
    # Setup
    archive = Cpio()
    archive.directory("bin")
    archive.file("bin/busybox", b"\x7fELF binary", 0o755)
    archive.symlink("bin/sh", "busybox")
    archive.chardev("dev-null", 1, 3, 0o666)
    blob = archive.finish()

    # Execute
    listing = subprocess.run(["cpio", "-itv"], input=blob, capture_output=True, check=True).stdout.decode()

    # Verify: padded to 512 bytes, every entry there with its kind and mode
    assert len(blob) % 512 == 0
    lines = listing.splitlines()
    assert [line.split()[-1] for line in lines] == ["bin", "bin/busybox", "busybox", "dev-null"]
    assert lines[0].startswith("drwxr-xr-x") and lines[1].startswith("-rwxr-xr-x")
    assert lines[2].startswith("lrwxrwxrwx") and "bin/sh -> busybox" in lines[2]
    assert lines[3].startswith("crw-rw-rw-") and "1,   3" in lines[3]
    assert archive.finish() != blob  # each finish adds a trailer: one archive, one finish


def test_an_output_is_stale_when_missing_or_older_than_an_input(tmp_path: Path) -> None:
    # Setup
    out, src = tmp_path / "out", tmp_path / "src"
    src.write_text("input")

    # Execute / Verify
    assert is_stale([out], [src])
    write_atomic(out, b"built", 0o600)
    os.utime(src, (1, 1))
    assert not is_stale([out], [src])
    os.utime(src, (out.stat().st_mtime + 10,) * 2)
    assert is_stale([out], [src])
    assert out.read_bytes() == b"built" and out.stat().st_mode & 0o777 == 0o600


def test_the_builders_code_is_an_input_and_recipes_are_not() -> None:
    # Verify: editing the builder rebuilds the default images, editing a recipe's code does not
    names = {p.name for p in BUILD_CODE}
    assert {"kernel.py", "initramfs.py", "cpio.py", "rootfs.py", "debootstrap.py", "default_images.py", "kernel_modules.py"} <= names
    assert not names & {"recipe.py", "recipe_build.py"}


def test_a_manifest_says_what_the_image_is_and_what_its_files_hold(tmp_path: Path) -> None:
    # Setup
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"disk")
    os_release = '# comment\nNAME="WNoDeS tiny"\nID=wnodes-tiny\nVERSION_ID=\'1\'\n'

    # Execute
    data = manifest("cms-tiny", "tiny", Kernel(Path("/boot/vmlinuz-6.1.0-57-amd64"), "6.1.0-57-amd64"), os_release, [disk], vo="cms")

    # Verify
    assert data == {
        "name": "cms-tiny", "architecture": "x86_64", "format": "qcow2", "cmdline": KERNEL_CMDLINE,
        "kernel_release": "6.1.0-57-amd64", "min_memory_mib": 128, "vo": "cms",
        "os_release": {"NAME": "WNoDeS tiny", "ID": "wnodes-tiny", "VERSION_ID": "1"},
        "files": {"disk.qcow2": {"sha256": hashlib.sha256(b"disk").hexdigest(), "size": 4}},
    }  # fmt: skip
    assert manifest("atlas-wn", "debian12", Kernel(Path("k"), "r"), "", [disk])["min_memory_mib"] == 256
