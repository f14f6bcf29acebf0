"""Runs CESNET's pOCCI compliance suite (make pocci) against an OCCI endpoint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

POCCI = Path(__file__).resolve().parents[1] / ".venv-pocci" / "bin" / "pOCCI"
DEFAULT_TESTS = ["OCCI/CORE/DISCOVERY/001", "OCCI/CORE/DISCOVERY/002", "OCCI/CORE/READ/001", "OCCI/CORE/READ/002",
                 "OCCI/CORE/READ/007", "OCCI/CORE/DELETE/001", "OCCI/CORE/UPDATE/001", "OCCI/CORE/MISC/001",
                 "OCCI/INFRA/CREATE/001", "OCCI/INFRA/CREATE/002", "OCCI/INFRA/CREATE/003", "OCCI/INFRA/CREATE/004",
                 "OCCI/INFRA/CREATE/006", "OCCI/INFRA/CREATE/007"]
"""What `pOCCI` runs without -t (it skips CORE/CREATE/001, CORE/CREATE/006 and INFRA/CREATE/005)."""


def run(endpoint: str, user: str, password: str, mime: str, tests: list[str] | None = None) -> dict[str, str]:
    """Test name -> "OK" or "FAIL: reasons". Seeds one compute first, as the suite needs one."""
    if not POCCI.exists():
        raise RuntimeError(f"{POCCI} is missing: run 'make pocci'")
    common = [str(POCCI), "-e", endpoint, "-a", "basic", "-u", user, "-p", password]
    subprocess.run([*common, "-m", "text/plain", "-f", "plain", "-t", "OCCI/INFRA/CREATE/001"], capture_output=True, timeout=120, check=False)
    out = subprocess.run([*common, "-m", mime, "-f", "json", "-t", ",".join(tests or DEFAULT_TESTS)],
                         capture_output=True, text=True, timeout=600, check=False)
    start = out.stdout.find("{")  # some tests print their own lines before the report
    try:
        report = json.loads(out.stdout[start:])
    except ValueError as exc:
        raise AssertionError(f"pOCCI failed to run (exit {out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}") from exc
    results = {t["name"]: t["status"] if t["status"] == "OK" else f"FAIL: {t.get('reason', t)}" for t in report["tests"]}
    if any(v != "OK" for v in results.values()):
        print(f"pOCCI's stderr (the bodies of failed requests):\n{out.stderr[-4000:]}")  # shown by pytest on failure
    return results
