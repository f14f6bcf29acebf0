#!/usr/bin/env python3
"""Boot-time baseline of the tiny image: how long from "start" to a command's first output byte.

    python bench/boot_baseline.py --images var/images [--runs N] [--image tiny]

Two ways of starting the same guest (same vmlinux, initrd, kernel command line, a fresh qcow2
overlay each run, the same virtio-serial channels, TCG or KVM as the host allows):

(a) ``measure_direct_qemu``: qemu-system-x86_64 started directly;
(b) ``measure_direct_libvirt``: libvirt ``createXML`` (transient domain) with the XML of
    services/hypervisor/drivers/libvirt/domain_xml.py.

Each run records ``start`` (QEMU spawned / createXML returned), ``ready`` (READY from the guest
agent, after PING) and ``first_output`` (first stdout byte of ``echo``, sent right after READY),
all in seconds from just before the start. Prints p50/p95 as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.hypervisor.drivers.base import DomainSpec, Stdout
from services.hypervisor.drivers.kvm import TCG_KERNEL_ARGS, detect_host_virtualization
from services.hypervisor.drivers.libvirt.domain_xml import ChannelPaths, DomainXmlOptions, domain_xml
from services.hypervisor.drivers.libvirt.guest_channel import VirtioSerialChannel


@dataclass(frozen=True)
class BootTiming:
    start: float
    ready: float
    first_output: float


@dataclass(frozen=True)
class Image:
    directory: Path
    cmdline: str
    memory_mib: int

    @classmethod
    def load(cls, directory: Path) -> Image:
        manifest = json.loads((directory / "manifest.json").read_text())
        return cls(directory.resolve(), manifest["cmdline"], int(manifest.get("min_memory_mib", 128)))

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinux"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"


def _overlay(image: Image, path: Path) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.disk), "-F", "qcow2", str(path)],
        check=True,
    )


async def _time_guest(channel: VirtioSerialChannel, t0: float, started: float, timeout: float) -> BootTiming:
    ready = await channel.wait_ready(timeout)
    del ready
    t_ready = time.monotonic() - t0
    first = None
    async for event in channel.exec("echo first-output"):
        if first is None and isinstance(event, Stdout):
            first = time.monotonic() - t0
    assert first is not None, "the guest printed nothing"
    return BootTiming(start=started, ready=t_ready, first_output=first)


def qemu_command(
    image: Image, overlay: Path, channels: ChannelPaths, console_log: Path, virtualization: str, cmdline: str
) -> list[str]:
    """The direct QEMU equivalent of the libvirt domain."""
    cpu = "host" if virtualization == "kvm" else "qemu64"
    cmd = [
        "qemu-system-x86_64", "-machine", "pc", "-accel", "kvm" if virtualization == "kvm" else "tcg",
        "-cpu", cpu, "-m", str(image.memory_mib), "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", cmdline,
        "-drive", f"file={overlay},if=none,id=disk0,format=qcow2,cache=unsafe",
        "-device", "virtio-blk-pci,drive=disk0",
        "-serial", f"file:{console_log}",
        "-device", "virtio-serial-pci",
    ]  # fmt: skip
    for index, (name, path) in enumerate(channels.by_name().items()):
        cmd += [
            "-chardev", f"socket,id=ch{index},path={path},server=on,wait=off",
            "-device", f"virtserialport,chardev=ch{index},name={name}",
        ]  # fmt: skip
    return cmd


async def measure_direct_qemu(image_dir: Path, runs: int = 5, timeout: float = 60.0) -> list[BootTiming]:
    """(a): QEMU started directly, runs times; one BootTiming per run."""
    image = Image.load(image_dir)
    virtualization, _ = detect_host_virtualization()
    timings = []
    for run in range(runs):
        with tempfile.TemporaryDirectory(prefix="wnodes-bench-") as tmp:
            work = Path(tmp)
            overlay = work / "overlay.qcow2"
            _overlay(image, overlay)
            channels = ChannelPaths.in_dir(work)
            cmdline = f"{image.cmdline} wnodes.hostname=bench-qemu-{run}"
            if virtualization == "qemu":
                cmdline += f" {TCG_KERNEL_ARGS}"
            cmd = qemu_command(image, overlay, channels, work / "console.log", virtualization, cmdline)
            t0 = time.monotonic()
            proc = await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.DEVNULL)
            channel = VirtioSerialChannel(channels, name=f"bench-qemu-{run}")
            try:
                timings.append(await _time_guest(channel, t0, time.monotonic() - t0, timeout))
            finally:
                await channel.close()
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
    return timings


async def measure_direct_libvirt(
    image_dir: Path, runs: int = 5, uri: str = "qemu:///system", timeout: float = 60.0
) -> list[BootTiming]:
    """(b): libvirt createXML (transient domain) with domain_xml.py's XML; one BootTiming per run."""
    import libvirt

    image = Image.load(image_dir)
    virtualization, _ = detect_host_virtualization()
    conn = await asyncio.to_thread(libvirt.open, uri)
    timings = []
    try:
        for run in range(runs):
            work = Path(tempfile.mkdtemp(prefix="wnodes-bench-"))
            os.chmod(work, 0o755)  # libvirt's QEMU user opens the overlay
            domain = None
            try:
                overlay = work / "overlay.qcow2"
                _overlay(image, overlay)
                channels = ChannelPaths.in_dir(work)
                spec = DomainSpec(
                    vm_id=f"bench-{os.getpid()}-{run}",
                    vcpu_count=1,
                    memory_mib=image.memory_mib,
                    disk_path=overlay,
                    hostname=f"bench-{run}",
                    mac_address="52:54:00:00:00:01",
                    kernel_path=image.kernel,
                    initrd_path=image.initrd,
                    cmdline=f"{image.cmdline} wnodes.hostname=bench-{run}"
                    + (f" {TCG_KERNEL_ARGS}" if virtualization == "qemu" else ""),
                )
                xml = domain_xml(
                    spec,
                    name=f"wnodes-bench-{spec.vm_id}",
                    options=DomainXmlOptions(virtualization=virtualization),
                    channels=channels,
                    console_log=work / "console.log",
                )
                t0 = time.monotonic()
                domain = await asyncio.to_thread(conn.createXML, xml, 0)
                channel = VirtioSerialChannel(channels, name=spec.vm_id)
                try:
                    timings.append(await _time_guest(channel, t0, time.monotonic() - t0, timeout))
                finally:
                    await channel.close()
            finally:
                if domain is not None:
                    try:
                        await asyncio.to_thread(domain.destroy)
                    except libvirt.libvirtError:
                        pass
                shutil.rmtree(work, ignore_errors=True)
    finally:
        await asyncio.to_thread(conn.close)
    return timings


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def summarize(timings: Sequence[BootTiming]) -> dict[str, dict[str, float]]:
    summary = {}
    for key in ("start", "ready", "first_output"):
        values = [getattr(t, key) for t in timings]
        summary[key] = {
            "p50": round(statistics.median(values), 3),
            "p95": round(percentile(values, 95), 3),
            "min": round(min(values), 3),
            "max": round(max(values), 3),
        }
    return summary


async def _main(args: argparse.Namespace) -> dict[str, object]:
    image_dir = args.images / args.image
    virtualization, reason = detect_host_virtualization()
    result: dict[str, object] = {
        "image": args.image,
        "runs": args.runs,
        "virtualization": virtualization,
        "virtualization_reason": reason,
    }
    # Interleaved, so that drifting host load hits both alike.
    direct: list[BootTiming] = []
    via_libvirt: list[BootTiming] = []
    for _ in range(args.runs):
        if args.mode in ("both", "qemu"):
            direct += await measure_direct_qemu(image_dir, 1)
        if args.mode in ("both", "libvirt"):
            via_libvirt += await measure_direct_libvirt(image_dir, 1, args.uri)
    if direct:
        result["direct_qemu"] = summarize(direct)
    if via_libvirt:
        result["libvirt_createxml"] = summarize(via_libvirt)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--images", type=Path, default=Path("var/images"), help="build.py's --out")
    parser.add_argument("--image", default="tiny")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mode", choices=("both", "qemu", "libvirt"), default="both")
    parser.add_argument("--uri", default="qemu:///system")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_main(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
