"""Test helpers around the local stack (deploy/stack): start one in a private directory, read
the registry straight from etcd, and check the invariants every fault test asserts."""

from __future__ import annotations

import base64
import json
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.stack.stack import Stack, StackState

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "var" / "images"


def etcd_prefix(state: StackState, prefix: str) -> dict[str, Any]:
    """Key -> decoded JSON value, read with etcdctl (independent of the code under test)."""
    out = subprocess.run(
        ["etcdctl", "--endpoints", ",".join(state.etcd_endpoints), "get", "--prefix", state.key_root + prefix, "-w", "json"],
        capture_output=True, text=True, check=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    data = json.loads(out.stdout)
    result = {}
    for kv in data.get("kvs", []):
        key = base64.b64decode(kv["key"]).decode()
        raw = base64.b64decode(kv.get("value", ""))
        try:
            result[key] = json.loads(raw)
        except ValueError:
            result[key] = raw.decode()
    return result


@dataclass
class Invariants:
    vms: int
    hosts_checked: int


def check_registry_invariants(state: StackState) -> Invariants:
    """No VM twice (per request id), no host overbooked, usage records equal to the VMs placed.

    Reads the whole registry in one etcd request (one revision): separate reads of VMs and usage
    taken while VMs come and go would disagree without anything being wrong."""
    everything = etcd_prefix(state, "/")

    def under(prefix: str) -> dict[str, Any]:
        return {k: v for k, v in everything.items() if k.startswith(state.key_root + prefix)}

    vms = list(under("/vms/").values())
    hosts = {v["name"]: v for v in under("/hypervisors/").values()}
    usage = {k.rsplit("/", 1)[-1]: v for k, v in under("/usage/").items()}
    dup = [rid for rid, n in Counter(v["request_id"] for v in vms).items() if n > 1]
    assert not dup, f"request ids with more than one VM: {dup}"
    per_host: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in vms:
        if v["hypervisor"] and v["state"] != "FAILED":
            per_host[v["hypervisor"]].append(v)
    for host, placed in per_host.items():
        cpus = sum(v["vcpu_count"] for v in placed)
        mem = sum(v["memory_mib"] for v in placed)
        if host in hosts:
            assert cpus <= hosts[host]["vcpu_count"], f"{host} overbooked: {cpus} vCPUs placed"
            assert mem <= hosts[host]["memory_mib"], f"{host} overbooked: {mem} MiB placed"
        recorded = usage.get(host, {"vms": {}})
        assert set(recorded["vms"]) == {v["id"] for v in placed}, f"{host}: usage record disagrees with its VMs"
    return Invariants(vms=len(vms), hosts_checked=len(per_host))


def start(tmp: Path, driver: str = "fake", hypervisors: int = 20, **kw: Any) -> Stack:
    stack = Stack(tmp / "stack")
    stack.up(driver, hypervisors, IMAGES if driver == "libvirt" else tmp / "no-images", **kw)
    return stack
