"""A private one-member etcd for a test module: free loopback ports, a data directory under the
test's tmp path, stopped by PID. Started as the stack starts its members (deploy/stack)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from deploy.stack import etcd_cluster, processes

# etcd's shortest lease is 1.5 election timeouts, rounded up to a second: with the stack's
# 1000 ms that is 2 s. A single member never holds an election, so a shorter timeout costs
# nothing and lets a lease test wait 1 s instead of 2.
SHORT_LEASES = ["--heartbeat-interval", "10", "--election-timeout", "100"]


@contextlib.contextmanager
def running(tmp: Path, short_leases: bool = False) -> Iterator[list[str]]:
    """Yields the member's client endpoints while it runs."""
    members = etcd_cluster.plan(1)
    argv = etcd_cluster.argv(members[0], members, tmp / "data") + (SHORT_LEASES if short_leases else [])
    log = tmp / f"{members[0].name}.log"
    pid = processes.spawn(argv, log, env={"ETCD_UNSUPPORTED_ARCH": ""})
    endpoints = [m.endpoint for m in members]
    try:
        processes.wait_until(lambda: etcd_cluster.healthy(endpoints), 30, "etcd", pid, log)
        yield endpoints
    finally:
        processes.stop(pid)
