"""`make run`: bring the stack up on this machine, show it doing its main job, keep it up.

The demonstration runs a command inside a fresh VM of each default image through the public
API (exactly what `wnodes run` does), prints the guest's answer and its time to first output,
then tells you how to use the CLIs against the running stack until you press Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sys
import time

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
    state = stack.up("libvirt", 1, progress=lambda m: console.print(f"  {m}"))
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
        console.rule("[bold]the stack is up")
        for k, v in stack.env().items():
            if k != "PATH":
                console.print(f"  export {k}={v}")
        console.print(
            "\n  try:  .venv/bin/wnodes run --image tiny -- uname -a\n"
            "        .venv/bin/wnodes vm create --image debian12 --cpus 1 --memory 512\n"
            "        .venv/bin/wnodes-admin hypervisors list\n"
            "        .venv/bin/wnodes-admin vms list --output json\n"
            "        .venv/bin/wnodes-admin stack status\n"
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


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
