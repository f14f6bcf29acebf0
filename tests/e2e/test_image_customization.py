"""libguestfs customisation at publish time, end to end: `wnodes-admin images customize` makes a
new version of tiny with a file, syslog to the hypervisor, a kernel module loaded at boot, root's
authorized key and a site script; a real VM of it has the file, the module loaded, the key and
what the script wrote, and a `logger` line inside the guest lands in the hypervisor agent's log;
the source is untouched."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from clients.wnodes_client import Client
from deploy.stack.stack import Stack
from tests.e2e.conftest import env_for, wnodes_bin

pytestmark = pytest.mark.e2e

ADMIN = str(Path(wnodes_bin()).with_name("wnodes-admin"))
# A module no tiny guest loads by itself (the RAM disk driver): loaded, it is in /proc/modules.
MODULE = "brd"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(900)
def test_customized_version_boots_with_file_and_syslog_relay(vm_stack: Stack, tmp_path: Path) -> None:
    # Prepare
    state = vm_stack.state
    assert state is not None
    with Client(state.gateway, user="wnodes-admin", vo="wnodes", roles=["admin"]) as c:
        source = c.get_image("images/tiny")
    source_blob = vm_stack.dir / "imagestore" / "blobs" / source.disk.sha256
    assert _sha256(source_blob) == source.disk.sha256
    marker = f"customised-{uuid.uuid4().hex[:8]}"
    local = tmp_path / "motd"
    local.write_text(marker + "\n")
    key = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{uuid.uuid4().hex}{uuid.uuid4().hex[:11]} e2e@wnodes"
    (tmp_path / "key.pub").write_text(key + "\n")
    site = f"site-{uuid.uuid4().hex[:8]}"
    (tmp_path / "site.sh").write_text(f"#!/bin/sh\necho {site} > /etc/wnodes-site-marker\n")

    # Execute: the admin CLI, as an operator would
    started = time.monotonic()
    out = subprocess.run(
        [ADMIN, "images", "customize", source.name, "--name", "tinylog", "--file", f"/etc/wnodes-test={local}",
         "--syslog-to-hypervisor", "--module", MODULE, "--authorized-key", str(tmp_path / "key.pub"),
         "--script", str(tmp_path / "site.sh"), "--output", "json"],
        capture_output=True, text=True, env=env_for(vm_stack, "wnodes-admin", "wnodes"), timeout=600,
    )
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    print(f"customisation took {elapsed:.1f} s")

    # Assert: the new version records what was applied and keeps the boot parameters
    assert made["name"].startswith("images/tinylog/versions/")
    assert made["state"] == "AVAILABLE"
    assert any("/etc/wnodes-test" in line for line in made["customizations"])
    assert any("syslog" in line for line in made["customizations"])
    assert any(MODULE in line for line in made["customizations"])
    assert any("authorized key" in line for line in made["customizations"])
    assert any("site script" in line for line in made["customizations"])
    assert made["disk"]["sha256"] != source.disk.sha256
    assert made["direct_boot"]["kernel"]["sha256"] == source.direct_boot.kernel.sha256
    assert made["direct_boot"]["cmdline"] == source.direct_boot.cmdline
    # The source version is untouched: same record, same bytes
    with Client(state.gateway, user="wnodes-admin", vo="wnodes", roles=["admin"]) as c:
        assert c.get_image(source.name).disk.sha256 == source.disk.sha256
    assert _sha256(source_blob) == source.disk.sha256

    # Execute: a real VM of the new version
    hello = f"hello-from-guest-{uuid.uuid4().hex[:8]}"
    run = subprocess.run(
        [wnodes_bin(), "run", "--image", "tinylog", "--",
         f"cat /etc/wnodes-test /etc/wnodes-site-marker /root/.ssh/authorized_keys; grep -c '^{MODULE} ' /proc/modules; "
         f"logger {hello}; sleep 3"],
        capture_output=True, text=True, env=env_for(vm_stack), timeout=300,
    )

    # Assert: the file is in the guest, and its syslog line reached the hypervisor agent's log
    assert run.returncode == 0, run.stderr
    # the file, what the site script wrote, the key, and the module (one line in /proc/modules)
    assert run.stdout.splitlines() == [marker, site, key, "1"], run.stdout
    agent_log = vm_stack.dir / "logs" / "hypervisor0.log"
    deadline = time.monotonic() + 15
    while hello not in agent_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = [ln for ln in agent_log.read_text().splitlines() if hello in ln]
    assert lines, "the guest's syslog line did not reach the hypervisor's log"
    assert "wnodes.guest.syslog" in lines[0]
