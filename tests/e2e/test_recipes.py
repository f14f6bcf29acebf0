"""A VO's recipe end to end: `wnodes-admin images build deploy/images/recipes/atlas-wn.toml`
(debian12 + bc) builds and uploads a new version owned by atlas, and a real VM of it has bc."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from deploy.stack.stack import Stack
from tests.e2e.conftest import env_for, wnodes_bin

pytestmark = pytest.mark.e2e

ADMIN = str(Path(wnodes_bin()).with_name("wnodes-admin"))
RECIPE = Path(__file__).resolve().parents[2] / "deploy" / "images" / "recipes" / "atlas-wn.toml"


@pytest.mark.timeout(1200)
def test_a_debian12_recipe_boots_with_its_package(vm_stack: Stack) -> None:
    # Execute: build and upload, as an operator would
    started = time.monotonic()
    out = subprocess.run([ADMIN, "images", "build", str(RECIPE), "--output", "json"],
                         capture_output=True, text=True, env=env_for(vm_stack, "wnodes-admin", "wnodes"), timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    print(f"recipe build + upload took {time.monotonic() - started:.1f} s (build {made['build_seconds']} s)")

    # Assert: the version is atlas's and records the recipe
    assert made["name"].startswith("images/atlas-wn/versions/") and made["owner_vo"] == "atlas"
    assert made["customizations"][0].startswith("recipe atlas-wn.toml sha256:")
    assert "packages bc" in made["customizations"]

    # Execute: a real VM of it, as an atlas user
    run = subprocess.run([wnodes_bin(), "run", "--image", "atlas-wn", "--memory", "512", "--", "bc --version | head -1; echo 6*7 | bc"],
                         capture_output=True, text=True, env=env_for(vm_stack), timeout=300)  # fmt: skip

    # Assert
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith("bc ") and run.stdout.splitlines()[-1] == "42"
