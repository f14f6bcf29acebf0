#!/usr/bin/env python3
"""Builds the WNoDeS guest images from the Debian packages on this machine.

    python deploy/images/build.py --out DIR [--only tiny|debian12] [--force]
    python deploy/images/build.py --out DIR --recipe FILE     (wnodes-admin images build also uploads it)

Each image goes to DIR/<image>/ (default_images.py; a recipe's to DIR/recipes/<name>/,
recipe_build.py):

- ``vmlinux``: the uncompressed kernel, taken out of /boot/vmlinuz-6.1.*-amd64 (kernel.py).
- ``initrd.img``: a busybox-static initramfs that loads the boot modules and switch_roots to
  /sbin/wnodes-init (initramfs.py).
- ``disk.qcow2``: the ext4 root file system (disk.py) of the tree rootfs.py (tiny) or
  debootstrap.py (debian12, cached in DIR/.cache so rebuilds are fast) makes, with the guest agent.
- ``manifest.json``: name, architecture, format, kernel command line, kernel release, os-release
  and the sha256 and size of every file (manifest.py).

Idempotent: an output is rebuilt only when it is missing or older than one of its inputs (the
kernel, modules, busybox, the guest scripts, the builder's code); ``--force`` rebuilds everything.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from deploy.images.default_images import IMAGES, build_image
from deploy.images.environment import build_environment
from deploy.images.recipe import RecipeError, load_recipe
from deploy.images.recipe_build import build_recipe

LOG = logging.getLogger("wnodes.images.build")

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "var" / "images"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--recipe", type=Path, help="build this recipe (deploy/images/recipes/*.toml) instead of the defaults")
    # Uploading needs the SDK, which deployment code does not import: the admin CLI does it.
    parser.add_argument("--upload", action="store_true", help=argparse.SUPPRESS)
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
    if args.upload:
        parser.error("--upload: use 'wnodes-admin images build RECIPE', which builds the recipe and uploads it")
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
        return 0
    for name in args.only or IMAGES:
        started = time.monotonic()
        manifest = build_image(name, out, kernel, mirror, args.force)
        sizes = {k: v["size"] for k, v in manifest["files"].items()}  # type: ignore[attr-defined]
        LOG.info("%s: %s (%.1f s) sizes %s", name, out / name, time.monotonic() - started, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
