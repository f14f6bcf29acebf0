"""``wnodes-admin``: the operator's command line.

    wnodes-admin stack up|status|env|down|kill|restart   a whole deployment on this machine
    wnodes-admin hypervisors list|show                   the farm
    wnodes-admin vms list|show                           every VM, whoever owns it
    wnodes-admin images list|show|upload|build|customize|publish|deprecate|delete   the image catalogue
    wnodes-admin nameservers list                        replicas and the duties they lead
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from clients.output import as_dict, console, emit, emit_one, run_cli
from clients.wnodes_client import Client, WnodesRpcError
from deploy.stack.stack import DEFAULT_DIR, DEFAULT_IMAGES, Stack
from wnodes.v1 import hypervisor_pb2, virtual_machine_pb2

HV_STATE = hypervisor_pb2.Hypervisor.State
VM_STATE = virtual_machine_pb2.VirtualMachine.State


def _client(args: argparse.Namespace) -> Client:
    gateway = args.gateway or os.environ.get("WNODES_GATEWAY")
    if not gateway:
        state = Stack(args.stack_dir).state
        if state is None:
            raise RuntimeError(f"no gateway: set WNODES_GATEWAY or --gateway, or start a stack ('wnodes-admin stack up'); none in {args.stack_dir}")
        gateway = state.gateway
    return Client(gateway, user=os.environ.get("WNODES_USER", "wnodes-admin"), vo=os.environ.get("WNODES_VO", "wnodes"), roles=["admin"])


# --- stack -------------------------------------------------------------------------------

def stack_up(args: argparse.Namespace) -> int:
    stack = Stack(args.stack_dir)
    state = stack.up(args.driver, args.hypervisors, Path(args.images), progress=lambda m: console.print(f"[bold]stack[/bold] {m}"),
                     with_slurm=args.with_slurm)
    console.print(f"[green]stack up[/green] in {state.dir}: gateway {state.gateway}; images: {', '.join(state.images) or 'none'}")
    if state.occi:
        users = ", ".join(f"{u['name']} (VO {u['vo']})" for u in state.occi_users)
        console.print(f"OCCI 1.2 at {state.occi}; users {users}: passwords in 'wnodes-admin stack env'")
    console.print(f"use it from a shell:  eval \"$(wnodes-admin stack env --stack-dir {state.dir})\"")
    return 0


def stack_status(args: argparse.Namespace) -> int:
    rows = Stack(args.stack_dir).status()
    if not rows:
        console.print(f"no stack in {args.stack_dir}")
        return 1
    emit(rows, ["name", "kind", "pid", "endpoint", "alive", "log"], args.output)
    return 0 if all(r["alive"] for r in rows) else 1


def stack_env(args: argparse.Namespace) -> int:
    env = Stack(args.stack_dir).env()
    if args.output == "json":
        emit_one(env, "json")
    else:
        for k, v in env.items():
            print(f"export {k}={shlex.quote(v)}")
    return 0


def stack_down(args: argparse.Namespace) -> int:
    Stack(args.stack_dir).down(progress=lambda m: console.print(f"[bold]stack[/bold] {m}"))
    return 0


def stack_kill(args: argparse.Namespace) -> int:
    pid = Stack(args.stack_dir).kill(args.name, sig=9)
    console.print(f"killed {args.name} (pid {pid}) with SIGKILL")
    return 0


def stack_restart(args: argparse.Namespace) -> int:
    pid = Stack(args.stack_dir).restart(args.name)
    console.print(f"restarted {args.name} (pid {pid})")
    return 0


# --- farm --------------------------------------------------------------------------------

def _hv_row(h: hypervisor_pb2.Hypervisor) -> dict[str, Any]:
    return {"name": h.name, "state": HV_STATE.Name(h.state), "virtualization": h.virtualization,
            "vcpus": f"{h.vcpus_used}/{h.vcpu_count}", "memory_mib": f"{h.memory_mib_used}/{h.memory_mib}", "vms": h.vm_count,
            "cached_images": ",".join(h.cached_images), "endpoint": h.endpoint}


def hypervisors_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        hosts = c.list_hypervisors()
    if args.output == "json":
        emit([as_dict(h) for h in hosts], [], "json")
    else:
        emit([_hv_row(h) for h in hosts], ["name", "state", "virtualization", "vcpus", "memory_mib", "vms", "cached_images"], "table")
    return 0


def hypervisors_show(args: argparse.Namespace) -> int:
    with _client(args) as c:
        h = c.get_hypervisor(args.name)
    emit_one(as_dict(h) if args.output == "json" else _hv_row(h), args.output)
    return 0


def vms_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        vms = list(c.list_vms(hypervisor=args.hypervisor))
    if args.output == "json":
        emit([as_dict(v) for v in vms], [], "json")
    else:
        rows = [{"name": v.name, "state": VM_STATE.Name(v.state), "image": v.image_version, "hypervisor": v.hypervisor,
                 "owner": f"{v.owner.user}/{v.owner.vo}", "job": v.labels.get("slurm_job_id", ""), "boot_s": f"{v.boot_seconds:.2f}"}
                for v in vms]
        emit(rows, ["name", "state", "image", "hypervisor", "owner", "job", "boot_s"], "table")
    return 0


def vms_show(args: argparse.Namespace) -> int:
    with _client(args) as c:
        emit_one(as_dict(c.get_vm(args.name)), args.output)
    return 0


def images_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        versions = c.list_images()
    if args.output == "json":
        emit([as_dict(v) for v in versions], [], "json")
    else:
        emit([{"name": v.name, "owner_vo": v.owner_vo, "visibility": v.Visibility.Name(v.visibility), "state": v.State.Name(v.state),
               "size_mib": round(v.disk.size_bytes / 2**20, 1), "sha256": v.disk.sha256[:12]} for v in versions],
             ["name", "owner_vo", "visibility", "state", "size_mib", "sha256"], "table")
    return 0


def images_show(args: argparse.Namespace) -> int:
    with _client(args) as c:
        emit_one(as_dict(c.get_image(args.name)), args.output)
    return 0


def images_upload(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    with _client(args) as c, Progress(*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                       console=console, disable=args.output == "json") as progress:
        task = progress.add_task(f"uploading {args.name}", total=None)
        version = c.upload_image(
            args.name, folder / "disk.qcow2",
            kernel=folder / "vmlinux" if (folder / "vmlinux").exists() else None,
            initrd=folder / "initrd.img" if (folder / "initrd.img").exists() else None,
            cmdline=args.cmdline, visibility=args.visibility, publish=not args.no_publish,
            on_progress=lambda sent, total: progress.update(task, completed=sent, total=total),
        )
    emit_one(as_dict(version), args.output)
    return 0


def images_build(args: argparse.Namespace) -> int:
    """Builds a recipe (deploy/images/recipes/*.toml) and uploads it as a new version of its image."""
    from clients.wnodes_admin.built_images import upload_built
    from deploy.images.environment import build_environment
    from deploy.images.recipe import RecipeError, load_recipe
    from deploy.images.recipe_build import build_recipe

    try:
        recipe = load_recipe(Path(args.recipe))
    except RecipeError as err:
        raise RuntimeError(str(err)) from None
    kernel, mirror = build_environment()
    out = Path(args.out).resolve()
    started = time.monotonic()
    with console.status(f"building {recipe.name} from {recipe.source} ({recipe.base})", spinner="dots") if args.output != "json" \
            else contextlib.nullcontext():  # fmt: skip
        image_dir = build_recipe(recipe, out, kernel, mirror)
    built = time.monotonic() - started
    if args.no_upload:
        emit_one({"image": recipe.name, "folder": str(image_dir), "recipe_sha256": recipe.sha256, "build_seconds": round(built, 1)}, args.output)
        return 0
    with _client(args) as c, Progress(*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                       console=console, disable=args.output == "json") as progress:
        task = progress.add_task(f"uploading {recipe.name}", total=None)
        version = upload_built(c, image_dir, lambda sent, total: progress.update(task, completed=sent, total=total))
    row: dict[str, Any] = as_dict(version) if args.output == "json" else {"name": version.name, "disk_sha256": version.disk.sha256,
                                                            "recipe_sha256": recipe.sha256}  # fmt: skip
    if args.output == "json":
        row["build_seconds"] = round(built, 1)
    emit_one(row, args.output)
    return 0


def images_customize(args: argparse.Namespace) -> int:
    """A new version from a libguestfs-customised copy of SOURCE (which stays as it was)."""
    files: dict[str, bytes] = {}
    for item in args.file:
        guest, sep, local = item.partition("=")
        if not sep or not guest.startswith("/"):
            raise ValueError(f"--file {item!r}: expected /GUEST/PATH=LOCALFILE")
        files[guest] = Path(local).read_bytes()
    keys = [line for f in args.authorized_key for line in Path(f).read_text().splitlines() if line.strip()]
    script = Path(args.script).read_text() if args.script else ""
    with _client(args) as c, Progress(*Progress.get_default_columns()[:3], console=console, disable=args.output == "json") as progress:
        task = progress.add_task(f"customising {args.source}", total=100)

        def step(text: str, percent: int) -> None:
            progress.update(task, completed=percent, description=text[:60])

        version = c.customize_image(
            args.source, args.name, files=files, syslog_to_hypervisor=args.syslog_to_hypervisor, kernel_modules=args.module,
            authorized_keys=keys, script=script, visibility=args.visibility, description=args.description, on_progress=step,
        )
    emit_one(as_dict(version), args.output)
    return 0


def images_state(args: argparse.Namespace) -> int:
    """publish, deprecate or delete one version."""
    with _client(args) as c:
        action = {"publish": c.publish_image, "deprecate": c.deprecate_image, "delete": c.delete_image}[args.images_cmd]
        emit_one(as_dict(action(args.name)), args.output)
    return 0


def images_prefetch(args: argparse.Namespace) -> int:
    """Warms host caches; with --wait, until each named host (or every host) advertises it."""
    hosts = [h for h in args.hosts.split(",") if h]
    with _client(args) as c:
        response = c.prefetch_image(args.image, hosts)
        version = response.image_version.name
        cached: list[str] = []
        if args.wait:
            deadline = time.monotonic() + args.wait
            with console.status(f"hosts pulling {version}", spinner="dots") if args.output != "json" else contextlib.nullcontext():
                while True:
                    farm = [h for h in c.list_hypervisors() if not hosts or h.name.removeprefix("hypervisors/") in hosts]
                    cached = [h.name for h in farm if version in h.cached_images]
                    if farm and len(cached) == len(farm):
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"after {args.wait}s only {len(cached)} of {len(farm)} hosts hold {version}")
                    time.sleep(0.5)
    emit_one({"image_version": version, "hosts": ",".join(hosts) or "all", "cached_on": ",".join(cached)}, args.output)
    return 0


def nameservers_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        found = c.list_nameservers()
    emit([as_dict(n) if args.output == "json" else {"name": n.name, "endpoint": n.endpoint, "duties": ",".join(n.duties)} for n in found],
         ["name", "endpoint", "duties"], args.output)
    return 0


# --output may stand after the subcommand too (`wnodes vm list --output json`).
OUTPUT = argparse.ArgumentParser(add_help=False)
OUTPUT.add_argument("--output", "-o", choices=["table", "json"], default=argparse.SUPPRESS, help="json for scripts")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wnodes-admin", description="Operate a WNoDeS farm.")
    p.add_argument("--gateway", default=None, help="gateway host:port (default: $WNODES_GATEWAY or the local stack's)")
    p.add_argument("--stack-dir", type=Path, default=DEFAULT_DIR, help=f"local stack state directory (default {DEFAULT_DIR})")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")
    sub = p.add_subparsers(dest="cmd", required=True)

    stack = sub.add_parser("stack", parents=[OUTPUT], help="a whole deployment on this machine, on loopback").add_subparsers(dest="stack_cmd", required=True)
    up = stack.add_parser("up", parents=[OUTPUT], help="start etcd x3, nameserver x3, imagestore, hypervisor agents and the gateway")
    up.add_argument("--driver", choices=["libvirt", "fake"], default="libvirt", help="libvirt: real VMs; fake: simulated hosts")
    up.add_argument("--hypervisors", type=int, default=1, help="with --driver fake: how many simulated hosts")
    up.add_argument("--images", default=str(DEFAULT_IMAGES), help="folder of built images to register")
    up.add_argument("--with-slurm", action="store_true", help="also a real Slurm (munged, slurmctld, slurmd) whose node is the hypervisor")
    up.set_defaults(fn=stack_up)
    stack.add_parser("status", parents=[OUTPUT], help="every process with its PID and endpoint").set_defaults(fn=stack_status)
    stack.add_parser("env", parents=[OUTPUT], help="what a shell needs to use the stack (eval it)").set_defaults(fn=stack_env)
    stack.add_parser("down", parents=[OUTPUT], help="stop everything; leave no process, domain or overlay").set_defaults(fn=stack_down)
    kill = stack.add_parser("kill", parents=[OUTPUT], help="SIGKILL one process (for fault drills)")
    kill.add_argument("name")
    kill.set_defaults(fn=stack_kill)
    restart = stack.add_parser("restart", parents=[OUTPUT], help="(re)start one process")
    restart.add_argument("name")
    restart.set_defaults(fn=stack_restart)

    hv = sub.add_parser("hypervisors", parents=[OUTPUT], help="the farm's hosts").add_subparsers(dest="hv_cmd", required=True)
    hv.add_parser("list", parents=[OUTPUT]).set_defaults(fn=hypervisors_list)
    hv_show = hv.add_parser("show", parents=[OUTPUT])
    hv_show.add_argument("name")
    hv_show.set_defaults(fn=hypervisors_show)

    vms = sub.add_parser("vms", parents=[OUTPUT], help="every VM").add_subparsers(dest="vms_cmd", required=True)
    vms_l = vms.add_parser("list", parents=[OUTPUT])
    vms_l.add_argument("--hypervisor", default="")
    vms_l.set_defaults(fn=vms_list)
    vms_s = vms.add_parser("show", parents=[OUTPUT])
    vms_s.add_argument("name")
    vms_s.set_defaults(fn=vms_show)

    images = sub.add_parser("images", parents=[OUTPUT], help="the image catalogue").add_subparsers(dest="images_cmd", required=True)
    images.add_parser("list", parents=[OUTPUT]).set_defaults(fn=images_list)
    img_show = images.add_parser("show", parents=[OUTPUT])
    img_show.add_argument("name", help="images/NAME or images/NAME/versions/N")
    img_show.set_defaults(fn=images_show)
    upload = images.add_parser("upload", parents=[OUTPUT], help="upload a folder (disk.qcow2 [vmlinux initrd.img]) as a new version")
    upload.add_argument("name")
    upload.add_argument("dir")
    upload.add_argument("--cmdline", default="")
    upload.add_argument("--visibility", choices=["PRIVATE", "VO", "PUBLIC"], default="VO")
    upload.add_argument("--no-publish", action="store_true", help="register it BUILDING; 'images publish' makes it usable")
    upload.set_defaults(fn=images_upload)
    build = images.add_parser("build", parents=[OUTPUT], help="build a recipe (deploy/images/recipes/*.toml) and upload it as a new version")
    build.add_argument("recipe", help="recipe file")
    build.add_argument("--out", default=str(DEFAULT_IMAGES), help="images folder: the build goes to OUT/recipes/NAME, the debootstrap cache is OUT/.cache")
    build.add_argument("--no-upload", action="store_true", help="build only")
    build.set_defaults(fn=images_build)
    cust = images.add_parser("customize", parents=[OUTPUT], help="a new version from a libguestfs-customised copy of a version")
    cust.add_argument("source", help="images/NAME (newest available) or images/NAME/versions/N")
    cust.add_argument("--name", required=True, help="image the result becomes a new version of")
    cust.add_argument("--file", action="append", default=[], metavar="PATH=LOCALFILE", help="put LOCALFILE at PATH in the image (repeatable)")
    cust.add_argument("--syslog-to-hypervisor", action="store_true", help="relay the guest's syslog to its hypervisor agent's log")
    cust.add_argument("--module", action="append", default=[], metavar="NAME", help="kernel module to load at boot (repeatable)")
    cust.add_argument("--authorized-key", action="append", default=[], metavar="FILE", help="public key file(s) for root's authorized_keys")
    cust.add_argument("--script", metavar="FILE", help="site script run with /bin/sh inside the image")
    cust.add_argument("--visibility", default="", choices=["", "PRIVATE", "VO", "PUBLIC"], help="default: that of the source")
    cust.add_argument("--description", default="")
    cust.set_defaults(fn=images_customize)
    for action, text in (("publish", "make a version AVAILABLE to new VMs"), ("deprecate", "refuse a version to new VMs (running ones keep it)"),
                         ("delete", "mark a version DELETED; caches drop it once unused")):
        cmd = images.add_parser(action, parents=[OUTPUT], help=text)
        cmd.add_argument("name", help="images/NAME/versions/N (or NAME/versions/N)")
        cmd.set_defaults(fn=images_state)

    prefetch = images.add_parser("prefetch", parents=[OUTPUT], help="warm host caches with an image's newest version")
    prefetch.add_argument("image", help="NAME or images/NAME")
    prefetch.add_argument("--hosts", default="", help="comma-separated hypervisor names (default: every host)")
    prefetch.add_argument("--wait", type=float, default=0, help="wait up to this many seconds until the hosts hold it")
    prefetch.set_defaults(fn=images_prefetch)

    ns = sub.add_parser("nameservers", parents=[OUTPUT], help="nameserver replicas").add_subparsers(dest="ns_cmd", required=True)
    ns.add_parser("list", parents=[OUTPUT]).set_defaults(fn=nameservers_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except WnodesRpcError as err:
        print(f"wnodes-admin: {err.message} ({err.code.name}{', ' + err.reason if err.reason else ''})", file=sys.stderr)
        return 1
    except (RuntimeError, TimeoutError, KeyError) as err:
        print(f"wnodes-admin: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    run_cli(main)
