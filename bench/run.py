"""`make bench`: every figure of the project in one table, each next to a baseline measured in
the same run, with the ratio. Also written as JSON (bench/results/bench.json).

    python -m bench.run [--runs N] [--creates N] [--only time_to_job|placement|batch|occi|failover|images|scale]
    python -m bench.run --only scale --hosts 10000 --vms 100000     # the full scale simulation
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import batch, failover, images, occi, placement, scale, time_to_job
from deploy.stack.stack import DEFAULT_IMAGES

RESULTS = Path(__file__).resolve().parent / "results"


def _rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(figure, value, baseline, baseline value, ratio)."""
    rows = []
    if "time_to_job" in results:
        t = results["time_to_job"]
        for q in ("p50", "p95"):
            w, lv, qm = t["wnodes"][q], t["direct_libvirt"][q], t["direct_qemu"][q]
            rows.append((f"tiny: request -> first output ({q})", f"{w:.2f} s", "direct libvirt createXML", f"{lv:.2f} s", f"{w / lv:.2f}"))
            rows.append((f"tiny: request -> first output ({q})", f"{w:.2f} s", "direct QEMU", f"{qm:.2f} s", f"{w / qm:.2f}"))
        rows.append(("tiny: cold host cache (image pulled)", f"{t['tiny_cold_cache_s']:.2f} s", "warm p50", f"{t['wnodes']['p50']:.2f} s",
                     f"{t['tiny_cold_cache_s'] / t['wnodes']['p50']:.2f}"))
        rows.append(("debian12: request -> first output (p50)", f"{t['debian12_wnodes']['p50']:.2f} s", "tiny p50",
                     f"{t['wnodes']['p50']:.2f} s", f"{t['debian12_wnodes']['p50'] / t['wnodes']['p50']:.2f}"))
    if "batch" in results:
        b = results["batch"]
        rows.append(("sbatch -> first job output line, in a VM (p50)", f"{b['vm_job_s']:.2f} s", "same job bare-metal",
                     f"{b['bare_metal_job_s']:.2f} s", f"{b['vm_job_s'] / b['bare_metal_job_s']:.2f}"))
        rows.append(("LRMS path overhead (VM job - bare job - bare VM boot)", f"{b['lrms_overhead_s']:.2f} s", "bare VM boot (libvirt)",
                     f"{b['bare_vm_boot_s']:.2f} s", f"{b['lrms_overhead_s'] / b['bare_vm_boot_s']:.2f}"))
        rows.append(("jobs per minute through one node, 10 queued, in VMs", f"{b['vm_jobs_per_minute']:.0f}", "bare-metal",
                     f"{b['bare_jobs_per_minute']:.0f}", f"{b['vm_jobs_per_minute'] / b['bare_jobs_per_minute']:.2f}"))
    if "occi" in results:
        o = results["occi"]
        s = o["ssh_ready"]
        rows.append(("debian12: OCCI POST /compute/ -> SSH ready (p50)", f"{s['occi_p50_s']:.2f} s", "gRPC CreateVirtualMachine -> SSH ready",
                     f"{s['grpc_p50_s']:.2f} s", f"{s['occi_p50_s'] / s['grpc_p50_s']:.2f}"))
        c = o["collection"]
        for accept in occi.RENDERINGS:
            rows.append((f"OCCI GET /compute/ ({c['entities']} entities), {accept}", f"{c[accept]['per_s']:.1f}/s",
                         "gRPC ListVirtualMachines (all pages)", f"{c['grpc_list_per_s']:.1f}/s", f"{c[accept]['per_s'] / c['grpc_list_per_s']:.2f}"))
    if "images" in results:
        i = results["images"]
        d = i["distribution"]
        rows.append((f"image pull into a host cache ({d['size_bytes'] >> 20} MiB, sha256-verified)", f"{d['pull_mib_s']:.0f} MiB/s",
                     "file copy, same bytes, same disk", f"{d['copy_mib_s']:.0f} MiB/s", f"{d['pull_mib_s'] / d['copy_mib_s']:.2f}"))
        t = i["ten_vms"]
        rows.append(("bytes moved for ten VMs of one image", f"{t['bytes_moved'] >> 20} MiB", "one image", f"{t['image_bytes'] >> 20} MiB",
                     f"{t['bytes_moved'] / t['image_bytes']:.2f}"))
        rows.append(("VM overlay creation (p50)", f"{i['overlay_ms']:.0f} ms", "", "", ""))
        m = i["mixed"]
        rows.append(("cache hit rate, 100 VMs of 5 images, room for 3", f"{m['hit_rate']:.2f}", "", "", ""))
    if "failover" in results:
        f = results["failover"]
        rows.append(("nameserver SIGKILL -> next successful create (worst of 3)", f"{f['to_first_success_s'] * 1000:.0f} ms",
                     "create p50 before the kill", f"{f['create_p50_before_s'] * 1000:.0f} ms",
                     f"{f['to_first_success_s'] / f['create_p50_before_s']:.2f}"))
        rows.append(("slowest create in the 3 s after a kill", f"{f['slowest_create_s'] * 1000:.0f} ms", "create p99 before the kill",
                     f"{f['create_p99_before_s'] * 1000:.0f} ms", f"{f['slowest_create_s'] / f['create_p99_before_s']:.2f}"))
        if f.get("errors"):  # why creates failed around the kills: UNAVAILABLE is the kill, anything else is not
            rows.append(("failed creates around the kills, by code", ", ".join(f"{k} {v}" for k, v in sorted(f["errors"].items())),
                         "", "", ""))
    if "placement" in results:
        p = results["placement"]
        rows.append((f"placements/s through the gateway ({p['hosts']} hosts, 3 replicas)", f"{p['creates_per_s']:.0f}/s",
                     "etcd txns/s from one process", f"{p['etcd_txn_per_s']:.0f}/s", f"{p['creates_per_s'] / p['etcd_txn_per_s']:.2f}"))
        rows.append(("placement latency p50", f"{p['p50_ms']:.0f} ms", "", "", ""))
        rows.append(("placement latency p99", f"{p['p99_ms']:.0f} ms", "", "", ""))
        rows.append(("cores busy during the burst (of 2)", f"{p['cores_busy']:.2f}", "", "", ""))
        total_cpu = sum(p["cpu_ms_per_create"].values())
        for name, ms in p["cpu_ms_per_create"].items():
            rows.append((f"CPU per create: {name}", f"{ms:.2f} ms", "all processes", f"{total_cpu:.1f} ms", f"{ms / total_cpu:.2f}" if total_cpu else ""))
        for name, idle in p["rss_idle_mib"].items():
            loaded = p["rss_loaded_mib"][name]
            rows.append((f"RSS {name} under load", f"{loaded:.0f} MiB", "idle", f"{idle:.0f} MiB", f"{loaded / idle:.2f}" if idle else ""))
    if "scale" in results:
        rows += scale.rows(results["scale"])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--runs", type=int, default=10, help="VM boots per method for time to job")
    ap.add_argument("--creates", type=int, default=2000, help="creates per measured burst (placement, scale)")
    ap.add_argument("--hosts", type=int, default=None, help="simulated hosts (placement: 100, scale: 1000)")
    ap.add_argument("--vms", type=int, default=10000, help="scale: VMs in the registry before measuring")
    ap.add_argument("--concurrency", type=int, default=32, help="scale: requests in flight in the closed loop")
    ap.add_argument("--rate", type=float, default=500.0, help="scale: offered creates/s in the open loop")
    ap.add_argument("--fill-via", choices=["gateway", "registry"], default="gateway",
                    help="scale: fill through the gateway, or through the Registry code in-process (no gRPC hops)")
    ap.add_argument("--only", choices=["time_to_job", "placement", "batch", "occi", "failover", "images", "scale"])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    args = ap.parse_args(argv)
    console = Console(width=150)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="wnodes-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "time_to_job"):
            console.print(f"[bold]time to job[/bold]: {args.runs} boots each through WNoDeS, libvirt and QEMU, interleaved")
            results["time_to_job"] = time_to_job.run(work, args.images, args.runs)
        if args.only in (None, "batch"):
            console.print("[bold]batch[/bold]: sbatch to first output line, bare-metal and in VMs; jobs per minute")
            results["batch"] = batch.run(work, args.images, max(3, args.runs // 2))
        if args.only in (None, "occi"):
            console.print("[bold]occi[/bold]: POST /compute/ to SSH-ready next to gRPC; GET of a 1,000-entity collection per rendering")
            results["occi"] = occi.run(work, args.images, max(3, args.runs // 3))
        if args.only in (None, "images"):
            console.print("[bold]images[/bold]: 1 GiB into a host cache next to a file copy; ten VMs of one image; overlays; hit rate")
            results["images"] = images.run(work)
        if args.only in (None, "failover"):
            console.print("[bold]failover[/bold]: SIGKILL a nameserver replica under a stream of creates, three times")
            results["failover"] = failover.run(work)
        if args.only in (None, "placement"):
            hosts = args.hosts or 100
            console.print(f"[bold]placement[/bold]: {args.creates} creates over {hosts} simulated hosts")
            results["placement"] = placement.run(work, hosts, args.creates)
        if args.only in (None, "scale"):
            hosts = args.hosts or 1000
            console.print(f"[bold]scale[/bold]: {hosts} simulated hosts, {args.vms} VMs, then {args.creates} creates")
            results["scale"] = scale.run(work, hosts, args.vms, args.creates, args.concurrency, args.rate, args.fill_via,
                                         progress=lambda m: console.print(f"  {m}"))
    table = Table(title="WNoDeS benchmark (ratio = value / baseline, same run)")
    for col in ("figure", "value", "baseline", "baseline value", "ratio"):
        table.add_column(col)
    for row in _rows(results):
        table.add_row(*row)
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench.json").write_text(json.dumps(results, indent=2))
    if "scale" in results:  # kept per size, so runs at several sizes sit side by side
        s = results["scale"]
        (RESULTS / f"scale-{s['hosts']}-{s['vms']}.json").write_text(json.dumps(s, indent=2))
    console.print(f"JSON: {RESULTS / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
