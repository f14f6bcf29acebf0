"""`make run`: bring the stack up on this machine, show it doing its main job, keep it up.

The demonstration runs a command inside a fresh VM of each default image through the public
API (exactly what `wnodes run` does), prints the guest's answer and its time to first output,
submits one job script to Slurm in a tiny VM, in a debian12 VM and bare metal, boots and deletes
a compute through OCCI as a cloud user, then tells you how to use the CLIs against the running
stack until you press Ctrl-C.

It drives the deployment (deploy/stack) and uses the stack as a client would (the SDK, OCCI,
Slurm), so it lives here: clients/ may import deploy/, never the other way round.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console

from clients.wnodes_client import Client
from deploy.stack.stack import DEFAULT_DIR, Stack

console = Console()

DEMOS = [
    ("tiny", "echo \"hello from $(hostname), kernel $(uname -r)\"; grep PRETTY_NAME /etc/os-release"),
    ("debian12", "echo \"hello from $(hostname), kernel $(uname -r)\"; grep PRETTY_NAME /etc/os-release; nproc; grep MemTotal /proc/meminfo"),
]


def main() -> int:
    stack = Stack(DEFAULT_DIR)
    if stack.state is not None:
        stack.down()
    console.rule("[bold]WNoDeS: bringing the stack up")
    state = stack.up("libvirt", 1, progress=lambda m: console.print(f"  {m}"), with_slurm=True)
    try:
        with Client(state.gateway, user=os.environ.get("USER", "root"), vo="wnodes") as client:
            host = client.list_hypervisors()[0]
            console.print(f"  hypervisor {host.name}: {host.vcpu_count} vCPUs, {host.memory_mib} MiB, virtualization [bold]{host.virtualization}[/bold]")
            for image, command in DEMOS:
                if image not in state.images:
                    console.print(f"[yellow]image {image} is not built; skipping[/yellow]")
                    continue
                console.rule(f"[bold]wnodes run --image {image}")
                result = client.run(image, [command], 1, 256, on_output=lambda _k, d: console.out(d.decode(errors="replace"), end=""))
                console.print(
                    f"[green]exit {result.exit_code}[/green] in {result.vm.name} on {result.vm.hypervisor}: "
                    f"first output after [bold]{result.seconds_to_first_output:.2f}s[/bold] "
                    f"(guest ready {result.vm.boot_seconds:.2f}s after placement); VM removed"
                )
            _batch_demo(state.slurm_conf)
        if state.occi and state.occi_users:
            _occi_demo(state.occi, state.occi_users[0])
        console.rule("[bold]the stack is up")
        for k, v in stack.env().items():
            if k != "PATH":
                console.print(f"  export {k}={v}")
        console.print(
            "\n  try:  .venv/bin/wnodes run --image tiny -- uname -a\n"
            "        sbatch --constraint=img_debian12 job.sh    (SLURM_CONF as above; no constraint: bare metal)\n"
            "        .venv/bin/wnodes vm create --image debian12 --cpus 1 --memory 512\n"
            "        .venv/bin/wnodes-admin hypervisors list\n"
            "        .venv/bin/wnodes-admin vms list --output json\n"
            "        .venv/bin/wnodes-admin stack status\n"
            "        curl -u $WNODES_OCCI_USER:$WNODES_OCCI_PASSWORD -H 'Accept: text/plain' $WNODES_OCCI_ENDPOINT/-/\n"
            f"  logs: {state.dir}/logs/\n\n  Ctrl-C stops the stack."
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        console.rule("[bold]stopping")
        stack.down(progress=lambda m: console.print(f"  {m}"))
    return 0


def _batch_demo(slurm_conf: str) -> None:
    """The same job script submitted to Slurm three ways: in a tiny VM, in a debian12 VM, bare."""
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    work = Path(tempfile.mkdtemp(prefix="wnodes-demo-", dir="/tmp"))
    work.chmod(0o777)
    script = work / "job.sh"
    script.write_text("#!/bin/sh\necho \"job $SLURM_JOB_ID on $(hostname): $(grep PRETTY_NAME /etc/os-release)\"\nexit 7\n")
    console.rule("[bold]Slurm: sbatch [--constraint=img_IMAGE] job.sh")
    jobs = {}
    for label, opts in (("img_tiny", ["--constraint=img_tiny"]), ("img_debian12", ["--constraint=img_debian12"]), ("bare metal", [])):
        out = subprocess.run(["sbatch", "--parsable", "-D", str(work), *opts, str(script)], capture_output=True, text=True, env=env)
        jobs[out.stdout.strip()] = label
    deadline = time.monotonic() + 180
    pending = set(jobs)
    while pending and time.monotonic() < deadline:
        for job in list(pending):
            info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=env).stdout
            if "JobState=PENDING" not in info and "JobState=RUNNING" not in info:
                pending.discard(job)
                exit_code = next((w.split("=")[1] for w in info.split() if w.startswith("ExitCode=")), "?")
                console.print(f"[bold]{jobs[job]}[/bold] (job {job}, ExitCode={exit_code}):")
                console.out((work / f"slurm-{job}.out").read_text(), end="")
        time.sleep(0.5)
    shutil.rmtree(work, ignore_errors=True)


def _occi_demo(endpoint: str, user: dict[str, str]) -> None:
    """A cloud user's view: the os_tpl mixins their VO may use, then a compute created, booted and
    deleted through OCCI (what rOCCI-cli or any OCCI client would send)."""
    console.rule(f"[bold]OCCI 1.2 at {endpoint} as {user['name']} (VO {user['vo']})")
    token = base64.b64encode(f"{user['name']}:{user['password']}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Accept": "text/plain", "Content-Type": "text/plain"}

    def http(method: str, url: str, body: str = "") -> tuple[int, str, dict[str, str]]:
        request = urllib.request.Request(url if url.startswith("http") else endpoint + url, data=body.encode() or None,
                                         headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(), dict(err.headers)

    _, model, _ = http("GET", "/-/")
    templates = [line.split(";")[0].removeprefix("Category: ") for line in model.splitlines() if "#os_tpl" in line and "rel=" in line]
    console.print(f"  GET /-/: os_tpl mixins for {user['name']}: {', '.join(templates)}")
    body = "\n".join([
        'Category: compute; scheme="http://schemas.ogf.org/occi/infrastructure#"; class="kind"',
        'Category: tiny; scheme="http://schemas.wnodes.infn.it/occi/infrastructure/os_tpl#"; class="mixin"',
        'Category: small; scheme="http://schemas.wnodes.infn.it/occi/infrastructure/resource_tpl#"; class="mixin"',
        'X-OCCI-Attribute: occi.core.title="demo"',
    ])
    status, _, created = http("POST", "/compute/", body)
    location = created.get("Location", "")
    console.print(f"  POST /compute/ (os_tpl tiny, resource_tpl small): {status} Location: {location}")
    started, attributes = time.monotonic(), ""
    while time.monotonic() - started < 120:
        _, text, _ = http("GET", location)
        attributes = "\n".join(line for line in text.splitlines() if line.startswith("X-OCCI-Attribute: occi.compute."))
        if 'occi.compute.state="active"' in attributes:
            break
        time.sleep(0.5)
    console.print(f"  GET {location} after {time.monotonic() - started:.1f} s:")
    console.out("    " + attributes.replace("\n", "\n    "))
    status, _, _ = http("DELETE", location)
    after, _, _ = http("GET", location)
    console.print(f"  DELETE: {status}; GET again: {after}")


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
