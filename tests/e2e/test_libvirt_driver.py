"""LibvirtDriver against a real libvirtd (qemu:///system) and the images deploy/images/build.py builds.

Needs libvirtd running (deploy/scripts/libvirt_up.sh) and var/images/{tiny,debian12} (or
$WNODES_IMAGES). Domains here are named ``wnodestest-<pid>-...`` so they never mix with the
``wnodes-`` domains of a running stack.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.hypervisor.drivers.base import (
    DomainSpec,
    ExecEvent,
    Exit,
    GuestChannel,
    HypervisorDriver,
    Stderr,
    Stdout,
    new_exec_key,
)
from services.hypervisor.drivers.libvirt import LibvirtDriver

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
IMAGES = Path(os.environ.get("WNODES_IMAGES", REPO / "var" / "images"))
URI = "qemu:///system"
PREFIX = f"wnodestest-{os.getpid()}-"
BOOT_TIMEOUT = 90.0


def conforms(driver: LibvirtDriver) -> HypervisorDriver:
    """mypy checks that LibvirtDriver implements the HypervisorDriver protocol."""
    return driver


def image(name: str) -> tuple[Path, dict[str, object]]:
    directory = IMAGES / name
    manifest = directory / "manifest.json"
    if not manifest.exists():
        pytest.fail(f"{manifest} is missing: build it with 'python deploy/images/build.py --out {IMAGES}'")
    return directory, json.loads(manifest.read_text())


@pytest.fixture(scope="module")
def work_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are 0700 and libvirt's QEMU user must reach the
    # overlays (the driver runs QEMU as that user by default).
    path = Path(tempfile.mkdtemp(prefix="wnodes-e2e-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def driver(work_dir: Path) -> AsyncIterator[LibvirtDriver]:
    drv = LibvirtDriver(URI, PREFIX, run_dir=work_dir / "run")
    try:
        await drv.list()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"libvirtd does not answer on {URI} ({exc}): run deploy/scripts/libvirt_up.sh")
    yield drv
    # Leave nothing behind, whatever the test did.
    for info in await drv.list():
        await drv.destroy(info.vm_id)
    await drv.close()


def make_spec(work_dir: Path, image_name: str, vm_id: str, memory_mib: int = 128, vcpu_count: int = 1) -> DomainSpec:
    directory, manifest = image(image_name)
    overlay = work_dir / f"{vm_id}.qcow2"
    overlay.unlink(missing_ok=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(directory / "disk.qcow2"), "-F", "qcow2", str(overlay)],
        check=True,
    )
    return DomainSpec(
        vm_id=vm_id,
        vcpu_count=vcpu_count,
        memory_mib=memory_mib,
        disk_path=overlay,
        hostname=f"{vm_id}.test",
        mac_address="52:54:00:00:00:01",
        kernel_path=directory / "vmlinux",
        initrd_path=directory / "initrd.img",
        cmdline=f"{manifest['cmdline']} wnodes.hostname={vm_id}.test",
    )


async def run(channel: GuestChannel, command: str, uid: int = 0) -> tuple[bytes, bytes, int]:
    return await collect(channel.exec(command, uid))


async def collect(stream: AsyncIterator[ExecEvent]) -> tuple[bytes, bytes, int]:
    out, err, codes = b"", b"", []
    events: list[ExecEvent] = []
    async for event in stream:
        events.append(event)
        if isinstance(event, Stdout):
            out += event.data
        elif isinstance(event, Stderr):
            err += event.data
        elif isinstance(event, Exit):
            codes.append(event.code)
    assert len(codes) == 1 and isinstance(events[-1], Exit), f"expected exactly one final Exit: {events}"
    return out, err, codes[0]


def debian_kernel_release() -> str:
    _, manifest = image("tiny")
    return str(manifest["kernel_release"])


async def test_host_resources(driver: LibvirtDriver) -> None:
    resources = await driver.host_resources()
    assert resources.vcpu_count >= 1 and resources.memory_mib >= 512
    cpuinfo = Path("/proc/cpuinfo").read_text()
    hardware = " vmx" in cpuinfo or " svm" in cpuinfo
    assert resources.virtualization == ("kvm" if hardware and os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu")


async def test_tiny_lifecycle_and_crash_adoption(driver: LibvirtDriver, work_dir: Path) -> None:
    # Prepare
    vm_id = "tiny1"
    spec = make_spec(work_dir, "tiny", vm_id)
    kernel = debian_kernel_release()
    assert kernel != platform.release(), "the guest kernel must differ from the host's to prove anything"

    # Execute: start and wait for the guest agent
    started = time.monotonic()
    await driver.define_and_start(spec)
    ready = await driver.guest(vm_id).wait_ready(BOOT_TIMEOUT)
    boot_seconds = time.monotonic() - started

    # Assert
    assert ready.kernel_release == kernel
    print(f"tiny: define_and_start to READY in {boot_seconds:.2f} s")
    assert [(i.vm_id, i.running) for i in await driver.list()] == [(vm_id, True)]
    assert driver.guest(vm_id) is driver.guest(vm_id)
    with pytest.raises(Exception, match="already running"):
        await driver.define_and_start(spec)

    out, err, code = await run(driver.guest(vm_id), "uname -r; echo err >&2; exit 3")
    assert (out, err, code) == (f"{kernel}\n".encode(), b"err\n", 3)
    out, err, code = await run(driver.guest(vm_id), "hostname; echo marker > /tmp/mark; id -u")
    assert (out, err, code) == (f"{vm_id}.test\n0\n".encode(), b"", 0)
    out, _, code = await run(driver.guest(vm_id), "id -un; pwd", uid=1000)
    assert (out, code) == (b"wnodes\n/home/wnodes\n", 0)

    # Execute: the agent crashes while a command runs. A separate process connects to the guest,
    # starts a command and is SIGKILLed; the first driver only lets go of the channel first
    # (QEMU serves one host end per socket at a time).
    await driver.guest(vm_id).close()
    key = new_exec_key()
    crashed = subprocess.Popen(
        [sys.executable, "-c", CRASHING_AGENT, str(work_dir / "run"), PREFIX, vm_id, key],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert crashed.stdout is not None
        assert crashed.stdout.readline().strip() == "exec started"
    finally:
        crashed.send_signal(signal.SIGKILL)
        crashed.wait()
        crashed.stdout.close()  # type: ignore[union-attr]

    adopter = LibvirtDriver(URI, PREFIX, run_dir=work_dir / "run")
    try:
        infos = await adopter.list()
        ready = await adopter.guest(vm_id).wait_ready(BOOT_TIMEOUT)
        out, err, code = await run(adopter.guest(vm_id), "cat /tmp/mark; echo e >&2")
        late = await collect(adopter.guest(vm_id).attach(key))

        # Assert: same guest; the output of the killed agent's command does not leak into
        # another command, and following its key gets all of it
        assert [(i.vm_id, i.running) for i in infos] == [(vm_id, True)]
        assert ready.kernel_release == kernel
        assert (out, err, code) == (b"marker\n", b"e\n", 0)
        assert late == (b"early\nlate output of a killed agent\n", b"late\n", 0)

        # Execute: destroy, twice
        await adopter.destroy(vm_id)
        await adopter.destroy(vm_id)

        # Assert
        assert await adopter.list() == []
        assert await driver.list() == []
        assert not (work_dir / "run" / vm_id).exists()
    finally:
        await adopter.close()


CRASHING_AGENT = """
import asyncio, sys
from pathlib import Path
from services.hypervisor.drivers.libvirt import LibvirtDriver

