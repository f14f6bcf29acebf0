"""Uploading what deploy/images built (a folder with its manifest.json) through the SDK: the
upload half of ``wnodes-admin images build`` (the build half is deployment code, which does not
use the SDK)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from clients.wnodes_client import Client
from wnodes.v1.image_pb2 import ImageVersion


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
