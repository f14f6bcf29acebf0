"""``wnodes``: the user's command line.

    wnodes run --image tiny -- uname -r       run a command in a fresh VM, stream its output,
                                              exit with its exit code, remove the VM
    wnodes vm create|list|show|delete         manage VMs
    wnodes vm stop|start|restart|suspend|resume NAME...   power actions
    wnodes vm save NAME IMAGE                 save a VM's disk as a new version of IMAGE
    wnodes volume create|list|show|delete|attach|detach|online|offline   block volumes
    wnodes images                             images you may use
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from clients.output import as_dict, console, emit, emit_one, run_cli
from clients.wnodes_client import Client, WnodesRpcError
from wnodes.v1 import virtual_machine_pb2, volume_pb2

STATE = virtual_machine_pb2.VirtualMachine.State


def _vm_row(vm: virtual_machine_pb2.VirtualMachine) -> dict[str, Any]:
    return {
        "name": vm.name, "state": STATE.Name(vm.state), "image": vm.image_version or vm.image, "vcpus": vm.vcpu_count,
        "memory_mib": vm.memory_mib, "hypervisor": vm.hypervisor, "hostname": vm.hostname, "owner": f"{vm.owner.user}/{vm.owner.vo}",
        "job": vm.labels.get("slurm_job_id", ""), "ssh": vm.ssh_endpoint, "message": vm.state_message,
    }


def cmd_run(client: Client, args: argparse.Namespace) -> int:
    if not args.command:
        raise SystemExit("wnodes run: give the command after --, e.g. wnodes run --image tiny -- uname -r")
    command = args.command[1:] if args.command[0] == "--" else args.command
    labels = dict(kv.split("=", 1) for kv in args.label)

    def write(kind: str, data: bytes) -> None:
        stream = sys.stdout.buffer if kind == "stdout" else sys.stderr.buffer
        stream.write(data)
        stream.flush()

    result = client.run(args.image, command, args.cpus, args.memory, labels=labels, on_output=write, keep=args.keep)
    if args.output == "json":
        emit_one({"vm": result.vm.name, "exit_code": result.exit_code, "stdout": result.stdout.decode(errors="replace"),
                  "stderr": result.stderr.decode(errors="replace"), "seconds_to_first_output": result.seconds_to_first_output,
                  "boot_seconds": result.vm.boot_seconds, "hypervisor": result.vm.hypervisor}, "json")
    elif args.verbose:
        console.print(f"[dim]{result.vm.name} on {result.vm.hypervisor} ({result.vm.virtualization}): "
                      f"first output after {result.seconds_to_first_output or 0:.2f}s, boot {result.vm.boot_seconds:.2f}s[/dim]")
    return result.exit_code


def _ssh_keys(values: list[str]) -> list[str]:
    """--ssh-key takes a public key line or a file of them (e.g. ~/.ssh/id_ed25519.pub)."""
    keys: list[str] = []
    for value in values:
        path = Path(value).expanduser()
        if path.is_file():
            keys += [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        else:
            keys.append(value)
    return keys


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    labels = dict(kv.split("=", 1) for kv in args.label)
    user_data = Path(args.user_data).read_bytes() if args.user_data else b""
    op = client.create_vm(args.image, args.cpus, args.memory, labels=labels, ssh_public_keys=_ssh_keys(args.ssh_key), user_data=user_data)
    meta = op.metadata
    if args.no_wait:
        emit_one(as_dict(meta) if meta else {"operation": op.name}, args.output)
        return 0
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  disable=args.output == "json") as progress:
        task = progress.add_task(f"creating {getattr(meta, 'name', '')}")

        def show(m: Any) -> None:
            if m is not None:
                progress.update(task, description=f"{m.name}: {STATE.Name(m.state)} {m.state_message}")

        vm = op.result(timeout=args.timeout, on_progress=show)
    emit_one(as_dict(vm) if args.output == "json" else _vm_row(vm), args.output)
    return 0


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    vms = list(client.list_vms(hypervisor=args.hypervisor))
    if args.output == "json":
        emit([as_dict(v) for v in vms], [], "json")
    else:
        emit([_vm_row(v) for v in vms], ["name", "state", "image", "vcpus", "memory_mib", "hypervisor", "ssh", "owner"], "table")
    return 0


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    vm = client.get_vm(args.name)
    emit_one(as_dict(vm) if args.output == "json" else _vm_row(vm), args.output)
    return 0


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    ops = [client.delete_vm(n) for n in args.names]
    if not args.no_wait:
        for op in ops:
            op.result(timeout=args.timeout)
    emit([{"name": n, "deleted": not args.no_wait} for n in args.names], ["name", "deleted"], args.output)
    return 0


POWER_ACTIONS = {
    "stop": ("stop_vm", "stop VMs: the guest syncs, the domain goes, the disk stays (STOPPED)"),
    "start": ("start_vm", "start STOPPED VMs on their disk again (or resume SUSPENDED ones)"),
    "restart": ("restart_vm", "restart ACTIVE VMs: boot their disk again"),
    "suspend": ("suspend_vm", "pause ACTIVE VMs in memory (SUSPENDED)"),
    "resume": ("resume_vm", "continue SUSPENDED VMs where they stopped"),
}


def cmd_power(client: Client, args: argparse.Namespace) -> int:
    method = getattr(client, POWER_ACTIONS[args.vm_cmd][0])
    ops = [(n, method(n)) for n in args.names]
    rows = []
    for name, op in ops:
        if args.no_wait:
            meta = op.metadata
            rows.append({"name": name, "state": STATE.Name(meta.state) if meta else "", "operation": op.name})
            continue
        vm = op.result(timeout=args.timeout)
        rows.append({"name": vm.name, "state": STATE.Name(vm.state), "operation": op.name, "message": vm.state_message})
    emit(rows, ["name", "state", "operation", "message"], args.output)
    return 0


def cmd_save(client: Client, args: argparse.Namespace) -> int:
    op = client.save_vm(args.name, args.image)
    if args.no_wait:
        emit_one({"operation": op.name}, args.output)
        return 0
    version = op.result(timeout=args.timeout)
    emit_one(as_dict(version) if args.output == "json" else
             {"name": version.name, "owner_vo": version.owner_vo, "size_mib": round(version.disk.size_bytes / 2**20, 1),
              "description": version.description}, args.output)  # fmt: skip
    return 0


def _volume_row(v: volume_pb2.Volume) -> dict[str, Any]:
    attached = ", ".join(f"{a.virtual_machine} ({a.device}, {volume_pb2.Volume.Attachment.State.Name(a.state)})" for a in v.attachments)
    return {"name": v.name, "title": v.title, "size_gib": f"{v.size_gib:g}", "state": volume_pb2.Volume.State.Name(v.state),
            "attached_to": attached, "hypervisor": v.hypervisor, "message": v.state_message}  # fmt: skip


VOLUME_COLUMNS = ["name", "title", "size_gib", "state", "attached_to", "hypervisor"]


def cmd_volume(client: Client, args: argparse.Namespace) -> int:
    match args.volume_cmd:
        case "create":
            volumes = [client.create_volume(args.size_gib, args.title)]
        case "list":
            volumes = list(client.list_volumes())
        case "show":
            volumes = [client.get_volume(args.name)]
        case "delete":
            client.delete_volume(args.name)
            emit([{"name": args.name, "deleted": True}], ["name", "deleted"], args.output)
            return 0
        case "online" | "offline":
            volumes = [client.online_volume(args.name) if args.volume_cmd == "online" else client.offline_volume(args.name)]
        case "attach":
            volumes = [client.attach_volume(args.name, args.vm, args.device).result(timeout=args.timeout)]
        case "detach":
            volumes = [client.detach_volume(args.name, args.vm or "").result(timeout=args.timeout)]
    if args.output == "json":
        emit([as_dict(v) for v in volumes], [], "json")
    else:
        emit([_volume_row(v) for v in volumes], VOLUME_COLUMNS, "table")
    return 0


def cmd_images(client: Client, args: argparse.Namespace) -> int:
    rows = [{"name": v.name, "owner_vo": v.owner_vo, "state": v.State.Name(v.state), "size_mib": round(v.disk.size_bytes / 2**20, 1),
             "sha256": v.disk.sha256[:12], "description": v.description} for v in client.list_images()]
    emit(rows, ["name", "owner_vo", "state", "size_mib", "sha256", "description"], args.output)
    return 0


# --output may stand after the subcommand too (`wnodes vm list --output json`).
OUTPUT = argparse.ArgumentParser(add_help=False)
OUTPUT.add_argument("--output", "-o", choices=["table", "json"], default=argparse.SUPPRESS, help="json for scripts")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wnodes", description="WNoDeS: run work in virtual worker nodes created on demand.",
                                epilog="The gateway is $WNODES_GATEWAY (see 'wnodes-admin stack env').")
    p.add_argument("--gateway", default=os.environ.get("WNODES_GATEWAY"), help="gateway host:port")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table", help="json for scripts")
    sub = p.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", parents=[OUTPUT], help="run a command in a fresh VM and remove the VM afterwards",
                         description="Creates a VM of IMAGE, runs CMD in it, streams its output, exits with its exit code and deletes the VM.")
    run.add_argument("--image", required=True, help="image name, e.g. tiny or debian12")
    run.add_argument("--cpus", type=int, default=1)
    run.add_argument("--memory", type=int, default=256, help="MiB")
    run.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--keep", action="store_true", help="keep the VM after the command ends")
    run.add_argument("-v", "--verbose", action="store_true", help="print timings on stderr")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    run.set_defaults(fn=cmd_run)

    vm = sub.add_parser("vm", parents=[OUTPUT], help="manage virtual machines").add_subparsers(dest="vm_cmd", required=True)
    create = vm.add_parser("create", parents=[OUTPUT], help="create a VM and wait until it is ACTIVE")
    create.add_argument("--image", required=True)
    create.add_argument("--cpus", type=int, default=1)
    create.add_argument("--memory", type=int, default=256, help="MiB")
    create.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    create.add_argument("--ssh-key", action="append", default=[], metavar="KEY_OR_FILE",
                        help="public key (or a .pub file) allowed to log in as root and wnodes; gives the VM an SSH endpoint")
    create.add_argument("--user-data", metavar="FILE", help="contextualisation payload; run once at first boot if it starts with #!")
    create.add_argument("--no-wait", action="store_true", help="return at once with the operation")
    create.add_argument("--timeout", type=float, default=600)
    create.set_defaults(fn=cmd_create)
    lst = vm.add_parser("list", parents=[OUTPUT], help="list your VMs")
    lst.add_argument("--hypervisor", default="")
    lst.set_defaults(fn=cmd_list)
    show = vm.add_parser("show", parents=[OUTPUT], help="show one VM")
    show.add_argument("name")
    show.set_defaults(fn=cmd_show)
    delete = vm.add_parser("delete", parents=[OUTPUT], help="delete VMs")
    delete.add_argument("names", nargs="+")
    delete.add_argument("--no-wait", action="store_true")
    delete.add_argument("--timeout", type=float, default=120)
    delete.set_defaults(fn=cmd_delete)
    save = vm.add_parser("save", parents=[OUTPUT], help="save a VM's disk as a new version of an image of your VO")
    save.add_argument("name")
    save.add_argument("image", help="image name, new or of your VO (e.g. my-worker)")
    save.add_argument("--no-wait", action="store_true", help="return at once with the operation")
    save.add_argument("--timeout", type=float, default=1800)
    save.set_defaults(fn=cmd_save)
    for action, (_method, help_text) in POWER_ACTIONS.items():
        power = vm.add_parser(action, parents=[OUTPUT], help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        power.add_argument("names", nargs="+", metavar="NAME")
        power.add_argument("--no-wait", action="store_true", help="return at once with the operations")
        power.add_argument("--timeout", type=float, default=600)
        power.set_defaults(fn=cmd_power)

    volume = sub.add_parser("volume", parents=[OUTPUT], help="manage block volumes").add_subparsers(dest="volume_cmd", required=True)
    vcreate = volume.add_parser("create", parents=[OUTPUT], help="create a volume (its data is made where it is first attached)")
    vcreate.add_argument("--size-gib", type=float, required=True)
    vcreate.add_argument("--title", default="")
    volume.add_parser("list", parents=[OUTPUT], help="list your volumes")
    for action, help_text in (("show", "show one volume"), ("delete", "delete a detached volume and free its data"),
                              ("online", "bring a volume online"), ("offline", "take a detached volume offline")):  # fmt: skip
        volume.add_parser(action, parents=[OUTPUT], help=help_text).add_argument("name")
    vattach = volume.add_parser("attach", parents=[OUTPUT], help="attach a volume to a VM (hot-plugged if it runs)")
    vattach.add_argument("name")
    vattach.add_argument("vm")
    vattach.add_argument("--device", default="", help="vdb ... vdz (default: the first free one)")
    vdetach = volume.add_parser("detach", parents=[OUTPUT], help="detach a volume from its VM")
    vdetach.add_argument("name")
    vdetach.add_argument("vm", nargs="?")
    for p_ in (vattach, vdetach):
        p_.add_argument("--timeout", type=float, default=120)
    sub.choices["volume"].set_defaults(fn=cmd_volume)

    images = sub.add_parser("images", parents=[OUTPUT], help="images you may use")
    images.set_defaults(fn=cmd_images)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with Client(args.gateway) as client:
            return int(args.fn(client, args))
    except WnodesRpcError as err:
        print(f"wnodes: {err.message} ({err.code.name}{', ' + err.reason if err.reason else ''})", file=sys.stderr)
        return 2 if err.code.name in ("INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION") else 1
    except KeyboardInterrupt:
        return 130
    except TimeoutError as err:
        print(f"wnodes: {err}", file=sys.stderr)
        return 1


def entry() -> None:
    run_cli(main)