async def main():
    driver = LibvirtDriver("qemu:///system", sys.argv[2], run_dir=Path(sys.argv[1]))
    guest = driver.guest(sys.argv[3])
    await guest.wait_ready(60)
    events = guest.exec("echo early; sleep 1; echo late output of a killed agent; echo late >&2", key=sys.argv[4])
    task = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.3)
    print("exec started", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_destroy_missing_domain_is_fine(driver: LibvirtDriver) -> None:
    await driver.destroy("never-existed")
    assert await driver.list() == []


async def test_failed_start_leaves_nothing(driver: LibvirtDriver, work_dir: Path) -> None:
    # Prepare: a kernel that does not exist
    spec = make_spec(work_dir, "tiny", "broken")
    spec = dataclasses.replace(spec, kernel_path=work_dir / "no-such-vmlinux")

    # Execute / Assert
    with pytest.raises(Exception, match="broken"):
        await driver.define_and_start(spec)
    assert await driver.list() == []
    assert not (work_dir / "run" / "broken").exists()


async def test_guest_poweroff_shows_as_not_running(driver: LibvirtDriver, work_dir: Path) -> None:
    # Prepare
    spec = make_spec(work_dir, "tiny", "off1")
    await driver.define_and_start(spec)
    await driver.guest("off1").wait_ready(BOOT_TIMEOUT)

    # Execute: the guest powers itself off
    events = driver.guest("off1").exec("poweroff -f")
    with pytest.raises(Exception, match="closed|failed"):
        async for _ in events:
            pass
    deadline = time.monotonic() + 30
    # "shutdown" (QEMU still exiting) comes before "shutoff" on a loaded host.
    while (infos := await driver.list()) and (infos[0].running or infos[0].detail == "shutdown"):
        assert time.monotonic() < deadline, f"domain still running: {infos}"
        await asyncio.sleep(0.1)

    # Assert: still defined (so the agent sees it ended) until destroyed
    assert [(i.vm_id, i.running, i.detail) for i in infos] == [("off1", False, "shutoff")]
    await driver.destroy("off1")
    assert await driver.list() == []


async def test_debian12_boots(driver: LibvirtDriver, work_dir: Path) -> None:
    # Prepare
    spec = make_spec(work_dir, "debian12", "deb1", memory_mib=256, vcpu_count=2)

    # Execute
    started = time.monotonic()
    await driver.define_and_start(spec)
    ready = await driver.guest("deb1").wait_ready(BOOT_TIMEOUT)
    print(f"debian12: define_and_start to READY in {time.monotonic() - started:.2f} s")
    out, err, code = await run(driver.guest("deb1"), ". /etc/os-release; echo $ID $VERSION_ID; nproc; readlink /bin/sh")
    out_user, _, code_user = await run(driver.guest("deb1"), "id -u; echo $HOME", uid=65534)

    # Assert
    assert ready.kernel_release == debian_kernel_release()
    assert (out, err, code) == (b"debian 12\n2\ndash\n", b"", 0)
    assert (out_user, code_user) == (b"65534\n/nonexistent\n", 0)
    await check_guest_agent(driver.guest("deb1"))  # under dash
    await driver.destroy("deb1")
    assert await driver.list() == []


async def check_guest_agent(guest: GuestChannel) -> None:
    """What the guest agent must do under any /bin/sh: large output whole (frames are cut at
    1 MiB), commands side by side (the agent stays responsive while one runs), no zombies."""
    big = await run(guest, "head -c 1500000 /dev/zero | tr '\\0' x; echo; echo done >&2")
    assert big == (b"x" * 1_500_000 + b"\n", b"done\n", 0)
    slow, quick = await asyncio.gather(run(guest, "sleep 1; echo slow"), run(guest, "echo quick; exit 2"))
    assert (slow, quick) == ((b"slow\n", b"", 0), (b"quick\n", b"", 2))
    for _ in range(8):
        await run(guest, "true")
    out, _, _ = await run(guest, "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l")
    # The last command's shell may not be reaped yet; a dozen commands must not leave a dozen.
    assert int(out) <= 2, f"zombies pile up in the guest: {out!r}"


async def test_tiny_guest_agent(driver: LibvirtDriver, work_dir: Path) -> None:
    spec = make_spec(work_dir, "tiny", "agent1")
    await driver.define_and_start(spec)
    await driver.guest("agent1").wait_ready(BOOT_TIMEOUT)
    await check_guest_agent(driver.guest("agent1"))  # under busybox ash
    await driver.destroy("agent1")
