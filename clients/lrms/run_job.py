"""Runs one batch job's script in a fresh VM, through the WNoDeS gateway, as if it ran here.

The batch system's contract is kept: the script's stdout and stderr flow to this process's
stdout and stderr as they are written (so into the job's output files), its exit code becomes
ours (so the job's), and a termination signal (scancel, time limit) tears the VM down at once.
Nothing here knows Slurm: ``slurm_job.py`` maps Slurm's environment onto a ``JobSpec``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import BinaryIO

from clients.wnodes_client import Client, WnodesRpcError
from wnodes.v1 import virtual_machine_pb2

LOG = logging.getLogger("wnodes.lrms")
ACTIVE = virtual_machine_pb2.VirtualMachine.State.ACTIVE

EXIT_VM_FAILED = 1


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    image: str
    script: str
    vcpu_count: int
    memory_mib: int
    uid: int
    user: str
    vo: str
    hypervisor: str
    """The node the batch system allocated: the VM is pinned there."""
    request_id: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecyclePolicy:
    """A site may keep a job's VM for the next job of the same image and user on the node."""

    max_reuse: int = 0
    """How many more jobs one VM may serve (0: never recycle; every job gets a fresh VM)."""
    idle_timeout_s: float = 300.0
    """An idle VM is deleted (by the nameserver's reconciler) after this long without a job."""


# Files of the job's owner, and their processes, must not survive into the next job. Jobs run
# as root are never recycled (see reusable): their cleanup could not tell the job's files and
# processes from the guest's own.
CLEAN_COMMAND = (
    "pkill -9 -u {uid} 2>/dev/null; sleep 0.2; "
    "find / -xdev -user {uid} ! -type d -exec rm -f {{}} + 2>/dev/null; "
    "find /tmp /var/tmp -mindepth 1 -maxdepth 1 -exec rm -rf {{}} + 2>/dev/null; true"
)


@dataclass
class JobResult:
    exit_code: int
    vm_name: str = ""
    image_version: str = ""
    error: str = ""


class JobRunner:
    def __init__(self, client: Client, stdout: BinaryIO, stderr: BinaryIO, recycle: RecyclePolicy = RecyclePolicy()) -> None:
        self._client = client
        self._recycle = recycle
        self._stdout = stdout
        self._stderr = stderr
        self._vm_name = ""
        self._deleted = threading.Event()

    def install_signal_handlers(self) -> None:
        """scancel and time limits send SIGTERM (then SIGKILL after KillWait): delete the VM
        first, then end with the conventional 128+signal status."""

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self._stderr.write(f"wnodes: job terminated by signal {signum}; deleting {self._vm_name or 'its VM'}\n".encode())
            self._stderr.flush()
            self.delete_vm(wait=False)
            sys.exit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_signal)

    def delete_vm(self, wait: bool = True) -> None:
        if not self._vm_name or self._deleted.is_set():
            return
        self._deleted.set()
        try:
            op = self._client.delete_vm(self._vm_name)
            if wait:
                op.result(timeout=120)
        except WnodesRpcError as err:
            LOG.warning("could not delete %s: %s", self._vm_name, err)

    def _labels(self, job: JobSpec, uses: int) -> dict[str, str]:
        return {"slurm_job_id": job.job_id, "batch_user": job.user, "batch_image": job.image, "recycle_uses": str(uses), **job.labels}

    def _claim_idle_vm(self, job: JobSpec) -> tuple[str, str] | None:
        """An idle VM this user left on this node for this image, claimed with its etag so that
        two jobs never share one; None if there is none."""
        for vm in self._client.list_vms(hypervisor=job.hypervisor):
            labels = dict(vm.labels)
            if labels.get("recycle_state") != "idle" or labels.get("batch_image") != job.image or vm.vcpu_count < job.vcpu_count:
                continue
            if labels.get("batch_user") != job.user or vm.memory_mib < job.memory_mib or vm.state != ACTIVE:
                continue
            try:
                claimed = self._client.update_labels(vm.name, self._labels(job, int(labels.get("recycle_uses", "1")) + 1), etag=vm.etag)
            except WnodesRpcError:
                continue  # another job took it, or it is going away
            return claimed.name, claimed.image_version
        return None

    def _reusable(self, job: JobSpec) -> bool:
        """Whether this job may take an idle VM or leave its VM for the next job. Not for root:
        a root job can change anything in the guest, and nothing tells its leftovers apart."""
        return self._recycle.max_reuse > 0 and job.uid != 0

    def _release_or_delete(self, job: JobSpec) -> None:
        """After a job: keep the VM for the next one if the policy allows and it cleans up."""
        try:
            vm = self._client.get_vm(self._vm_name)
            uses = int(vm.labels.get("recycle_uses", "1"))
            if not self._reusable(job) or uses > self._recycle.max_reuse or vm.state != ACTIVE:
                self.delete_vm()
                return
            code = -1
            for msg in self._client.exec(self._vm_name, [CLEAN_COMMAND.format(uid=job.uid)], uid=0):
                if msg.WhichOneof("payload") == "exit_code":
                    code = msg.exit_code
            if code != 0:
                self.delete_vm()
                return
            labels = {**dict(vm.labels), "recycle_state": "idle", "expire_time": f"{time.time() + self._recycle.idle_timeout_s:.0f}"}
            self._client.update_labels(self._vm_name, labels, etag=vm.etag)
        except WnodesRpcError as err:
            LOG.warning("could not keep %s for recycling (%s): deleting it", self._vm_name, err)
            self.delete_vm()

    def run(self, job: JobSpec, on_placed: object = None) -> JobResult:
        claimed = self._claim_idle_vm(job) if self._reusable(job) else None
        if claimed is not None:
            self._vm_name, image_version = claimed
            reused = " (recycled)"
        else:
            try:
                op = self._client.create_vm(
                    job.image, job.vcpu_count, job.memory_mib, labels=self._labels(job, 1),
                    pinned_hypervisor=job.hypervisor, request_id=job.request_id,
                )
            except WnodesRpcError as err:
                return JobResult(EXIT_VM_FAILED, error=f"no VM for the job: {err.message} ({err.reason or err.code.name})")
            meta = op.metadata
            self._vm_name = getattr(meta, "name", "")
            image_version = getattr(meta, "image_version", "")
            reused = ""
        self._stderr.write(f"wnodes: job {job.job_id} runs in {self._vm_name}{reused} ({image_version}) on {job.hypervisor}\n".encode())
        self._stderr.flush()
        if callable(on_placed):
            on_placed(self._vm_name, image_version)
        code = EXIT_VM_FAILED
        try:
            for msg in self._client.exec(self._vm_name, [job.script], uid=job.uid):
                kind = msg.WhichOneof("payload")
                if kind == "stdout":
                    self._stdout.write(msg.stdout)
                    self._stdout.flush()
                elif kind == "stderr":
                    self._stderr.write(msg.stderr)
                    self._stderr.flush()
                elif kind == "exit_code":
                    code = msg.exit_code
        except WnodesRpcError as err:
            self.delete_vm()
            return JobResult(EXIT_VM_FAILED, self._vm_name, image_version, f"{err.message} ({err.reason or err.code.name})")
        except BaseException:
            self.delete_vm()
            raise
        self._release_or_delete(job)
        return JobResult(code, self._vm_name, image_version)
