#!/usr/bin/env python3
"""Builds the WNoDeS guest images from the Debian packages on this machine.

    python deploy/images/build.py --out DIR [--only tiny|debian12] [--force]

Each image goes to DIR/<image>/:

- ``vmlinux``: the uncompressed kernel, taken out of /boot/vmlinuz-6.1.*-amd64 (the XZ stream in
  the bzImage). QEMU boots this ELF through its PVH entry, which under TCG saves the ~3 s the
  kernel would spend decompressing itself.
- ``initrd.img``: a busybox-static initramfs (uncompressed cpio) whose /init loads virtio_pci,
  virtio_blk, virtio_console, crc32c and ext4 (dependencies resolved from modules.dep), mounts
  /dev/vda and switch_roots to /sbin/wnodes-init (``guest/boot-init.sh``).
- ``disk.qcow2``: the ext4 root file system (``mkfs.ext4 -d``, no loop mounts) with the guest agent
  ``/sbin/wnodes-init`` (``guest/wnodes-init.sh``).
- ``manifest.json``: name, architecture, format, kernel command line, kernel release, os-release
  and the sha256 and size of every file.

Images: ``tiny`` (busybox only: the fastest boot) and ``debian12`` (``debootstrap --variant=minbase
bookworm`` from the mirror apt uses here, plus openssh-server and the user wnodes (uid 1000) for
interactive VMs; the tree is cached in DIR/.cache so rebuilds are fast).

Idempotent: an output is rebuilt only when it is missing or older than one of its inputs (the
kernel, modules, busybox, the guest scripts, this file); ``--force`` rebuilds everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deploy.images.recipe import Recipe, RecipeError, load_recipe
from services.common.digests import sha256_file

if TYPE_CHECKING:
    from clients.wnodes_client import Client
    from wnodes.v1.image_pb2 import ImageVersion

LOG = logging.getLogger("wnodes.images.build")

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parents[1] / "var" / "images"
GUEST_DIR = HERE / "guest"
AGENT_SCRIPT = GUEST_DIR / "wnodes-init.sh"
BOOT_SCRIPT = GUEST_DIR / "boot-init.sh"
BUSYBOX = Path("/bin/busybox")
AGENT_BUSYBOX = "usr/lib/wnodes/busybox"

IMAGES = ("tiny", "debian12")

# Loaded by the initramfs in this order after dependency resolution.
BOOT_MODULES = ("virtio_pci", "virtio_blk", "virtio_console", "crc32c_generic", "ext4")
# Loaded only when the guest has a virtio network device.
NET_MODULES = ("virtio_net",)

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

TINY_OS_RELEASE = """\
NAME="WNoDeS tiny"
ID=wnodes-tiny
ID_LIKE=busybox
VERSION_ID=1
PRETTY_NAME="WNoDeS tiny (busybox)"
HOME_URL="https://web.infn.it/wnodes"
"""

TINY_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
wnodes:x:1000:1000:WNoDeS job user:/home/wnodes:/bin/sh
pilot001:x:1001:1001:pilot job user:/home/pilot001:/bin/sh
pilot002:x:1002:1002:pilot job user:/home/pilot002:/bin/sh
"""

TINY_GROUP = """\
root:x:0:
daemon:x:1:
nogroup:x:65534:
wnodes:x:1000:
pilot001:x:1001:
pilot002:x:1002:
"""

DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Installed into the minbase tree: an SSH server for interactive (cloud) VMs.
DEBIAN_PACKAGES = ("openssh-server",)
# The unprivileged user interactive logins and batch jobs without their own account use.
JOB_USER, JOB_UID = "wnodes", 1000
# Every VM makes its own ed25519 host key at its first boot (wnodes-init.sh): an image must not
# carry one shared by every VM made from it. Drop-ins take precedence (first match wins).
SSHD_DROP_IN = """\
# WNoDeS (deploy/images/build.py): keys only, one host key made at the VM's first boot.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


@dataclass(frozen=True)
class Kernel:
    vmlinuz: Path
    release: str

    @property
    def modules_dir(self) -> Path:
        return Path("/lib/modules") / self.release


# ---------------------------------------------------------------------------------------------
# Kernel


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


# ---------------------------------------------------------------------------------------------
# Kernel modules


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """modules.dep -> {module name: (relative path, [dependency names])}."""
    modules: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, deps = line.split(":", 1)
        modules[_module_name(path)] = (path, [_module_name(d) for d in deps.split()])
    return modules


def resolve_modules(modules: dict[str, tuple[str, list[str]]], wanted: Iterable[str], skip: Iterable[str] = ()) -> list[str]:
    """The wanted modules and their dependencies, each after everything it needs."""
    order: list[str] = []
    done = set(skip)

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in stack:
            raise ValueError(f"module dependency cycle: {' -> '.join((*stack, name))}")
        if name not in modules:
            raise ValueError(f"kernel module {name} not in modules.dep")
        for dep in modules[name][1]:
            visit(dep, (*stack, name))
        done.add(name)
        order.append(name)

    for name in wanted:
        visit(name.replace("-", "_"), ())
    return order


def read_module(kernel: Kernel, relpath: str) -> bytes:
    data = (kernel.modules_dir / relpath).read_bytes()
    if relpath.endswith(".xz"):
        return lzma.decompress(data)
    if relpath.endswith(".ko"):
        return data
    raise ValueError(f"cannot decompress module {relpath}")


# ---------------------------------------------------------------------------------------------
# cpio (newc), written directly so device nodes need no privileges and output is reproducible


class Cpio:
    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            self._ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
            0, 0, rdev[0], rdev[1], len(encoded), 0,
        )  # fmt: skip
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._ino += 1
        self._chunks += [header, encoded, b"\0" * (-(len(header) + len(encoded)) % 4)]
        self._chunks += [data, b"\0" * (-len(data) % 4)]

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        blob = b"".join(self._chunks)
        return blob + b"\0" * (-len(blob) % 512)


def build_initrd_bytes(kernel: Kernel) -> bytes:
    modules = parse_modules_dep((kernel.modules_dir / "modules.dep").read_text())
    boot = resolve_modules(modules, BOOT_MODULES)
    net = resolve_modules(modules, NET_MODULES, skip=boot)
    script = BOOT_SCRIPT.read_text()
    script = script.replace("@MODULES@", " ".join(boot)).replace("@NET_MODULES@", " ".join(net))
    archive = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        archive.directory(d)
    archive.chardev("dev/console", 5, 1)
    archive.chardev("dev/null", 1, 3, 0o666)
    archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    archive.symlink("bin/sh", "busybox")
    archive.file("init", script.encode(), 0o755)
    for name in boot + net:
        archive.file(f"lib/modules/{name}.ko", read_module(kernel, modules[name][0]))
    LOG.info("initramfs modules: boot %s; network %s", " ".join(boot), " ".join(net))
    return archive.finish()


# ---------------------------------------------------------------------------------------------
# Root file systems


def busybox_applets() -> list[str]:
    """Paths (relative to /) busybox installs its applets at, e.g. 'usr/bin/awk'."""
    out = subprocess.run([str(BUSYBOX), "--list-full"], check=True, capture_output=True, text=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def populate_tiny_root(root: Path) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "var/tmp",
              "root", "home/wnodes", "home/pilot001", "home/pilot002"):  # fmt: skip
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(mode=0o1777, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "var/tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    for uid, home in ((1000, "wnodes"), (1001, "pilot001"), (1002, "pilot002")):
        os.chown(root / "home" / home, uid, uid)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for applet in busybox_applets():
        link = root / applet
        if link.name == "busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(root / "bin/busybox", link.parent))
    (root / "etc/os-release").write_text(TINY_OS_RELEASE)
    (root / "etc/passwd").write_text(TINY_PASSWD)
    (root / "etc/group").write_text(TINY_GROUP)
    (root / "etc/hostname").write_text("wnodes-tiny\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n")
    install_agent(root)


def install_agent(root: Path) -> None:
    # The agent's own static busybox, off the users' PATH: its streamer runs tools many times a
    # second, and a dynamically linked binary costs about 60 ms to start under TCG.
    tools = root / AGENT_BUSYBOX
    tools.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, tools)
    target = root / "sbin/wnodes-init"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    shutil.copyfile(AGENT_SCRIPT, target)
    os.chmod(target, 0o755)


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine for the bookworm suite."""
    sources = [Path("/etc/apt/sources.list")]
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    key, _, value = line.partition(":")
                    if value and not key.startswith("#"):
                        fields[key.strip().lower()] = value.strip()
                uris = fields.get("uris", "").split()
                if uris and "deb" in fields.get("types", "").split() and DEBIAN_SUITE in fields.get("suites", "").split():
                    return uris[0]
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == DEBIAN_SUITE:
                    return parts[1]
    return DEFAULT_MIRROR


