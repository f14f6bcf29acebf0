"""OCCI end to end on real libvirt + QEMU guests, over HTTP only (what an OCCI user sees, checked
from inside the guest over SSH with the key the user gave):
- a compute made from an os_tpl and a resource_tpl boots, takes the SSH key, shows its cores
  and memory, stops, starts on the same disk and is deleted;
- a storage linked to a running compute is a hot-plugged virtio disk of its size whose serial
  is the storage's id; deleting the link unplugs it; linked to a suspended compute, the guest
  finds it when it resumes; everything is 404 once deleted.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from deploy.stack.stack import Stack
from tests.occi_helpers import basic, category, plain

pytestmark = pytest.mark.e2e
INFRA = "http://schemas.ogf.org/occi/infrastructure#"
OS_TPL = "http://schemas.wnodes.infn.it/occi/infrastructure/os_tpl#"
RESOURCE_TPL = "http://schemas.wnodes.infn.it/occi/infrastructure/resource_tpl#"
ACTION = "http://schemas.ogf.org/occi/infrastructure/compute/action#"
SSH_USER = os.environ.get("WNODES_E2E_SSH_USER", "root")
# The guest finds a disk by its serial: the kernel names virtio disks in the order it finds them.
FIND_BY_SERIAL = 'for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = "{serial}" ] && echo ${{d##*/}} $(cat $d/size); done; true'


def _attributes(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("X-OCCI-Attribute: "):
            name, _, value = line.removeprefix("X-OCCI-Attribute: ").partition("=")
            out[name] = value.strip('"')
    return out


@dataclass
class Occi:
    """An OCCI user's session: HTTP to the gateway, SSH into their computes."""

    http: aiohttp.ClientSession
    headers: dict[str, str]
    key: Path

    async def create(self, collection: str, *lines: str) -> str:
        async with self.http.post(collection, headers={**self.headers, "Content-Type": "text/plain"}, data=plain(*lines)) as r:
            assert r.status == 201, await r.text()
            return str(URL(r.headers["Location"]).path)

    async def get(self, path: str) -> tuple[int, dict[str, str], str]:
        async with self.http.get(path, headers=self.headers) as r:
            text = await r.text()
            return r.status, _attributes(text), text

    async def delete(self, path: str) -> None:
        async with self.http.delete(path, headers=self.headers) as r:
            assert r.status in (200, 204), await r.text()
        assert (await self.get(path))[0] == 404, f"{path} is still there after its delete"

    async def act(self, path: str, term: str) -> None:
        async with self.http.post(f"{path}?action={term}", headers={**self.headers, "Content-Type": "text/plain"},
                                  data=plain(f'Category: {term}; scheme="{ACTION}"; class="action"')) as r:
            assert r.status == 200, await r.text()

    async def wait_state(self, path: str, state: str, timeout: float = 300) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            status, attrs, text = await self.get(path)
            assert status == 200, text
            if attrs.get("occi.compute.state") == state:
                return attrs
            assert attrs.get("occi.compute.state") != "error", attrs
            assert time.monotonic() < deadline, f"{path} never became {state}: {attrs}"
            await asyncio.sleep(1)

    async def compute(self, title: str) -> tuple[str, dict[str, str]]:
        """A debian12 compute of the small size with this session's key, once it is active."""
        public = self.key.with_suffix(".pub").read_text().strip()
        path = await self.create("/compute/", category("compute"), f'Category: debian12; scheme="{OS_TPL}"; class="mixin"',
                                 f'Category: small; scheme="{RESOURCE_TPL}"; class="mixin"',
                                 'Category: ssh_key; scheme="http://schemas.ogf.org/occi/infrastructure/credentials#"; class="mixin"',
                                 f'X-OCCI-Attribute: occi.credentials.ssh.publickey="{public}"', f'X-OCCI-Attribute: occi.core.title="{title}"')
        return path, await self.wait_state(path, "active")

    async def ssh(self, attrs: dict[str, str], command: str, until: object = None, timeout: float = 180) -> str:
        """Runs command in the compute; retried until it succeeds (sshd may come up a moment
        after the guest says it is ready) and, if given, until(stdout) holds."""
        host, _, port = attrs["it.infn.wnodes.compute.ssh.endpoint"].rpartition(":")
        argv = ["ssh", "-i", str(self.key), "-p", port, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", f"{SSH_USER}@{host}", command]
        deadline = time.monotonic() + timeout
        while True:
            result = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
            if result.returncode == 0 and (until is None or until(result.stdout)):  # type: ignore[operator]
                return result.stdout
            assert time.monotonic() < deadline, f"{command!r}: exit {result.returncode}, {result.stdout!r} {result.stderr[-500:]}"
            await asyncio.sleep(1)


@pytest.fixture
async def occi(vm_stack: Stack, tmp_path: Path) -> AsyncIterator[Occi]:
    state = vm_stack.state
    assert state is not None and state.occi
    user = state.occi_users[0]
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    async with aiohttp.ClientSession(base_url=state.occi) as http:
        yield Occi(http, basic(user["name"], user["password"]), key)


async def test_compute_boots_takes_the_ssh_key_stops_starts_and_is_deleted(occi: Occi) -> None:
    path, attrs = await occi.compute("e2e")
    assert attrs["occi.compute.cores"] == "1" and float(attrs["occi.compute.memory"]) == 0.5
    assert (await occi.ssh(attrs, "nproc; echo kept > ~/kept")).strip() == "1"
    for term, expected in (("stop", "inactive"), ("start", "active")):
        await occi.act(path, term)
        attrs = await occi.wait_state(path, expected)
    assert (await occi.ssh(attrs, "cat ~/kept")).strip() == "kept"  # the same disk after stop and start
    await occi.delete(path)


async def test_a_storage_link_is_a_virtio_disk_the_guest_sees_by_serial(occi: Occi) -> None:
    # Prepare: 64 MiB of storage and a running compute
    storage = await occi.create("/storage/", category("storage"), "X-OCCI-Attribute: occi.storage.size=0.0625",
                                'X-OCCI-Attribute: occi.core.title="e2e-disk"')
    serial = storage.rsplit("/", 1)[-1]
    compute, attrs = await occi.compute("e2e-storage")
    assert (await occi.ssh(attrs, FIND_BY_SERIAL.format(serial=serial))) == ""

    # Execute: link them
    started = time.monotonic()
    link = await occi.create("/storagelink/", category("storagelink"), f'X-OCCI-Attribute: occi.core.source="{compute}"',
                             f'X-OCCI-Attribute: occi.core.target="{storage}"', 'X-OCCI-Attribute: occi.storagelink.deviceid="/dev/vdb"')
    linked_s = time.monotonic() - started

    # Assert: the link says what the guest sees, and the guest sees exactly that
    status, link_attrs, text = await occi.get(link)
    assert status == 200, text
    assert (link_attrs["occi.storagelink.deviceid"], link_attrs["occi.storagelink.state"]) == ("/dev/vdb", "active")
    assert link_attrs["it.infn.wnodes.storagelink.serial"] == serial and f"serial {serial}" in link_attrs["occi.storagelink.state.message"]
    assert f"Link: <{storage}>" in (await occi.get(compute))[2]
    seen = await occi.ssh(attrs, FIND_BY_SERIAL.format(serial=serial), until=bool, timeout=60)
    assert seen == "vdb 131072\n", seen  # 64 MiB in 512-byte sectors
    assert (await occi.ssh(attrs, "echo $(cat /sys/block/vdb/serial); test -b /dev/vdb && echo block-device")).split() == [serial, "block-device"]

    # Execute / Assert: unlinking unplugs the disk
    started = time.monotonic()
    await occi.delete(link)
    unlinked_s = time.monotonic() - started
    assert await occi.ssh(attrs, FIND_BY_SERIAL.format(serial=serial), until=lambda out: out == "", timeout=60) == ""
    assert f"Link: <{storage}>" not in (await occi.get(compute))[2]
    print(f"\nOCCI storage link to a running debian12 compute: linked in {linked_s:.2f}s, unlinked in {unlinked_s:.2f}s")

    # a suspended (paused) compute takes the disk too: the guest finds it when it resumes
    await occi.act(compute, "suspend")
    await occi.wait_state(compute, "suspended")
    link = await occi.create("/storagelink/", category("storagelink"), f'X-OCCI-Attribute: occi.core.source="{compute}"',
                             f'X-OCCI-Attribute: occi.core.target="{storage}"', 'X-OCCI-Attribute: occi.storagelink.deviceid="/dev/vdb"')
    async with occi.http.delete(link, headers=occi.headers) as r:
        assert r.status == 409 and "start it first" in await r.text()  # a paused guest cannot let go of a disk
    await occi.act(compute, "start")
    attrs = await occi.wait_state(compute, "active")
    assert await occi.ssh(attrs, FIND_BY_SERIAL.format(serial=serial), until=bool, timeout=60) == "vdb 131072\n"

    # everything goes, and is 404 afterwards: deleting the compute frees its storage
    await occi.delete(compute)
    await occi.delete(storage)
    for path in (link, storage, compute):
        assert (await occi.get(path))[0] == 404, path
