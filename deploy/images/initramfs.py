"""``initrd.img``: a busybox-static initramfs (uncompressed cpio) whose /init loads virtio_pci,
virtio_blk, virtio_console, crc32c and ext4 (dependencies resolved from modules.dep), mounts
/dev/vda and switch_roots to /sbin/wnodes-init (``guest/boot-init.sh``)."""

from __future__ import annotations

import logging
from pathlib import Path

from deploy.images.busybox import BUSYBOX
from deploy.images.cpio import Cpio
from deploy.images.kernel import Kernel, read_module
from services.common.kernel_modules import ModulesDep

LOG = logging.getLogger("wnodes.images.build")

BOOT_SCRIPT = Path(__file__).resolve().parent / "guest" / "boot-init.sh"

# Loaded by the initramfs in this order after dependency resolution.
BOOT_MODULES = ("virtio_pci", "virtio_blk", "virtio_console", "crc32c_generic", "ext4")
# Loaded only when the guest has a virtio network device.
NET_MODULES = ("virtio_net",)


def build_initrd_bytes(kernel: Kernel) -> bytes:
    modules = ModulesDep.read(kernel.modules_dir)
    boot = modules.load_order(BOOT_MODULES)
    net = modules.load_order(NET_MODULES, skip=boot)
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
        archive.file(f"lib/modules/{name}.ko", read_module(kernel, modules.path(name)))
    LOG.info("initramfs modules: boot %s; network %s", " ".join(boot), " ".join(net))
    return archive.finish()