def debootstrap_tree(cache: Path, mirror: str) -> Path:
    """A cached `debootstrap --variant=minbase bookworm` tree; built once."""
    tree = cache / f"debootstrap-{DEBIAN_SUITE}"
    stamp = cache / f"debootstrap-{DEBIAN_SUITE}.done"
    if stamp.exists() and tree.is_dir():
        return tree
    if tree.exists():
        shutil.rmtree(tree)
    cache.mkdir(parents=True, exist_ok=True)
    LOG.info("debootstrap --variant=minbase %s from %s (a few minutes, once)", DEBIAN_SUITE, mirror)
    started = time.monotonic()
    subprocess.run(
        ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(tree), mirror],
        check=True,
        stdout=subprocess.DEVNULL if not LOG.isEnabledFor(logging.DEBUG) else None,
    )
    # Slim it: package caches and lists, docs and locales are not needed in a batch guest.
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*"):
        for p in tree.glob(pattern):
            if p.is_file():
                p.unlink()
    for d in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        for p in (tree / d).glob("*"):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    (tree / "etc/hostname").write_text("wnodes-debian12\n")
    stamp.write_text(f"{mirror}\n")
    LOG.info("debootstrap done in %.0f s", time.monotonic() - started)
    return tree


def apt_install(tree: Path, packages: Sequence[str], env: dict[str, str]) -> None:
    """apt-get install in a chroot of tree (its resolv.conf and policy-rc.d set by the caller)."""
    quiet = subprocess.DEVNULL if not LOG.isEnabledFor(logging.DEBUG) else None
    subprocess.run(["chroot", str(tree), "apt-get", "update", "-qq"], check=True, env=env, stdout=quiet)
    subprocess.run(["chroot", str(tree), "apt-get", "install", "-y", "-qq", "--no-install-recommends", "--", *packages],
                   check=True, env=env, stdout=quiet)  # fmt: skip
    subprocess.run(["chroot", str(tree), "apt-get", "clean"], check=True, env=env)


