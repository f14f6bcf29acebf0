from __future__ import annotations

from clients.lrms.slurm_job import job_environment, job_spec, memory_mib


def test_memory_from_slurm_allocation() -> None:
    assert memory_mib({"SLURM_MEM_PER_NODE": "512"}, 2, 256) == 512
    assert memory_mib({"SLURM_MEM_PER_CPU": "300"}, 2, 256) == 600
    assert memory_mib({}, 2, 256) == 256


def test_job_environment_is_quoted_and_filtered() -> None:
    lines = job_environment({"SLURM_JOB_ID": "42", "SLURM_JOB_NAME": "a b'c", "HOME": "/root", "SLURM_BAD-NAME": "x"})
    assert lines == "export SLURM_JOB_ID=42\nexport SLURM_JOB_NAME='a b'\"'\"'c'\n"


def test_job_spec_pins_to_the_allocated_node_and_is_idempotent_per_run() -> None:
    env = {"SLURM_JOB_ID": "7", "SLURMD_NODENAME": "hv0", "SLURM_CPUS_ON_NODE": "2", "SLURM_MEM_PER_NODE": "384",
           "SLURM_CLUSTER_NAME": "wnodes", "SLURM_RESTART_COUNT": "1"}
    spec = job_spec(env, "tiny", "echo hi\n", {"gateway": "x", "vo_by_user": {}, "default_vo": "atlas"})
    assert (spec.hypervisor, spec.vcpu_count, spec.memory_mib, spec.vo) == ("hypervisors/hv0", 2, 384, "atlas")
    assert spec.request_id == "slurm-wnodes-7-1"
    assert spec.script.endswith("echo hi\n") and "export SLURM_JOB_ID=7\n" in spec.script
