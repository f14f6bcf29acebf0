"""Resident memory of every process of a stack, by kind (MiB)."""

from __future__ import annotations

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


def rss_by_process(state: StackState) -> dict[str, float]:
    return {p.name: round(rss_mib(p.pid), 1) for p in state.procs}
