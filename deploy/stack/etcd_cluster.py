"""A 3-member etcd cluster on loopback (each member: its own data dir, client and peer ports)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.stack.processes import free_port, spawn


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"


def plan(size: int = 3) -> list[EtcdMember]:
    return [EtcdMember(f"etcd{i}", free_port(), free_port()) for i in range(size)]


def argv(member: EtcdMember, members: list[EtcdMember], data_dir: Path, state: str = "new") -> list[str]:
    cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
    return [
        "etcd",
        "--name", member.name,
        "--data-dir", str(data_dir / member.name),
        "--listen-client-urls", member.client_url,
        "--advertise-client-urls", member.client_url,
        "--listen-peer-urls", member.peer_url,
        "--initial-advertise-peer-urls", member.peer_url,
        "--initial-cluster", cluster,
        "--initial-cluster-state", state,
        "--initial-cluster-token", f"wnodes-{data_dir.name}",
        "--heartbeat-interval", "100",
        # Keep 10 minutes of history: without compaction every revision of every record stays
        # forever (100,000 VMs written ~3 times each is most of the database).
        "--auto-compaction-mode", "periodic",
        "--auto-compaction-retention", "10m",
        "--election-timeout", "1000",
        # bbolt's default "array" freelist allocates pages in O(free pages): with a large,
        # churned database (100,000 VMs, 350 MiB) commits stalled for 100-300 ms and reads
        # waited behind them. The "map" freelist is O(1), stable since etcd 3.4.9 and the
        # usual production setting.
        "--experimental-backend-bbolt-freelist-type", "map",
        "--logger", "zap",
        "--log-level", "warn",
    ]


def start_member(member: EtcdMember, members: list[EtcdMember], data_dir: Path, logs: Path, restart: bool = False) -> int:
    existing = (data_dir / member.name).exists()
    return spawn(argv(member, members, data_dir, "existing" if restart or existing else "new"), logs / f"{member.name}.log",
                 env={"ETCD_UNSUPPORTED_ARCH": ""})


def healthy(endpoints: list[str]) -> bool:
    result = subprocess.run(
        ["etcdctl", "--endpoints", ",".join(endpoints), "--command-timeout=1s", "endpoint", "health"],
        capture_output=True, text=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    return result.returncode == 0
