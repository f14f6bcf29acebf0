"""Time to job: from the create request to the first byte of output from inside the VM, through
the whole stack, next to the same guest booted directly with QEMU and with libvirt, interleaved
in the same run so that drifting load hits all three alike."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.boot_baseline import measure_direct_libvirt, measure_direct_qemu
from bench.memory import rss_by_process
from bench.stats import percentile
from clients.wnodes_client import Client
from deploy.stack.stack import Stack


def _through_wnodes(client: Client, image: str) -> float:
    result = client.run(image, ["echo first-byte"], 1, 128 if image == "tiny" else 256)
    assert result.exit_code == 0 and result.stdout == b"first-byte\n", result
    assert result.seconds_to_first_output is not None
    return result.seconds_to_first_output


def run(workdir: Path, images: Path, runs: int = 10) -> dict[str, object]:
    stack = Stack(workdir / "vm-stack")
    state = stack.up("libvirt", 1, images)
    try:
        idle = rss_by_process(state)
        with Client(state.gateway, user="bench", vo="wnodes") as client:
            cold = _through_wnodes(client, "tiny")  # pulls the image into the host cache
            qemu: list[float] = []
            libvirt: list[float] = []
            wnodes: list[float] = []
            for _ in range(runs):
                qemu += [t.first_output for t in asyncio.run(measure_direct_qemu(images / "tiny", 1))]
                libvirt += [t.first_output for t in asyncio.run(measure_direct_libvirt(images / "tiny", 1))]
                wnodes.append(_through_wnodes(client, "tiny"))
            debian_cold = _through_wnodes(client, "debian12")
            debian = [_through_wnodes(client, "debian12") for _ in range(max(3, runs // 3))]
        return {
            "runs": runs,
            "tiny_cold_cache_s": cold,
            "direct_qemu": {"p50": percentile(qemu, 50), "p95": percentile(qemu, 95)},
            "direct_libvirt": {"p50": percentile(libvirt, 50), "p95": percentile(libvirt, 95)},
            "wnodes": {"p50": percentile(wnodes, 50), "p95": percentile(wnodes, 95)},
            "debian12_cold_cache_s": debian_cold,
            "debian12_wnodes": {"p50": percentile(debian, 50), "p95": percentile(debian, 95)},
            "rss_idle_mib": idle,
        }
    finally:
        stack.down()
