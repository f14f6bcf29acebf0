"""Scale simulation: thousands of simulated hypervisors (fake driver, one agent process) and a
registry filled with VMs, driven through the gateway with 3 nameserver replicas.

What it measures, each next to a baseline from the same run where one makes sense:

- placement rate and p50/p99 latency through the gateway at full size (closed loop: as fast as
  it goes), and p50/p99 at a fixed offered rate (open loop, latency counted from the moment each
  request was due, so a stalled client does not hide queueing); baseline: the same closed loop
  over 100 empty hosts, and the raw etcd transaction rate from one process;
- ListVirtualMachines page latency (admin pages, a deep page, a user owning a small share of the
  VMs, a user owning none), ListHypervisors and GetHypervisor;
- watch and lease cost: the agent's CPU per placement event, its idle CPU (keepalives and
  periodic convergence of every host), LeaseKeepAlive messages per second and watchers in etcd;
- nameserver RSS, etcd's database size (etcdctl endpoint status), raft proposals per create.

The registry is filled through the gateway (``--fill-via gateway``, the default) or, when that
would take too long, through the same Registry code the nameservers run, in this process
(``--fill-via registry``: no gRPC hops, same transactions); the JSON says which.

    python -m bench.run --only scale [--hosts 10000 --vms 100000]
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc

from bench import cpu_floor, placement
from bench.memory import cpu_by_process, rss_by_process, self_cpu_seconds
from bench.stats import percentile
from deploy.stack.stack import Stack, StackState
from services.common.etcd_store import EtcdStore
from services.common.identity import Principal
from wnodes.v1 import (
    hypervisor_service_pb2,
    hypervisor_service_pb2_grpc,
    virtual_machine_pb2,
    virtual_machine_service_pb2,
    virtual_machine_service_pb2_grpc,
)

LOG = logging.getLogger(__name__)

# Simulated hosts big enough that the fill and the measured bursts never run out of room
# (100,000 VMs of 1 vCPU over 10,000 hosts is 10 per host).
# Open-loop rates below the target's, as fractions of it: the highest whose p99 stays under
# 100 ms is what this machine can promise.
SWEEP = (0.3, 0.5, 0.7, 0.9)
SWEEP_SECONDS = 4.0
HOST_VCPUS = 64
HOST_MEMORY_MIB = 256 * 1024
FILL_USERS = 100
ADMIN = Principal("bench-admin", "wnodes", frozenset({"admin"}))
ETCDCTL_ENV = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}


def _request() -> virtual_machine_service_pb2.CreateVirtualMachineRequest:
    return virtual_machine_service_pb2.CreateVirtualMachineRequest(
        virtual_machine=virtual_machine_pb2.VirtualMachine(image="tiny", vcpu_count=1, memory_mib=128),
        request_id=uuid.uuid4().hex,
    )



# --- etcd's own view ----------------------------------------------------------------------


def etcd_compact(state: StackState) -> dict[str, float]:
    """Compacts etcd's history up to now and defragments every member (what a site's periodic
    compaction and maintenance reach), then reports the database size again."""
    out = subprocess.run(["etcdctl", "--endpoints", state.etcd_endpoints[0], "endpoint", "status", "-w", "json"],
                         capture_output=True, text=True, env=ETCDCTL_ENV, timeout=30)
    try:
        revision = json.loads(out.stdout)[0]["Status"]["header"]["revision"]
    except (ValueError, LookupError):
        return {"db_mib": float("nan"), "db_in_use_mib": float("nan")}
    subprocess.run(["etcdctl", "--endpoints", state.etcd_endpoints[0], "compact", str(revision), "--physical"],
                   capture_output=True, env=ETCDCTL_ENV, timeout=300)
    for endpoint in state.etcd_endpoints:
        subprocess.run(["etcdctl", "--endpoints", endpoint, "--command-timeout=300s", "defrag"], capture_output=True, env=ETCDCTL_ENV, timeout=320)
    return etcd_status(state)


def etcd_status(state: StackState) -> dict[str, float]:
    """Database size (allocated and in use) of the largest member, in MiB."""
    out = subprocess.run(
        ["etcdctl", "--endpoints", ",".join(state.etcd_endpoints), "endpoint", "status", "-w", "json"],
        capture_output=True, text=True, env=ETCDCTL_ENV, timeout=30,
    )
    try:
        members = json.loads(out.stdout)
    except ValueError:
        return {"db_mib": float("nan"), "db_in_use_mib": float("nan")}
    size = max(m["Status"]["dbSize"] for m in members)
    in_use = max(m["Status"].get("dbSizeInUse", 0) for m in members)
    return {"db_mib": round(size / 2**20, 1), "db_in_use_mib": round(in_use / 2**20, 1)}


_METRIC = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([-+\deE.naN]+)$")


def etcd_metrics(state: StackState) -> dict[str, float]:
    """Counters from every member's /metrics: client-facing ones summed (clients talk to any
    member), cluster-wide ones (proposals, keys) taken from the member that shows the most."""
    summed = {"keepalives": 0.0, "watchers": 0.0, "watch_streams": 0.0, "range_calls": 0.0, "txn_calls": 0.0}
    peak = {"proposals": 0.0, "keys": 0.0}
    for endpoint in state.etcd_endpoints:
        try:
            with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=10) as resp:
                text = resp.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            m = _METRIC.match(line)
            if not m:
                continue
            name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
            if name == "grpc_server_msg_received_total" and 'grpc_method="LeaseKeepAlive"' in labels:
                summed["keepalives"] += value
            elif name == "grpc_server_handled_total" and 'grpc_method="Range"' in labels:
                summed["range_calls"] += value
            elif name == "grpc_server_handled_total" and 'grpc_method="Txn"' in labels:
                summed["txn_calls"] += value
            elif name == "etcd_debugging_mvcc_watcher_total":
                summed["watchers"] += value
            elif name == "etcd_debugging_mvcc_watch_stream_total":
                summed["watch_streams"] += value
            elif name == "etcd_server_proposals_committed_total":
                peak["proposals"] = max(peak["proposals"], value)
            elif name == "etcd_debugging_mvcc_keys_total":
                peak["keys"] = max(peak["keys"], value)
    return {**summed, **peak}


# --- load -----------------------------------------------------------------------------------


async def _closed_loop(gateway: str, total: int, concurrency: int, owner: Callable[[int], Principal]) -> dict[str, Any]:
    """``total`` creates from ``concurrency`` workers, each sending its next as soon as the last
    one is answered."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(total))
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)

        async def worker() -> None:
            for i in counter:
                meta = owner(i).to_metadata()
                t = time.perf_counter()
                try:
                    await stub.CreateVirtualMachine(_request(), metadata=meta, timeout=60)
                    latencies.append(time.perf_counter() - t)
                except grpc.aio.AioRpcError as err:
                    _count_error(errors, err)

        cpu0, start = self_cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        cpu = self_cpu_seconds() - cpu0
    return _summary(latencies, errors, elapsed, cpu)


