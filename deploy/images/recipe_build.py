"""A recipe's image (deploy/images/recipes/*.toml, parsed by recipe.py), built into
OUT/recipes/<recipe name>/."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

from deploy.images.boot_files import build_boot_files
from deploy.images.debootstrap import apt_install, chroot_ready, customise_debian_tree, debootstrap_tree
from deploy.images.disk import dir_size_mib, make_disk
from deploy.images.kernel import Kernel
from deploy.images.manifest import manifest, write_manifest
from deploy.images.recipe import Recipe
from deploy.images.rootfs import TINY_OS_RELEASE, install_agent, populate_tiny_root

LOG = logging.getLogger("wnodes.images.build")


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
    write_manifest(image_dir / "manifest.json", manifest(
        recipe.name, recipe.base, kernel, os_release, files,
        description=recipe.description or f"{recipe.name} (recipe {recipe.source})",
        vo=recipe.vo,
        visibility=recipe.visibility,
        recipe={"source": recipe.source, "sha256": recipe.sha256},
        customizations=recipe.customizations(),
    ))  # fmt: skip
    LOG.info("%s: built from %s in %s", recipe.name, recipe.source, ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return image_dir
