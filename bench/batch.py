"""Batch path: sbatch to the first line of the job's own output, bare-metal and in a VM through
WNoDeS, next to the bare VM boot (direct libvirt) measured in the same run; and jobs per minute
through one node with ten queued, in VMs and bare-metal."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.boot_baseline import measure_direct_libvirt
from bench.stats import percentile
from deploy.stack.stack import Stack


def _sbatch(env: dict[str, str], work: Path, script: Path, *opts: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", "-D", str(work), *opts, str(script)], capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip()


def _first_line(work: Path, job: str, marker: str, timeout: float = 120) -> None:
    path = work / f"slurm-{job}.out"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and marker in path.read_text():
            return
        time.sleep(0.01)
    raise TimeoutError(f"job {job} printed nothing in {timeout}s")


def _done(env: dict[str, str], jobs: list[str]) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", ",".join(jobs)], capture_output=True, text=True, env=env).stdout
    return not out.strip()


def _throughput(env: dict[str, str], work: Path, script: Path, opts: list[str], n: int = 10) -> float:
    start = time.monotonic()
    jobs = [_sbatch(env, work, script, *opts) for _ in range(n)]
    while not _done(env, jobs):
        time.sleep(0.1)
    return n / ((time.monotonic() - start) / 60)


def run(workdir: Path, images: Path, runs: int = 5) -> dict[str, object]:
    stack = Stack(workdir / "batch-stack")
    state = stack.up("libvirt", 1, images, with_slurm=True)
    env = {**os.environ, "SLURM_CONF": state.slurm_conf}
    work = Path(tempfile.mkdtemp(prefix="wnodes-bench-jobs-", dir="/tmp"))
    work.chmod(0o777)
    script = work / "job.sh"
    script.write_text("#!/bin/sh\necho first-line\n")
    try:
        bare, vm, boot = [], [], []
        for _ in range(runs):
            t = time.monotonic()
            _first_line(work, _sbatch(env, work, script), "first-line")
            bare.append(time.monotonic() - t)
            t = time.monotonic()
            _first_line(work, _sbatch(env, work, script, "--constraint=img_tiny"), "first-line")
            vm.append(time.monotonic() - t)
            boot += [b.first_output for b in asyncio.run(measure_direct_libvirt(images / "tiny", 1))]
        return {
            "runs": runs,
            "bare_metal_job_s": percentile(bare, 50),
            "vm_job_s": percentile(vm, 50),
            "bare_vm_boot_s": percentile(boot, 50),
            "lrms_overhead_s": percentile(vm, 50) - percentile(bare, 50) - percentile(boot, 50),
            "vm_jobs_per_minute": _throughput(env, work, script, ["--constraint=img_tiny"]),
            "bare_jobs_per_minute": _throughput(env, work, script, []),
        }
    finally:
        stack.down()
        subprocess.run(["rm", "-rf", str(work)], check=False)
