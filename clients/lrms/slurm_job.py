"""The Slurm side of the LRMS contract: the program the wrapped batch script runs.

    python -m clients.lrms.slurm_job --config wnodes_lrms.json --image tiny < script

Reads the job's allocation from Slurm's environment (SLURM_JOB_ID, SLURMD_NODENAME,
SLURM_CPUS_ON_NODE, SLURM_MEM_PER_NODE / SLURM_MEM_PER_CPU), runs the script in a VM of the
image pinned to this node, and records the VM in the job's Comment for `scontrol show job`.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shlex
import subprocess
import sys
from pathlib import Path

from clients.lrms.run_job import JobRunner, JobSpec, RecyclePolicy
from clients.wnodes_client import Client


def memory_mib(env: dict[str, str], cpus: int, default: int) -> int:
    if env.get("SLURM_MEM_PER_NODE"):
        return int(env["SLURM_MEM_PER_NODE"])
    if env.get("SLURM_MEM_PER_CPU"):
        return int(env["SLURM_MEM_PER_CPU"]) * cpus
    return default


# The job's environment a script may rely on; host paths and the user's shell setup are not passed.
PASSED_ENV_PREFIXES = ("SLURM_", "SBATCH_")
PASSED_ENV = ("USER", "LOGNAME", "LANG", "TZ")


def job_environment(env: dict[str, str]) -> str:
    """Shell lines that give the script in the VM the job's Slurm environment (SLURM_JOB_ID, ...)."""
    names = sorted(k for k in env if k.startswith(PASSED_ENV_PREFIXES) or k in PASSED_ENV)
    return "".join(f"export {k}={shlex.quote(env[k])}\n" for k in names if k.replace("_", "").isalnum())


def job_spec(env: dict[str, str], image: str, script: str, config: dict[str, object]) -> JobSpec:
    cpus = int(env.get("SLURM_CPUS_ON_NODE") or 1)
    uid = os.getuid()
    user = pwd.getpwuid(uid).pw_name
    vo_map = config.get("vo_by_user", {})
    assert isinstance(vo_map, dict)
    job_id = env.get("SLURM_JOB_ID", "0")
    node = env.get("SLURMD_NODENAME", "")
    return JobSpec(
        job_id=job_id,
        image=image,
        script=job_environment(env) + script,
        vcpu_count=cpus,
        memory_mib=max(128, memory_mib(env, cpus, int(str(config.get("default_memory_mib", 256))))),
        uid=uid,
        user=user,
        vo=str(vo_map.get(user, config.get("default_vo", "wnodes"))),
        hypervisor=f"hypervisors/{node}" if node else "",
        # One VM per job run: a requeued job (new restart count) gets a new VM, a retried call the same one.
        request_id=f"slurm-{env.get('SLURM_CLUSTER_NAME', 'cluster')}-{job_id}-{env.get('SLURM_RESTART_COUNT', '0')}",
    )


def record_in_job(job_id: str, image: str, vm_name: str, image_version: str, hypervisor: str) -> None:
    """Shows which VM and image the job ran in, in `scontrol show job` (Comment)."""
    comment = f"wnodes image={image} version={image_version} vm={vm_name} hypervisor={hypervisor}"
    try:
        subprocess.run(["scontrol", "update", f"JobId={job_id}", f"Comment={comment}"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:  # bookkeeping only: never fail the job for it
        sys.stderr.write(f"wnodes: could not record the VM in the job's comment: {exc}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="wnodes-slurm-job", description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--config", type=Path, required=True, help="JSON written by the deployment (gateway, VO map, policy)")
    ap.add_argument("--image", required=True)
    args = ap.parse_args(argv)
    config = json.loads(args.config.read_text())
    script = sys.stdin.read()
    job = job_spec(dict(os.environ), args.image, script, config)
    with Client(str(config["gateway"]), user=job.user, vo=job.vo) as client:
        # Recycling is a per-partition site policy: {"recycle": {"<partition>": {"max_reuse": ..}}}.
        by_partition = config.get("recycle") or {}
        assert isinstance(by_partition, dict)
        policy = by_partition.get(os.environ.get("SLURM_JOB_PARTITION", ""), {})
        recycle = RecyclePolicy(int(policy.get("max_reuse", 0)), float(policy.get("idle_timeout_s", 300)))
        runner = JobRunner(client, sys.stdout.buffer, sys.stderr.buffer, recycle)
        runner.install_signal_handlers()
        result = runner.run(job, on_placed=lambda vm, version: record_in_job(job.job_id, job.image, vm, version, job.hypervisor))
    if result.error:
        sys.stderr.write(f"wnodes: job {job.job_id} failed in the virtualisation layer: {result.error}\n")
        if config.get("on_vm_failure") == "requeue" and os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
            subprocess.run(["scontrol", "requeue", job.job_id], capture_output=True, timeout=30)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