async def _open_loop(gateway: str, rate: float, seconds: float, owner: Principal) -> dict[str, Any]:
    """Creates sent at a fixed rate whatever the answers do; each latency is counted from the
    moment its request was due (coordinated omission would otherwise flatter the tail)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    total = int(rate * seconds)
    meta = owner.to_metadata()
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)

        async def one(due: float) -> None:
            try:
                await stub.CreateVirtualMachine(_request(), metadata=meta, timeout=60)
                latencies.append(time.perf_counter() - due)
            except grpc.aio.AioRpcError as err:
                _count_error(errors, err)

        cpu0, start = self_cpu_seconds(), time.perf_counter()
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        cpu = self_cpu_seconds() - cpu0
    out = _summary(latencies, errors, elapsed, cpu)
    out["offered_per_s"] = rate
    return out


def _count_error(errors: dict[str, int], err: grpc.aio.AioRpcError) -> None:
    what = f"{err.code().name}: {(err.details() or '')[:60]}"
    errors[what] = errors.get(what, 0) + 1


def _summary(latencies: list[float], errors: dict[str, int], elapsed: float, client_cpu: float) -> dict[str, Any]:
    return {
        "creates": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "max_ms": round(max(latencies, default=0.0) * 1000, 1),
        "bench_client_cpu_ms_per_create": round(client_cpu / max(1, len(latencies)) * 1000, 2),
    }


async def _fill_via_registry(state: StackState, total: int, concurrency: int) -> dict[str, Any]:
    """The bulk fill through the nameserver's own Registry code (placement transactions, host
    cache, scheduler) in this process: everything a create does except the two gRPC hops."""
    from services.common.keys import Keys
    from services.nameserver.host_cache import HostCache
    from services.nameserver.registry import Registry, VmSpec
    from services.nameserver.scheduling.scheduler import Scheduler, SchedulerConfig

    store = EtcdStore(state.etcd_endpoints)
    await store.connect()
    keys = Keys(state.key_root)
    hosts = HostCache(store, keys)
    await hosts.start()
    await hosts.wait_ready(timeout=300)
    registry = Registry(store, keys, Scheduler(SchedulerConfig()), hosts)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            t = time.perf_counter()
            try:
                await registry.create_vm(VmSpec("tiny", 1, 128), _fill_owner(i), uuid.uuid4().hex, {})
                latencies.append(time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001 - counted, reported
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    cpu0, start = self_cpu_seconds(), time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await hosts.stop()
        await store.close()
    return _summary(latencies, errors, time.perf_counter() - start, self_cpu_seconds() - cpu0)


def _fill_owner(i: int) -> Principal:
    return Principal(f"fill-{i % FILL_USERS:03d}", "scale")


async def _wait_settled(state: StackState, timeout: float) -> dict[str, Any]:
    """Waits until no VM is SCHEDULED or STARTING (the agent has booted every one)."""
    store = EtcdStore(state.etcd_endpoints, timeout=60)
    await store.connect()
    start = time.monotonic()
    prefix = f"{state.key_root}/vms/"
    try:
        while True:
            total = pending = 0
            after = ""
            while True:
                entries, _ = await store.get_prefix(prefix, start_after=after, limit=5000)
                for e in entries:
                    total += 1
                    if b'"state":"SCHEDULED"' in e.value or b'"state":"STARTING"' in e.value:
                        pending += 1
                if len(entries) < 5000:
                    break
                after = entries[-1].key
            if pending == 0 or time.monotonic() - start > timeout:
                return {"vms": total, "still_booting": pending, "seconds": round(time.monotonic() - start, 1)}
            await asyncio.sleep(2)
    finally:
        await store.close()


# --- reads ----------------------------------------------------------------------------------


async def _timed(fn: Callable[[], Awaitable[Any]], repeat: int = 5) -> dict[str, Any]:
    times: list[float] = []
    error = ""
    result: Any = None
    for _ in range(repeat):
        t = time.perf_counter()
        try:
            result = await fn()
            times.append(time.perf_counter() - t)
        except grpc.aio.AioRpcError as err:
            error = f"{err.code().name}: {(err.details() or '')[:120]}"
            times.append(time.perf_counter() - t)
            break
    out: dict[str, Any] = {"p50_ms": round(percentile(times, 50) * 1000, 1), "max_ms": round(max(times) * 1000, 1)}
    if error:
        out["error"] = error
    if result is not None and hasattr(result, "virtual_machines"):
        out["items"] = len(result.virtual_machines)
    elif result is not None and hasattr(result, "hypervisors"):
        out["items"] = len(result.hypervisors)
    return out


async def _reads(gateway: str, hosts: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(gateway, options=[("grpc.max_receive_message_length", 64 * 2**20)]) as channel:
        vms = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(channel)
        hvs = hypervisor_service_pb2_grpc.HypervisorServiceStub(channel)

        def list_vms(principal: Principal, size: int, token: str = "", hypervisor: str = "") -> Callable[[], Awaitable[Any]]:
            request = virtual_machine_service_pb2.ListVirtualMachinesRequest(page_size=size, page_token=token, hypervisor=hypervisor)
            return lambda: vms.ListVirtualMachines(request, metadata=principal.to_metadata(), timeout=60)

        out["list_admin_page_100"] = await _timed(list_vms(ADMIN, 100))
        out["list_admin_page_1000"] = await _timed(list_vms(ADMIN, 1000))
        # Deep in the list: follow tokens 10 pages in, then time that page.
        token = ""
        for _ in range(10):
            page = await vms.ListVirtualMachines(
                virtual_machine_service_pb2.ListVirtualMachinesRequest(page_size=1000, page_token=token),
                metadata=ADMIN.to_metadata(), timeout=60,
            )
            token = page.next_page_token
            if not token:
                break
        if token:
            out["list_admin_page_1000_deep"] = await _timed(list_vms(ADMIN, 1000, token))
        out["list_user_page_100"] = await _timed(list_vms(_fill_owner(0), 100))
        out["list_user_without_vms"] = await _timed(list_vms(Principal("nobody", "scale"), 100), repeat=2)
        out["list_admin_one_hypervisor"] = await _timed(list_vms(ADMIN, 100, hypervisor=f"hypervisors/sim-{hosts // 2:03d}"), repeat=2)
        out["list_hypervisors_page"] = await _timed(
            lambda: hvs.ListHypervisors(hypervisor_service_pb2.ListHypervisorsRequest(page_size=1000), metadata=ADMIN.to_metadata(), timeout=60)
        )
        out["get_hypervisor"] = await _timed(
            lambda: hvs.GetHypervisor(hypervisor_service_pb2.GetHypervisorRequest(name=f"hypervisors/sim-{hosts // 3:03d}"),
                                      metadata=ADMIN.to_metadata(), timeout=60)
        )
    return out


# --- the run --------------------------------------------------------------------------------


def _idle(state: StackState, seconds: float) -> dict[str, Any]:
    """Cores each process keeps busy, and etcd keepalives per second, while nothing is asked."""
    cpu0, m0, t0 = cpu_by_process(state), etcd_metrics(state), time.monotonic()
    time.sleep(seconds)
    cpu1, m1, dt = cpu_by_process(state), etcd_metrics(state), time.monotonic() - t0
    cores = {n: round((cpu1[n] - cpu0[n]) / dt, 3) for n in cpu0}
    return {
        "cores": cores,
        "agent_cores": cores.get("hypervisor0", 0.0),
        "etcd_cores": round(sum(v for n, v in cores.items() if n.startswith("etcd")), 3),
        "nameserver_cores": round(sum(v for n, v in cores.items() if n.startswith("nameserver")), 3),
        "keepalives_per_s": round((m1["keepalives"] - m0["keepalives"]) / dt, 1),
        "etcd_ranges_per_s": round((m1["range_calls"] - m0["range_calls"]) / dt, 1),
        "watchers": m1["watchers"],
        "watch_streams": m1["watch_streams"],
    }


def _open_loop_at(state: StackState, rate: float) -> dict[str, Any]:
    burst = _burst(state, lambda: _open_loop(state.gateway, rate, SWEEP_SECONDS, Principal("bench", "wnodes")))
    asyncio.run(_wait_settled(state, timeout=120))
    return {k: burst[k] for k in ("offered_per_s", "per_s", "p50_ms", "p99_ms", "cpu_ms_per_create_total", "cores_busy")}


def _burst(state: StackState, run: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """Runs a burst of creates and splits the stack's CPU by process, per create."""
    cpu0, m0 = cpu_by_process(state), etcd_metrics(state)
    result: dict[str, Any] = asyncio.run(run())
    cpu1, m1 = cpu_by_process(state), etcd_metrics(state)
    done = max(1, result["creates"])
    result["cpu_ms_per_create"] = {n: round((cpu1[n] - cpu0[n]) / done * 1000, 2) for n in cpu0}
    result["cpu_ms_per_create_total"] = round(sum(result["cpu_ms_per_create"].values()), 2)
    result["cores_busy"] = round(sum(cpu1[n] - cpu0[n] for n in cpu0) / max(result["seconds"], 1e-9), 2)
    result["raft_proposals_per_create"] = round((m1["proposals"] - m0["proposals"]) / done, 2)
    result["etcd_txns_per_create"] = round((m1["txn_calls"] - m0["txn_calls"]) / done, 2)
    result["etcd_ranges_per_create"] = round((m1["range_calls"] - m0["range_calls"]) / done, 2)
    return result


