"""Batch jobs through real Slurm daemons (munged, slurmctld, slurmd) into real VMs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.wnodes_client import Client
from deploy.stack.stack import Stack
from tests import stacks
from tests.e2e.test_run_in_vm import domains

pytestmark = pytest.mark.e2e
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


def slurm_env(stack: Stack) -> dict[str, str]:
    state = stack.state
    assert state is not None and state.slurm_conf
    return {**os.environ, "SLURM_CONF": state.slurm_conf}


def sbatch(stack: Stack, workdir: Path, script: str, *opts: str) -> subprocess.CompletedProcess[str]:
    path = workdir / f"job-{time.monotonic_ns()}.sh"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o644)
    return subprocess.run(["sbatch", "--parsable", "-D", str(workdir), *opts, str(path)], capture_output=True, text=True,
                          env=slurm_env(stack), timeout=60)


def submit(stack: Stack, workdir: Path, script: str, *opts: str) -> str:
    result = sbatch(stack, workdir, script, *opts)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def job_field(stack: Stack, job: str, name: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=slurm_env(stack), timeout=30).stdout
    for line in out.splitlines():
        if line.strip().startswith("Comment=") and name == "Comment":  # the comment holds spaces
            return line.strip().removeprefix("Comment=")
    for word in out.split():
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return ""


def wait_done(stack: Stack, jobs: list[str], timeout: float = 300) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        states = {j: job_field(stack, j, "JobState") for j in jobs}
        if all(s in DONE for s in states.values()):
            return states
        assert time.monotonic() < deadline, f"jobs not done: {states}"
        time.sleep(0.5)


def output(workdir: Path, job: str) -> str:
    return (workdir / f"slurm-{job}.out").read_text()


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Jobs of other users write their output here: a world-writable dir outside pytest's 0700 tree.
    path = Path(tempfile.mkdtemp(prefix="wnodes-jobs-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_each_job_sees_its_own_image_beside_a_bare_metal_job(vm_stack: Stack, workdir: Path) -> None:
    script = "grep ^ID= /etc/os-release; uname -r"
    tiny = submit(vm_stack, workdir, script, "--constraint=img_tiny")
    debian = submit(vm_stack, workdir, script, "--constraint=img_debian12", "--mem=512")
    mapped = submit(vm_stack, workdir, script, "--partition=vm-debian12")  # the site's static map
    bare = submit(vm_stack, workdir, script)
    assert wait_done(vm_stack, [tiny, debian, mapped, bare]) == dict.fromkeys([tiny, debian, mapped, bare], "COMPLETED")
    host_kernel = os.uname().release
    for job, os_id in ((tiny, "ID=wnodes-tiny"), (debian, "ID=debian"), (mapped, "ID=debian")):
        text = output(workdir, job)
        assert os_id in text.splitlines(), text
        assert text.rstrip().endswith("-amd64") and host_kernel not in text, text
        comment = job_field(vm_stack, job, "Comment")
        assert "vm=virtualMachines/vm-" in comment and "hypervisor=hypervisors/hv0" in comment, comment
    assert output(workdir, bare).strip().endswith(host_kernel)
    assert "wnodes" not in output(workdir, bare)


def test_exit_codes_are_the_jobs(vm_stack: Stack, workdir: Path) -> None:
    ok = submit(vm_stack, workdir, 'echo "id=$SLURM_JOB_ID"; exit 0', "--constraint=img_tiny")
    seven = submit(vm_stack, workdir, "echo before; exit 7", "--constraint=img_tiny")
    wait_done(vm_stack, [ok, seven])
    assert job_field(vm_stack, ok, "ExitCode") == "0:0"
    assert f"id={ok}" in output(workdir, ok).splitlines(), "the job's Slurm environment did not reach the VM"
    assert job_field(vm_stack, seven, "ExitCode") == "7:0"
    assert "before" in output(workdir, seven)
    # ... and in accounting: slurmdbd records what slurmctld saw (it may lag a moment).
    deadline = time.monotonic() + 30
    while (accounted := sacct(vm_stack, ok, seven)) != {ok: ("COMPLETED", "0:0"), seven: ("FAILED", "7:0")}:
        assert time.monotonic() < deadline, f"sacct says {accounted}"
        time.sleep(0.5)


def sacct(stack: Stack, *jobs: str) -> dict[str, tuple[str, str]]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode", "-j", ",".join(jobs)],
                         capture_output=True, text=True, env=slurm_env(stack), timeout=30).stdout
    return {job: (state, code) for job, state, code in (line.split("|") for line in out.splitlines() if line)}


def test_job_runs_as_the_submitting_user(vm_stack: Stack, workdir: Path) -> None:
    # The batch step runs the LRMS program as the job's owner: its interpreter must be theirs to run.
    probe = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c", "import clients.lrms.slurm_job"],
                           capture_output=True, text=True, cwd="/")
    assert probe.returncode == 0, f"an unprivileged user cannot run {sys.executable}: {probe.stderr}"
    job = submit(vm_stack, workdir, "id -u; touch /tmp/f; stat -c %u /tmp/f", "--constraint=img_tiny", "--uid=nobody", "--gid=nogroup")
    assert wait_done(vm_stack, [job]) == {job: "COMPLETED"}, output(workdir, job)
    lines = output(workdir, job).splitlines()
    assert lines[-2:] == ["65534", "65534"], lines


def test_scancel_tears_the_vm_down(vm_stack: Stack, workdir: Path) -> None:
    job = submit(vm_stack, workdir, "echo started; sleep 300", "--constraint=img_tiny")
    deadline = time.monotonic() + 120
    while "started" not in (output(workdir, job) if (workdir / f"slurm-{job}.out").exists() else ""):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
    assert len(domains(vm_stack)) == 1
    subprocess.run(["scancel", job], env=slurm_env(vm_stack), check=True, timeout=30)
    deadline = time.monotonic() + 15
    while domains(vm_stack):
        assert time.monotonic() < deadline, "the VM outlived its cancelled job"
        time.sleep(0.2)
    assert wait_done(vm_stack, [job]) == {job: "CANCELLED"}


def test_ten_jobs_at_once_each_in_its_own_vm(vm_stack: Stack, workdir: Path) -> None:
    jobs = [submit(vm_stack, workdir, "hostname; sleep 1", "--constraint=img_tiny") for _ in range(10)]
    state = vm_stack.state
    assert state is not None
    peak = 0
    with Client(state.gateway, user="ops", vo="wnodes", roles=["admin"]) as admin:
        deadline = time.monotonic() + 300
        while not all(job_field(vm_stack, j, "JobState") in DONE for j in jobs):
            host = admin.get_hypervisor("hv0")
            peak = max(peak, host.vcpus_used)
            assert host.vcpus_used <= host.vcpu_count and host.memory_mib_used <= host.memory_mib
            assert time.monotonic() < deadline
            time.sleep(0.3)
    assert {job_field(vm_stack, j, "JobState") for j in jobs} == {"COMPLETED"}
    hostnames = {output(workdir, j).strip().splitlines()[-1] for j in jobs}
    assert len(hostnames) == 10 and all(h.startswith("vwn-") for h in hostnames)
    assert peak >= 2, "the jobs never ran side by side"
    assert domains(vm_stack) == []


def test_unknown_image_is_refused_at_submission(vm_stack: Stack, workdir: Path) -> None:
    result = sbatch(vm_stack, workdir, "true", "--constraint=img_nosuch")
    assert result.returncode != 0
    assert "unknown image 'nosuch'" in result.stderr and "valid images: debian12, tiny" in result.stderr


def test_vm_gets_the_jobs_cores_and_memory(vm_stack: Stack, workdir: Path) -> None:
    job = submit(vm_stack, workdir, "nproc; grep MemTotal /proc/meminfo", "--constraint=img_tiny", "--cpus-per-task=2", "--mem=384")
    assert wait_done(vm_stack, [job]) == {job: "COMPLETED"}, output(workdir, job)
    lines = output(workdir, job).splitlines()
    assert lines[-2] == "2"
    mem_kib = int(lines[-1].split()[1])
    assert 300 * 1024 < mem_kib <= 384 * 1024, lines[-1]  # the guest kernel keeps a little for itself


def test_time_limit_holds_and_the_vm_goes(vm_stack: Stack, workdir: Path) -> None:
    job = submit(vm_stack, workdir, "echo started; sleep 600", "--constraint=img_tiny", "--time=1")
    assert wait_done(vm_stack, [job], timeout=240) == {job: "TIMEOUT"}, output(workdir, job)
    deadline = time.monotonic() + 15
    while domains(vm_stack):
        assert time.monotonic() < deadline, "the VM outlived its timed-out job"
        time.sleep(0.2)


def test_a_vm_that_cannot_boot_fails_the_job_with_the_reason(vm_stack: Stack, workdir: Path, tmp_path: Path) -> None:
    state = vm_stack.state
    assert state is not None
    tiny = stacks.IMAGES / "tiny"
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"this is not a kernel\n" * 1000)
    with Client(state.gateway, user="ops", vo="wnodes", roles=["admin"]) as admin:
        admin.upload_image("broken", tiny / "disk.qcow2", kernel=kernel, initrd=tiny / "initrd.img", visibility="PUBLIC")
    assert "broken" in vm_stack.sync_slurm_images()
    job = submit(vm_stack, workdir, "echo never", "--constraint=img_broken")
    assert wait_done(vm_stack, [job]) == {job: "FAILED"}
    text = output(workdir, job)
    assert "failed in the virtualisation layer" in text and "VM_FAILED" in text, text
    assert "never" not in text
    assert job_field(vm_stack, job, "ExitCode") == "1:0"
    assert domains(vm_stack) == []

    # The site policy may instead requeue the job once (a boot failure may be the host's fault).
    config = Path(state.slurm_conf).parent / "wnodes_lrms.json"
    saved = config.read_text()
    config.write_text(json.dumps({**json.loads(saved), "on_vm_failure": "requeue"}))
    try:
        requeued = submit(vm_stack, workdir, "echo never", "--constraint=img_broken")
        deadline = time.monotonic() + 120
        while job_field(vm_stack, requeued, "Restarts") != "1":
            assert time.monotonic() < deadline, f"never requeued: {job_field(vm_stack, requeued, 'JobState')}"
            time.sleep(0.5)
        assert job_field(vm_stack, requeued, "JobState") in {"PENDING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING", "RUNNING", "COMPLETING"}
        assert "failed in the virtualisation layer" in output(workdir, requeued)
    finally:
        config.write_text(saved)
        subprocess.run(["scancel", requeued], env=slurm_env(vm_stack), timeout=30)
    deadline = time.monotonic() + 30
    while domains(vm_stack):
        assert time.monotonic() < deadline, "a VM of the requeued job leaked"
        time.sleep(0.2)


def test_recycling_reuses_the_vm_and_cleans_the_users_files(vm_stack: Stack, workdir: Path) -> None:
    # The dev stack's "recycle" partition keeps a job's VM for the next job of the same user and
    # image (max 3 reuses, 5 s idle timeout). Root's jobs are never recycled.
    as_nobody = ("-p", "recycle", "--constraint=img_tiny", "--uid=nobody", "--gid=nogroup")
    first = submit(vm_stack, workdir, "hostname; echo secret > /tmp/mine; sleep 30 & echo started", *as_nobody)
    assert wait_done(vm_stack, [first]) == {first: "COMPLETED"}, output(workdir, first)
    second = submit(vm_stack, workdir, "hostname; ls /tmp; pgrep sleep || echo no-leftover-process", *as_nobody)
    assert wait_done(vm_stack, [second]) == {second: "COMPLETED"}, output(workdir, second)
    out1, out2 = output(workdir, first), output(workdir, second)
    host1 = next(line for line in out1.splitlines() if line.startswith("vwn-"))
    assert host1 in out2.splitlines(), "the second job did not run in the recycled VM"
    assert "(recycled)" in out2
    assert "mine" not in out2 and "no-leftover-process" in out2
    as_root = submit(vm_stack, workdir, "hostname", "-p", "recycle", "--constraint=img_tiny")
    assert wait_done(vm_stack, [as_root]) == {as_root: "COMPLETED"}, output(workdir, as_root)
    assert host1 not in output(workdir, as_root) and "(recycled)" not in output(workdir, as_root)
    deadline = time.monotonic() + 30
    while domains(vm_stack):
        assert time.monotonic() < deadline, "the idle VM outlived its idle timeout"
        time.sleep(0.5)


def test_a_gateway_restart_under_a_running_job_loses_nothing(vm_stack: Stack, workdir: Path) -> None:
    job = submit(vm_stack, workdir, "for i in 1 2 3 4 5 6; do echo line-$i; sleep 1; done; exit 5", "--constraint=img_tiny")
    deadline = time.monotonic() + 120
    while "line-1" not in (output(workdir, job) if (workdir / f"slurm-{job}.out").exists() else ""):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    vm_stack.kill("gateway")
    time.sleep(1.5)  # output the job writes now waits in the agent
    vm_stack.restart("gateway")
    assert wait_done(vm_stack, [job]) == {job: "FAILED"}, output(workdir, job)
    assert job_field(vm_stack, job, "ExitCode") == "5:0"
    lines = [line for line in output(workdir, job).splitlines() if line.startswith("line-")]
    assert lines == [f"line-{i}" for i in range(1, 7)], output(workdir, job)


def test_an_agent_restart_under_a_running_job_loses_nothing(vm_stack: Stack, workdir: Path) -> None:
    # The agent is SIGKILLed mid-job and is down while the job writes. The guest logs the
    # output; the restarted agent keeps the VM, attaches to the log instead of running the command
    # again, and the job gets every line once and its exit code.
    job = submit(vm_stack, workdir, "for i in 1 2 3 4 5 6 7 8; do echo line-$i; sleep 0.5; done; exit 3", "--constraint=img_tiny")
    deadline = time.monotonic() + 120
    while "line-1" not in (output(workdir, job) if (workdir / f"slurm-{job}.out").exists() else ""):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    vm_stack.kill("hypervisor0")
    time.sleep(1.5)  # the job writes on while no agent listens
    vm_stack.restart("hypervisor0")
    assert wait_done(vm_stack, [job]) == {job: "FAILED"}, output(workdir, job)
    assert job_field(vm_stack, job, "ExitCode") == "3:0"
    lines = [line for line in output(workdir, job).splitlines() if line.startswith("line-")]
    assert lines == [f"line-{i}" for i in range(1, 9)], output(workdir, job)
    deadline = time.monotonic() + 30
    while domains(vm_stack):
        assert time.monotonic() < deadline, "the job's VM leaked"
        time.sleep(0.2)
