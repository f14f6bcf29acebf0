"""The guest kernel: this machine's Debian 6.1 kernel, uncompressed for QEMU's PVH entry, and its
modules.

``vmlinux`` is the ELF kernel taken out of /boot/vmlinuz-6.1.*-amd64 (the XZ stream in the
bzImage). QEMU boots it through its PVH entry, which under TCG saves the ~3 s the kernel would
spend decompressing itself.
"""

from __future__ import annotations

import lzma
import re
import struct
from dataclasses import dataclass
from pathlib import Path

# Measured under TCG with bench/boot_baseline.py and the guest's wnodes.debug timeline: console
# output is slow under emulation (quiet, loglevel=0); acpi=noirq saves ~0.2 s of ACPI interrupt
# link evaluation when virtio_pci probes; the rest skips probes nobody needs. TCG-only arguments
# (services/hypervisor/drivers/kvm.py TCG_KERNEL_ARGS) are added by the driver, not here.
# Per VM the agent appends wnodes.hostname=NAME (and wnodes.debug for a boot timeline on the console).
KERNEL_CMDLINE = (
    "console=ttyS0 root=/dev/vda rootfstype=ext4 rw panic=-1 quiet loglevel=0 "
    "tsc=reliable no_timer_check i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd "
    "acpi=noirq 8250.nr_uarts=1 cryptomgr.notests random.trust_cpu=on noreplace-smp"
)


@dataclass(frozen=True)
class Kernel:
    vmlinuz: Path
    release: str

    @property
    def modules_dir(self) -> Path:
        return Path("/lib/modules") / self.release


def find_kernel(explicit: Path | None = None) -> Kernel:
    """The newest /boot/vmlinuz-6.1.*-amd64 (or the one given) and its release."""
    if explicit is not None:
        release = explicit.name.removeprefix("vmlinuz-")
        return Kernel(explicit, release)
    candidates = sorted(
        Path("/boot").glob("vmlinuz-6.1.*-amd64"),
        key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"[.-]", p.name)],
    )
    if not candidates:
        raise SystemExit("no /boot/vmlinuz-6.1.*-amd64: apt-get install linux-image-amd64")
    vmlinuz = candidates[-1]
    return Kernel(vmlinuz, vmlinuz.name.removeprefix("vmlinuz-"))


XZ_MAGIC = b"\xfd7zXZ\x00"


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside an XZ-compressed bzImage."""
    start = bzimage.find(XZ_MAGIC)
    while start >= 0:
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            elf = decompressor.decompress(bzimage[start:])
        except lzma.LZMAError:
            elf = b""
        if elf.startswith(b"\x7fELF"):
            return elf
        start = bzimage.find(XZ_MAGIC, start + 1)
    raise ValueError("no XZ-compressed ELF kernel found in the bzImage")


def slim_elf(elf: bytes) -> bytes:
    """The same ELF kernel without the zeros QEMU would fill in anyway.

    Each PT_LOAD segment's trailing zeros (.bss, .brk and the init scratch area: ~24 MB of a Debian
    6.1 vmlinux) move from the file into memsz > filesz, and the section headers and symbols
    after the last segment are dropped. QEMU keeps a copy of the file's segment data for every
    guest (to restore it on reset), so this saves memory per VM as well as load time.
    """
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF")
    header = bytearray(elf[:64])
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    table = bytearray(elf[phoff : phoff + phentsize * phnum])
    end = phoff + len(table)
    for i in range(phnum):
        p_type, _flags, offset = struct.unpack_from("<IIQ", table, i * phentsize)
        filesz, memsz = struct.unpack_from("<QQ", table, i * phentsize + 0x20)
        if p_type == 1:  # PT_LOAD
            filesz = len(elf[offset : offset + filesz].rstrip(b"\0"))
            struct.pack_into("<Q", table, i * phentsize + 0x20, filesz)
        end = max(end, offset + filesz)
    struct.pack_into("<Q", header, 0x28, 0)  # e_shoff: no section headers
    struct.pack_into("<HHH", header, 0x3A, 0, 0, 0)  # e_shentsize, e_shnum, e_shstrndx
    out = bytearray(elf[:end])
    out[:64] = header
    out[phoff : phoff + len(table)] = table
    return bytes(out)


def read_module(kernel: Kernel, relpath: str) -> bytes:
    """A module's file (relative to the release's directory), decompressed."""
    data = (kernel.modules_dir / relpath).read_bytes()
    if relpath.endswith(".xz"):
        return lzma.decompress(data)
    if relpath.endswith(".ko"):
        return data
    raise ValueError(f"cannot decompress module {relpath}")
