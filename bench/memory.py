"""Resident memory and CPU time of every process of a stack."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from deploy.stack.stack import StackState


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    """User + system CPU time this (the benchmarking) process has used so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_by_process(state: StackState) -> dict[str, float]:
    return {p.name: cpu_seconds(p.pid) for p in state.procs}


def rss_by_process(state: StackState) -> dict[str, float]:
    return {p.name: round(rss_mib(p.pid), 1) for p in state.procs}
