"""`make chaos`: the full chaos set against a fake-driver stack, with a table of what was sent,
accepted, completed and failed, and the invariants checked.

    python -m tests.chaos.run [--short] [--hosts 20] [--output json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests import stacks
from tests.chaos.quorum import QuorumOutcome, quorum_loss
from tests.chaos.scenarios import PAIRS, SINGLES, Outcome, run_plan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="chaos", description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--short", action="store_true", help="one kill of each component type only (what make test runs)")
    ap.add_argument("--hosts", type=int, default=20, help="simulated hypervisors (fake driver)")
    ap.add_argument("--output", choices=["table", "json"], default="table")
    args = ap.parse_args(argv)
    console = Console(stderr=True)
    plans = SINGLES if args.short else SINGLES + PAIRS
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="wnodes-chaos-") as tmp:
        stack = stacks.start(Path(tmp), "fake", args.hosts, fake_vcpus=4, fake_memory_mib=4096)
        try:
            for plan in plans:
                console.print(f"[bold]chaos:[/] SIGKILL {' + '.join(plan.kills)} under load")
                outcomes.append(run_plan(stack, plan))
            console.print("[bold]chaos:[/] quorum loss (2 of 3 etcd members)")
            quorum = quorum_loss(stack)
        finally:
            stack.down()
    failed = any(o.verdict.violations for o in outcomes) or bool(quorum.violations)
    if args.output == "json":
        print(json.dumps({"plans": [{"plan": o.plan.name, "killed": list(o.plan.kills), **o.counts, "seconds": round(o.seconds, 1),
                                     "checked": o.verdict.checked, "violations": o.verdict.violations,
                                     "failures": o.failures} for o in outcomes],
                          "quorum_loss": quorum.as_dict(), "ok": not failed}, indent=2))
    else:
        print_table(outcomes, quorum)
    return 1 if failed else 0


def print_table(outcomes: list[Outcome], quorum: QuorumOutcome) -> None:
    table = Table(title="WNoDeS chaos: SIGKILL under load, then the invariants")
    for column in ("killed", "sent", "accepted", "completed", "failed", "refused", "unresolved", "retries", "checks", "violations"):
        table.add_column(column, justify="left" if column in ("killed", "violations") else "right")
    for o in outcomes:
        c = o.counts
        table.add_row(" + ".join(o.plan.kills), *(str(c[k]) for k in ("sent", "accepted", "completed", "failed", "refused", "unresolved", "retries")),
                      str(len(o.verdict.checked)), "; ".join(o.verdict.violations) or "none")
    console = Console(width=None if sys.stdout.isatty() else 200)  # a log or a pipe gets every column
    console.print(table)
    for o in outcomes:
        for failure in o.failures:
            console.print(f"failed request ({' + '.join(o.plan.kills)}): {failure}")
    console.print(f"quorum loss: {quorum.summary()}")
    invariants = sorted({name for o in outcomes for name in o.verdict.checked})
    console.print("invariants checked: " + "; ".join(invariants))


if __name__ == "__main__":
    sys.exit(main())