def run(
    workdir: Path, hosts: int = 1000, vms: int = 10000, creates: int = 3000, concurrency: int = 32, rate: float = 500.0,
    fill_via: str = "gateway", baseline_hosts: int = 100, progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    results: dict[str, Any] = {"hosts": hosts, "vms": vms, "creates": creates, "concurrency": concurrency, "fill_via": fill_via,
                               "host_vcpus": HOST_VCPUS, "host_memory_mib": HOST_MEMORY_MIB, "cpu_count": os.cpu_count(),
                               "load_average_at_start": os.getloadavg()}
    # Baseline: the same closed loop over a small, empty farm, and raw etcd transactions.
    progress(f"scale: baseline over {baseline_hosts} empty hosts")
    small = Stack(workdir / "scale-baseline")
    state = small.up("fake", baseline_hosts, workdir / "no-images", fake_vcpus=HOST_VCPUS, fake_memory_mib=HOST_MEMORY_MIB)
    try:
        results["baseline_etcd_txn_per_s"] = round(asyncio.run(placement._etcd_txns(state, 2000, concurrency)), 1)
        results["baseline"] = _burst(state, lambda: _closed_loop(state.gateway, creates, concurrency, lambda i: Principal("bench", "wnodes")))
    finally:
        small.down()

    progress(f"scale: {hosts} simulated hosts")
    stack = Stack(workdir / "scale-stack")
    t0 = time.monotonic()
    state = stack.up("fake", hosts, workdir / "no-images", fake_vcpus=HOST_VCPUS, fake_memory_mib=HOST_MEMORY_MIB)
    try:
        results["hosts_up_seconds"] = round(time.monotonic() - t0, 1)
        results["idle_empty"] = _idle(state, 10)
        results["rss_empty_mib"] = rss_by_process(state)
        results["etcd_empty"] = etcd_status(state)

        progress(f"scale: filling the registry with {vms} VMs ({fill_via})")
        if fill_via == "registry":
            fill = _burst(state, lambda: _fill_via_registry(state, vms, 64))
        else:
            fill = _burst(state, lambda: _closed_loop(state.gateway, vms, 64, _fill_owner))
        results["fill"] = fill
        progress(f"scale: fill done at {fill['per_s']}/s; waiting for the agent to boot them all")
        results["settle"] = asyncio.run(_wait_settled(state, timeout=max(120.0, vms / 50)))
        results["idle_full"] = _idle(state, 10)

        progress(f"scale: {creates} creates, closed loop, concurrency {concurrency}")
        results["closed_loop"] = _burst(state, lambda: _closed_loop(state.gateway, creates, concurrency, lambda i: Principal("bench", "wnodes")))
        progress(f"scale: open loop at {rate:.0f}/s for {creates / rate:.0f}s")
        results["open_loop"] = _burst(state, lambda: _open_loop(state.gateway, rate, creates / rate, Principal("bench", "wnodes")))
        asyncio.run(_wait_settled(state, timeout=120))
        results["open_loop_sweep"] = []
        for fraction in SWEEP:
            progress(f"scale: open loop at {rate * fraction:.0f}/s for {SWEEP_SECONDS:.0f}s")
            results["open_loop_sweep"].append(_open_loop_at(state, rate * fraction))
        progress("scale: the CPU floor (a no-op gRPC call, a placement-shaped etcd transaction)")
        results["floor"] = cpu_floor.measure(state)
        progress("scale: list and get latencies")
        results["reads"] = asyncio.run(_reads(state.gateway, hosts))
        results["rss_full_mib"] = rss_by_process(state)
        results["etcd_full"] = etcd_status(state)
        results["etcd_keys"] = etcd_metrics(state)["keys"]
        results["load_average_at_end"] = os.getloadavg()
        results["etcd_compacted"] = etcd_compact(state)
    finally:
        _keep_logs(state, workdir)
        stack.down()
    return results


def _keep_logs(state: StackState, workdir: Path) -> None:
    """The stack's logs outlive the run (its directory is temporary) in bench/results/."""
    import shutil

    target = Path(__file__).resolve().parent / "results" / "scale-logs"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(Path(state.dir) / "logs", target, dirs_exist_ok=True)


def rows(s: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Table rows for bench/run.py: (figure, value, baseline, baseline value, ratio)."""

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else ""

    size = f"{s['hosts']} hosts, {s['settle']['vms']} VMs"
    c, o, b = s["closed_loop"], s["open_loop"], s["baseline"]
    out = [
        (f"scale: placements/s ({size}, 3 replicas, C={s['concurrency']})", f"{c['per_s']:.0f}/s", "100 empty hosts, same run",
         f"{b['per_s']:.0f}/s", ratio(c["per_s"], b["per_s"])),
        ("scale: placement latency p50 / p99 (closed loop)", f"{c['p50_ms']:.0f} / {c['p99_ms']:.0f} ms", "100 empty hosts",
         f"{b['p50_ms']:.0f} / {b['p99_ms']:.0f} ms", ratio(c["p99_ms"], b["p99_ms"])),
        (f"scale: latency p50 / p99 at {o['offered_per_s']:.0f}/s offered", f"{o['p50_ms']:.0f} / {o['p99_ms']:.0f} ms",
         "achieved rate", f"{o['per_s']:.0f}/s", ""),
        ("scale: CPU per create, all processes", f"{c['cpu_ms_per_create_total']:.1f} ms", "100 empty hosts",
         f"{b['cpu_ms_per_create_total']:.1f} ms", ratio(c["cpu_ms_per_create_total"], b["cpu_ms_per_create_total"])),
        ("scale: agent CPU per placement event (watch cost)", f"{c['cpu_ms_per_create'].get('hypervisor0', 0):.2f} ms", "100 empty hosts",
         f"{b['cpu_ms_per_create'].get('hypervisor0', 0):.2f} ms",
         ratio(c["cpu_ms_per_create"].get("hypervisor0", 0), b["cpu_ms_per_create"].get("hypervisor0", 0))),
        *_sweep_rows(s),
        ("scale: CPU per create by process (ms)", _split(c), "100 empty hosts", _split(b), ""),
        *_floor_rows(s),
        ("scale: raft proposals per create", f"{c['raft_proposals_per_create']:.2f}", "etcd txns per create", f"{c['etcd_txns_per_create']:.2f}", ""),
        (f"scale: fill rate ({s['fill_via']})", f"{s['fill']['per_s']:.0f}/s", "", "", ""),
        ("scale: agent idle CPU (cores), full registry", f"{s['idle_full']['agent_cores']:.3f}", "empty registry",
         f"{s['idle_empty']['agent_cores']:.3f}", ""),
        ("scale: etcd idle CPU (cores, 3 members), full", f"{s['idle_full']['etcd_cores']:.3f}", "empty registry",
         f"{s['idle_empty']['etcd_cores']:.3f}", ""),
        ("scale: nameservers idle CPU (cores, 3), full", f"{s['idle_full']['nameserver_cores']:.3f}", "empty registry",
         f"{s['idle_empty']['nameserver_cores']:.3f}", ""),
        ("scale: lease keepalives/s into etcd (idle)", f"{s['idle_full']['keepalives_per_s']:.0f}", "watchers in etcd",
         f"{s['idle_full']['watchers']:.0f}", ""),
        ("scale: hosts up (registered) in", f"{s['hosts_up_seconds']:.0f} s", "", "", ""),
    ]
    for name, r in s["reads"].items():
        label = f"scale: {name.replace('_', ' ')}"
        value = f"{r['p50_ms']:.0f} ms" + (f" ({r['error'][:30]})" if "error" in r else "")
        out.append((label, value, "max", f"{r['max_ms']:.0f} ms", ""))
    for name, mib in s["rss_full_mib"].items():
        if name.startswith("nameserver") or name == "hypervisor0":
            out.append((f"scale: RSS {name}, full registry", f"{mib:.0f} MiB", "empty registry", f"{s['rss_empty_mib'][name]:.0f} MiB",
                        ratio(mib, s["rss_empty_mib"][name])))
    out.append(("scale: etcd DB size, full registry", f"{s['etcd_full']['db_mib']:.0f} MiB", "empty registry",
                f"{s['etcd_empty']['db_mib']:.0f} MiB", ratio(s["etcd_full"]["db_mib"], s["etcd_empty"]["db_mib"])))
    out.append(("scale: etcd DB in use, full registry", f"{s['etcd_full']['db_in_use_mib']:.0f} MiB", "keys", f"{s['etcd_keys']:.0f}", ""))
    if "etcd_compacted" in s:
        out.append(("scale: etcd DB after compaction + defrag", f"{s['etcd_compacted']['db_mib']:.0f} MiB", "before",
                    f"{s['etcd_full']['db_mib']:.0f} MiB", ratio(s["etcd_compacted"]["db_mib"], s["etcd_full"]["db_mib"])))
    return out


def _split(burst: dict[str, Any]) -> str:
    """CPU per create, by kind of process: where a create's cost goes."""
    per = burst["cpu_ms_per_create"]

    def kind(prefix: str) -> float:
        return float(sum(v for n, v in per.items() if n.startswith(prefix)))

    return (f"etcd {kind('etcd'):.2f} / nameservers {kind('nameserver'):.2f} / gateway {kind('gateway'):.2f} / "
            f"agent {kind('hypervisor'):.2f} / client {burst['bench_client_cpu_ms_per_create']:.2f}")


def _floor_rows(s: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """The CPU floor next to what a create costs, and the ceiling this machine allows."""
    floor = s.get("floor")
    if not floor:
        return []
    c = s["closed_loop"]
    total = c["cpu_ms_per_create_total"] + c["bench_client_cpu_ms_per_create"]
    hops = 2 * floor["grpc_noop_call_cpu_ms"]
    ceiling = cpu_floor.ceiling_per_s(total, floor["cores"])
    return [
        ("scale: CPU of a no-op gRPC call (client + server)", f"{floor['grpc_noop_call_cpu_ms']:.2f} ms",
         "a create's two hops vs its whole CPU", f"{hops:.2f} / {total:.2f} ms", f"{hops / total:.2f}" if total else ""),
        ("scale: CPU of a placement-shaped etcd txn (3 members + client)", f"{floor['etcd_placement_txn_cpu_ms']:.2f} ms",
         "unbatched txns/s", f"{floor['etcd_placement_txns_per_s']:.0f}/s", ""),
        (f"scale: CPU-bound ceiling on {floor['cores']} cores (all processes busy)", f"{ceiling:.0f}/s", "target", "500/s",
         f"{ceiling / 500:.2f}"),
    ]


def _sweep_rows(s: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    rows = [(f"scale: latency p50 / p99 at {r['offered_per_s']:.0f}/s offered", f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms",
             "achieved rate", f"{r['per_s']:.0f}/s", "") for r in s.get("open_loop_sweep", [])]
    under = [r["offered_per_s"] for r in s.get("open_loop_sweep", []) if r["p99_ms"] < 100]
    if rows:
        rows.append(("scale: highest offered rate with p99 under 100 ms", f"{max(under):.0f}/s" if under else "none of those tried",
                     "target", "500/s", f"{max(under) / 500:.2f}" if under else ""))
    return rows
