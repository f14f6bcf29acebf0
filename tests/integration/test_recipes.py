"""Image recipes on a real control plane (etcd x3, imagestore, gateway, one fake-driver host):
`wnodes-admin images build RECIPE` builds a tiny-based recipe and uploads it as a new version of
its image, owned by the recipe's VO and recording the recipe's sha256.

Every build is a new version, even of an unchanged recipe: a build is an explicit act (for
debian12 it also brings the mirror's updates), and the catalogue is its history. Parts that did
not change (the kernel and initrd) keep their sha256, so the content-addressed store holds them
once; the disk's sha256 changes with every build because an ext4 image carries a fresh UUID and
timestamps (mkfs.ext4 -d is not reproducible), so a build does not pretend to be bit-identical."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients.wnodes_client import Client
from deploy.stack.stack import Stack
from tests import stacks
from tests.integration.conftest import venv_bin

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="image builds run as root (file ownership in the image)"),
    pytest.mark.skipif(not list(Path("/boot").glob("vmlinuz-6.1.*-amd64")) or not shutil.which("mkfs.ext4"),
                       reason="needs linux-image-amd64 and e2fsprogs (make apt)"),  # fmt: skip
]
RECIPE = Path(__file__).resolve().parents[2] / "deploy" / "images" / "recipes" / "cms-tiny.toml"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = stacks.start(tmp_path_factory.mktemp("recipes"), "fake", 1)
    yield s
    s.down()


def build(stack: Stack, recipe: Path, out: Path) -> dict[str, Any]:
    env = {**os.environ, "WNODES_USER": "image-builder", "WNODES_VO": "wnodes"}
    done = subprocess.run(
        [venv_bin("wnodes-admin"), "--stack-dir", str(stack.dir), "--output", "json", "images", "build", str(recipe), "--out", str(out)],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_each_build_of_a_recipe_is_a_new_version_that_records_the_recipe(stack: Stack, tmp_path: Path) -> None:
    # Prepare
    recipe = tmp_path / "cms-tiny.toml"
    shutil.copyfile(RECIPE, recipe)
    out = tmp_path / "images"

    # Execute: build, rebuild unchanged, change a file and build again
    first = build(stack, recipe, out)
    second = build(stack, recipe, out)
    recipe.write_text(RECIPE.read_text().replace("CMS pilot node", "CMS pilot node, second edition"))
    third = build(stack, recipe, out)

    # Assert
    assert [v["name"] for v in (first, second, third)] == [f"images/cms-tiny/versions/{n}" for n in (1, 2, 3)]
    assert first["owner_vo"] == "cms" and first["visibility"] == "VO"
    recorded = [v["customizations"][0] for v in (first, second, third)]
    assert recorded[0] == recorded[1] and recorded[0].startswith("recipe cms-tiny.toml sha256:")
    assert recorded[2] != recorded[0]
    assert any(line.startswith("file /etc/motd sha256:") for line in third["customizations"])
    for v in (second, third):  # unchanged parts: the same content-addressed blobs
        assert v["direct_boot"]["kernel"] == first["direct_boot"]["kernel"]
        assert v["direct_boot"]["initrd"] == first["direct_boot"]["initrd"]
    manifest = json.loads((out / "recipes" / "cms-tiny" / "manifest.json").read_text())
    assert manifest["files"]["disk.qcow2"]["sha256"] == third["disk"]["sha256"]
    assert manifest["recipe"]["sha256"] in recorded[2]
    assert first["build_seconds"] > 0


def test_the_recipes_vo_owns_the_image_and_can_boot_it(stack: Stack, tmp_path: Path) -> None:
    assert stack.state is not None
    with Client(stack.state.gateway, user="carol", vo="cms") as carol, Client(stack.state.gateway, user="alice", vo="atlas") as alice:
        if "images/cms-tiny" not in {v.image for v in carol.list_images()}:  # run on its own
            build(stack, RECIPE, tmp_path / "images")
        versions = [v.name for v in carol.list_images() if v.image == "images/cms-tiny"]
        latest = max(versions, key=lambda name: int(name.rsplit("/", 1)[1]))
        assert "images/cms-tiny" not in {v.image for v in alice.list_images()}
        vm = carol.create_vm("cms-tiny").result(timeout=60)
        assert vm.image_version == latest
        carol.delete_vm(vm.name).result(timeout=60)
