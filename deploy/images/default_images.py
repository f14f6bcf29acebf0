"""The default images, each in OUT/<image>/ (vmlinux, initrd.img, disk.qcow2, manifest.json):
``tiny`` (busybox only: the fastest boot) and ``debian12`` (minbase bookworm with openssh-server
and the user wnodes, for interactive VMs). The dev stack registers each as a PUBLIC image."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from deploy.images.boot_files import build_boot_files
from deploy.images.busybox import BUSYBOX
from deploy.images.debootstrap import DEBIAN_SUITE, customise_debian_tree, debootstrap_tree
from deploy.images.disk import dir_size_mib, make_disk
from deploy.images.kernel import Kernel
from deploy.images.manifest import manifest, write_manifest
from deploy.images.outputs import BUILD_CODE, is_stale
from deploy.images.rootfs import AGENT_SCRIPT, TINY_OS_RELEASE, install_agent, populate_tiny_root

LOG = logging.getLogger("wnodes.images.build")

IMAGES = ("tiny", "debian12")


def build_image(name: str, out: Path, kernel: Kernel, mirror: str, force: bool) -> dict[str, object]:
    """Builds what is stale of out/<name>/ (everything with force); returns its manifest."""
    image_dir = out / name
    image_dir.mkdir(parents=True, exist_ok=True)
    vmlinux, initrd = image_dir / "vmlinux", image_dir / "initrd.img"
    disk, manifest_path = image_dir / "disk.qcow2", image_dir / "manifest.json"
    timings: dict[str, float] = {}

    build_boot_files(image_dir, kernel, force, timings)

    started = time.monotonic()
    if name == "tiny":
        if force or is_stale([disk], [BUSYBOX, AGENT_SCRIPT, *BUILD_CODE]):
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
        if force or is_stale([disk], [stamp, custom, AGENT_SCRIPT, *BUILD_CODE]):
            install_agent(tree)
            size = max(1024, 2 * dir_size_mib(tree) + 256)
            make_disk(tree, disk, size_mib=size, compress=True)
            timings["disk"] = time.monotonic() - started
        os_release = (tree / "usr/lib/os-release").read_text()
    else:
        raise ValueError(f"unknown image {name}")

    files = (vmlinux, initrd, disk)
    if force or timings or is_stale([manifest_path], list(files)):
        write_manifest(manifest_path, manifest(name, name, kernel, os_release, files))
    for step, seconds in timings.items():
        LOG.info("%s: built %s in %.1f s", name, step, seconds)
    if not timings:
        LOG.info("%s: up to date", name)
    result: dict[str, object] = json.loads(manifest_path.read_text())
    return result
