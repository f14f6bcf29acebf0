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
from dataclasses import dataclass, field
from types import FrameType
from typing import BinaryIO

from clients.wnodes_client import Client, WnodesRpcError

LOG = logging.getLogger("wnodes.lrms")

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


@dataclass
class JobResult:
    exit_code: int
    vm_name: str = ""
    image_version: str = ""
    error: str = ""


class JobRunner:
    def __init__(self, client: Client, stdout: BinaryIO, stderr: BinaryIO) -> None:
        self._client = client
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

    def run(self, job: JobSpec, on_placed: object = None) -> JobResult:
        try:
            op = self._client.create_vm(
                job.image, job.vcpu_count, job.memory_mib,
                labels={"slurm_job_id": job.job_id, "batch_user": job.user, **job.labels},
                pinned_hypervisor=job.hypervisor, request_id=job.request_id,
            )
        except WnodesRpcError as err:
            return JobResult(EXIT_VM_FAILED, error=f"no VM for the job: {err.message} ({err.reason or err.code.name})")
        meta = op.metadata
        self._vm_name = getattr(meta, "name", "")
        image_version = getattr(meta, "image_version", "")
        self._stderr.write(f"wnodes: job {job.job_id} runs in {self._vm_name} ({image_version}) on {job.hypervisor}\n".encode())
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
            return JobResult(EXIT_VM_FAILED, self._vm_name, image_version, f"{err.message} ({err.reason or err.code.name})")
        finally:
            self.delete_vm()
        return JobResult(code, self._vm_name, image_version)