@contextlib.contextmanager
def chroot_ready(tree: Path) -> Iterator[dict[str, str]]:
    """While inside: no daemon starts in tree and its resolver is this host's. Yields apt's environment."""
    policy = tree / "usr/sbin/policy-rc.d"
    resolv = tree / "etc/resolv.conf"
    saved_resolv = resolv.read_bytes() if resolv.is_file() and not resolv.is_symlink() else None
    try:
        policy.write_text("#!/bin/sh\n# no daemon starts while the image is built\nexit 101\n")
        policy.chmod(0o755)
        resolv.unlink(missing_ok=True)
        shutil.copyfile("/etc/resolv.conf", resolv)
        yield {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    finally:
        policy.unlink(missing_ok=True)
        resolv.unlink(missing_ok=True)
        if saved_resolv is not None:
            resolv.write_bytes(saved_resolv)
    for p in (tree / "var/lib/apt/lists").glob("*"):
        if p.is_file():
            p.unlink()


def customise_debian_tree(tree: Path, cache: Path) -> Path:
    """Adds DEBIAN_PACKAGES and the user wnodes to the cached minbase tree (apt in a chroot, from
    the tree's own sources); done again only when the wanted customisation changes. Returns the
    stamp file whose time says when."""
    stamp = cache / f"debootstrap-{DEBIAN_SUITE}.custom"
    wanted = json.dumps({"packages": DEBIAN_PACKAGES, "user": [JOB_USER, JOB_UID], "sshd": SSHD_DROP_IN}, sort_keys=True)
    if stamp.exists() and stamp.read_text() == wanted:
        return stamp
    LOG.info("adding %s and the user %s to the %s tree", " ".join(DEBIAN_PACKAGES), JOB_USER, DEBIAN_SUITE)
    with chroot_ready(tree) as env:
        apt_install(tree, DEBIAN_PACKAGES, env)
        if not any(line.split(":")[2:3] == [str(JOB_UID)] for line in (tree / "etc/passwd").read_text().splitlines()):
            subprocess.run(["chroot", str(tree), "useradd", "--create-home", "--uid", str(JOB_UID), "--user-group",
                            "--shell", "/bin/bash", JOB_USER], check=True, env=env)  # fmt: skip
        # "*": no password can match, but the account is not locked ("!"): key logins work.
        shadow = tree / "etc/shadow"
        shadow.write_text("".join(
            (f"{JOB_USER}:*:" + line.split(":", 2)[2] if line.startswith(f"{JOB_USER}:") else line) + "\n"
            for line in shadow.read_text().splitlines()
        ))  # fmt: skip
    for key in (tree / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    drop_in = tree / "etc/ssh/sshd_config.d/wnodes.conf"
    drop_in.parent.mkdir(parents=True, exist_ok=True)
    drop_in.write_text(SSHD_DROP_IN)
    stamp.write_text(wanted)
    return stamp


def make_disk(root: Path, out: Path, size_mib: int, compress: bool) -> None:
    """ext4 from a directory (mkfs.ext4 -d) into a raw file, then qcow2."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".disk-") as tmp:
        raw = Path(tmp) / "root.raw"
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-L", "wnodes-root", "-b", "4096", "-m", "0",
             "-O", "^has_journal", "-E", "root_owner=0:0", "-d", str(root), str(raw),
             f"{size_mib}M"],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        qcow = Path(tmp) / "disk.qcow2"
        cmd = ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2"]
        cmd += ["-c"] if compress else []
        subprocess.run([*cmd, str(raw), str(qcow)], check=True)
        os.chmod(qcow, 0o644)
        os.replace(qcow, out)


def dir_size_mib(root: Path) -> int:
    out = subprocess.run(["du", "-s", "-x", "--block-size=1M", str(root)], check=True,
                         capture_output=True, text=True)  # fmt: skip
    return int(out.stdout.split()[0])


def parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


# ---------------------------------------------------------------------------------------------
# Build steps


def is_stale(outputs: Sequence[Path], inputs: Sequence[Path]) -> bool:
    if not all(p.exists() for p in outputs):
        return True
    oldest = min(p.stat().st_mtime for p in outputs)
    return any(p.stat().st_mtime > oldest for p in inputs)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def build_boot_files(image_dir: Path, kernel: Kernel, force: bool, timings: dict[str, float]) -> None:
    """vmlinux and initrd.img in image_dir, rebuilt when stale; the same bytes for every image."""
    me = Path(__file__).resolve()
    vmlinux, initrd = image_dir / "vmlinux", image_dir / "initrd.img"
    started = time.monotonic()
    if force or is_stale([vmlinux], [kernel.vmlinuz, me]):
        write_atomic(vmlinux, slim_elf(extract_vmlinux(kernel.vmlinuz.read_bytes())), 0o644)
        timings["vmlinux"] = time.monotonic() - started
    started = time.monotonic()
    if force or is_stale([initrd], [kernel.modules_dir / "modules.dep", BUSYBOX, BOOT_SCRIPT, me]):
        write_atomic(initrd, build_initrd_bytes(kernel))
        timings["initrd"] = time.monotonic() - started


def build_image(name: str, out: Path, kernel: Kernel, mirror: str, force: bool) -> dict[str, object]:
    image_dir = out / name
    image_dir.mkdir(parents=True, exist_ok=True)
    vmlinux, initrd = image_dir / "vmlinux", image_dir / "initrd.img"
    disk, manifest = image_dir / "disk.qcow2", image_dir / "manifest.json"
    me = Path(__file__).resolve()
    timings: dict[str, float] = {}

    build_boot_files(image_dir, kernel, force, timings)

    started = time.monotonic()
    if name == "tiny":
        if force or is_stale([disk], [BUSYBOX, AGENT_SCRIPT, me]):
            with tempfile.TemporaryDirectory(dir=image_dir, prefix=".root-") as tmp:
                root = Path(tmp)
                os.chmod(root, 0o755)
                populate_tiny_root(root)
                make_disk(root, disk, size_mib=256, compress=False)
            timings["disk"] = time.monotonic() - started
        os_release = TINY_OS_RELEASE
    elif name == "debian12":
        tree = debootstrap_tree(out / ".cache", mirror)
        stamp = out / ".cache" / f"debootstrap-{DEBIAN_SUITE}.done"
        custom = customise_debian_tree(tree, out / ".cache")
        if force or is_stale([disk], [stamp, custom, AGENT_SCRIPT, me]):
            install_agent(tree)
            size = max(1024, 2 * dir_size_mib(tree) + 256)
            make_disk(tree, disk, size_mib=size, compress=True)
            timings["disk"] = time.monotonic() - started
        os_release = (tree / "usr/lib/os-release").read_text()
    else:
        raise ValueError(f"unknown image {name}")

    files = (vmlinux, initrd, disk)
    if force or timings or is_stale([manifest], list(files)):
        data: dict[str, object] = {
            "name": name,
            "architecture": "x86_64",
            "format": "qcow2",
            "cmdline": KERNEL_CMDLINE,
            "kernel_release": kernel.release,
            "min_memory_mib": 128 if name == "tiny" else 256,
            "os_release": parse_os_release(os_release),
            "files": {f.name: {"sha256": sha256_file(f), "size": f.stat().st_size} for f in files},
        }
        write_atomic(manifest, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    for step, seconds in timings.items():
        LOG.info("%s: built %s in %.1f s", name, step, seconds)
    if not timings:
        LOG.info("%s: up to date", name)
    result: dict[str, object] = json.loads(manifest.read_text())
    return result


# ---------------------------------------------------------------------------------------------
# Recipes (deploy/images/recipes/*.toml, parsed by recipe.py)


def add_recipe_files(root: Path, recipe: Recipe) -> None:
    for f in recipe.files:
        target = root / f.path.lstrip("/")
        if target.is_symlink():  # a busybox applet link: the recipe's file replaces it
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.content)
        os.chown(target, 0, 0)
        os.chmod(target, f.mode)


def build_recipe(recipe: Recipe, out: Path, kernel: Kernel, mirror: str) -> Path:
    """Builds a recipe into out/recipes/<recipe name>/ (manifest.json, vmlinux, initrd.img,
    disk.qcow2) and returns that folder; out/.cache holds the debootstrap tree the default images
    share. Not out/<name>/: the dev stack registers every out/*/manifest.json as a PUBLIC image,
    and a recipe's build is uploaded by its own command, owned by its VO. The disk is always
    rebuilt (a build is an explicit act: for debian12 it also picks up the mirror's updates); the
    kernel and initrd only when stale."""
    image_dir = out / "recipes" / recipe.name
    image_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    build_boot_files(image_dir, kernel, False, timings)
    disk = image_dir / "disk.qcow2"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=image_dir.parent, prefix=f".{recipe.name}-") as tmp:
        root = Path(tmp) / "root"
        if recipe.base == "tiny":
            root.mkdir(mode=0o755)
            populate_tiny_root(root)
            (root / "etc/hostname").write_text(f"{recipe.name}\n")
            add_recipe_files(root, recipe)
            os_release = TINY_OS_RELEASE
            make_disk(root, disk, size_mib=256, compress=False)
        else:
            tree = debootstrap_tree(out / ".cache", mirror)
            customise_debian_tree(tree, out / ".cache")
            # A copy: the cached tree is every debian12 image's base and must stay as it is.
            subprocess.run(["cp", "-a", "--reflink=auto", str(tree), str(root)], check=True)
            timings["copy"] = time.monotonic() - started
            if recipe.packages:
                LOG.info("%s: apt-get install %s", recipe.name, " ".join(recipe.packages))
                with chroot_ready(root) as env:
                    apt_install(root, recipe.packages, env)
                timings["packages"] = time.monotonic() - started - timings["copy"]
            (root / "etc/hostname").write_text(f"{recipe.name}\n")
            add_recipe_files(root, recipe)
            install_agent(root)
            os_release = (root / "usr/lib/os-release").read_text()
            make_disk(root, disk, size_mib=max(1024, 2 * dir_size_mib(root) + 256), compress=True)
    timings["disk"] = time.monotonic() - started
    files = (image_dir / "vmlinux", image_dir / "initrd.img", disk)
    data: dict[str, object] = {
        "name": recipe.name,
        "architecture": "x86_64",
        "format": "qcow2",
        "cmdline": KERNEL_CMDLINE,
        "kernel_release": kernel.release,
        "min_memory_mib": 128 if recipe.base == "tiny" else 256,
        "os_release": parse_os_release(os_release),
        "description": recipe.description or f"{recipe.name} (recipe {recipe.source})",
        "vo": recipe.vo,
        "visibility": recipe.visibility,
        "recipe": {"source": recipe.source, "sha256": recipe.sha256},
        "customizations": recipe.customizations(),
        "files": {f.name: {"sha256": sha256_file(f), "size": f.stat().st_size} for f in files},
    }
    write_atomic(image_dir / "manifest.json", (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    LOG.info("%s: built from %s in %s", recipe.name, recipe.source, ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return image_dir


def upload_built(client: Client, image_dir: Path, on_progress: Callable[[int, int], None] | None = None) -> ImageVersion:
    """Uploads a recipe build (its manifest's checksums declared, verified by the imagestore) as
    a new version of the image, owned by the recipe's VO and recording the recipe."""
    manifest = json.loads((image_dir / "manifest.json").read_text())
    sums = {"disk": manifest["files"]["disk.qcow2"]["sha256"], "kernel": manifest["files"]["vmlinux"]["sha256"],
            "initrd": manifest["files"]["initrd.img"]["sha256"]}  # fmt: skip
    return client.upload_image(
        manifest["name"], image_dir / "disk.qcow2", kernel=image_dir / "vmlinux", initrd=image_dir / "initrd.img",
        cmdline=manifest["cmdline"], visibility=manifest["visibility"], owner_vo=manifest["vo"],
        description=manifest["description"], customizations=manifest["customizations"], sha256=sums, on_progress=on_progress,
    )  # fmt: skip


def build_environment(kernel_path: Path | None = None, mirror: str | None = None) -> tuple[Kernel, str]:
    """The kernel and Debian mirror a build uses; refuses to start what would fail half way."""
    if os.geteuid() != 0:
        raise SystemExit("image builds must run as root (debootstrap, chroot, file ownership in the images)")
    kernel = find_kernel(kernel_path)
    if not kernel.modules_dir.is_dir():
        raise SystemExit(f"{kernel.modules_dir} is missing for {kernel.vmlinuz}")
    return kernel, mirror or debian_mirror()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--recipe", type=Path, help="build this recipe (deploy/images/recipes/*.toml) instead of the defaults")
    parser.add_argument("--upload", action="store_true", help="upload the recipe's build as a new version (WNODES_GATEWAY)")
    parser.add_argument("--only", choices=IMAGES, action="append", help="build only this image")
    parser.add_argument("--kernel", type=Path, help="bzImage to use (default: newest 6.1 in /boot)")
    parser.add_argument("--mirror", help="Debian mirror (default: the one apt uses here)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.upload and not args.recipe:
        parser.error("--upload needs --recipe")
    recipe = None
    if args.recipe:
        try:
            recipe = load_recipe(args.recipe)
        except RecipeError as err:
            parser.error(str(err))
    kernel, mirror = build_environment(args.kernel, args.mirror)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if recipe is not None:
        started = time.monotonic()
        image_dir = build_recipe(recipe, out, kernel, mirror)
        LOG.info("%s: %s in %.1f s", recipe.name, image_dir, time.monotonic() - started)
        if args.upload:
            from clients.wnodes_client import Client

            gateway = os.environ.get("WNODES_GATEWAY")
            if not gateway:
                parser.error("--upload: set WNODES_GATEWAY (eval \"$(wnodes-admin stack env)\")")
            user = os.environ.get("WNODES_USER", "wnodes-admin")
            with Client(gateway, user=user, vo=os.environ.get("WNODES_VO", recipe.vo), roles=["admin"]) as client:
                version = upload_built(client, image_dir, lambda sent, total: LOG.debug("uploaded %d/%d bytes", sent, total))
            LOG.info("uploaded %s (disk sha256 %s)", version.name, version.disk.sha256[:16])
        return 0
    for name in args.only or IMAGES:
        started = time.monotonic()
        manifest = build_image(name, out, kernel, mirror, args.force)
        sizes = {k: v["size"] for k, v in manifest["files"].items()}  # type: ignore[attr-defined]
        LOG.info("%s: %s (%.1f s) sizes %s", name, out / name, time.monotonic() - started, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
