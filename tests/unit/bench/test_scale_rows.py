"""The scale benchmark's table is built from a results file after a run of many minutes: a row
that reads a missing key, or divides by zero, would lose the run. These tests render a real
results file (a 1,000-host run kept beside this test) and edge cases of it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bench import cpu_floor, scale

RESULTS = json.loads((Path(__file__).parent / "scale-1000-10000.json").read_text())


def _rows(results: dict[str, Any]) -> dict[str, tuple[str, str, str, str, str]]:
    return {row[0]: row for row in scale.rows(results)}


def test_every_row_is_five_strings_and_names_are_unique() -> None:
    rows = scale.rows(RESULTS)
    assert all(len(r) == 5 and all(isinstance(c, str) for c in r) for r in rows)
    assert len({r[0] for r in rows}) == len(rows)


def test_the_floor_rows_compare_a_create_with_its_two_hops_and_the_target() -> None:
    rows = _rows(RESULTS)
    floor, closed = RESULTS["floor"], RESULTS["closed_loop"]
    hop = rows["scale: CPU of a no-op gRPC call (client + server)"]
    total = closed["cpu_ms_per_create_total"] + closed["bench_client_cpu_ms_per_create"]
    assert hop[3] == f"{2 * floor['grpc_noop_call_cpu_ms']:.2f} / {total:.2f} ms"
    ceiling = rows["scale: CPU-bound ceiling on 2 cores (all processes busy)"]
    assert ceiling[1] == f"{2000 / total:.0f}/s"
    assert ceiling[4] == f"{2000 / total / 500:.2f}"


def test_the_sweep_names_the_highest_rate_whose_p99_is_under_100_ms() -> None:
    results = copy.deepcopy(RESULTS)
    results["open_loop_sweep"] = [
        {"offered_per_s": 150.0, "per_s": 150.0, "p50_ms": 10.0, "p99_ms": 60.0},
        {"offered_per_s": 250.0, "per_s": 249.0, "p50_ms": 20.0, "p99_ms": 99.0},
        {"offered_per_s": 350.0, "per_s": 340.0, "p50_ms": 50.0, "p99_ms": 180.0},
    ]
    row = _rows(results)["scale: highest offered rate with p99 under 100 ms"]
    assert row[1] == "250/s" and row[4] == "0.50"


def test_a_sweep_where_no_rate_holds_says_so() -> None:
    results = copy.deepcopy(RESULTS)
    for r in results["open_loop_sweep"]:
        r["p99_ms"] = 150.0
    assert _rows(results)["scale: highest offered rate with p99 under 100 ms"][1] == "none of those tried"


def test_results_from_before_the_floor_existed_still_render() -> None:
    results = copy.deepcopy(RESULTS)
    del results["floor"], results["open_loop_sweep"]
    names = set(_rows(results))
    assert not any("floor" in n or "ceiling" in n or "highest offered" in n for n in names)
    assert "scale: placements/s (1000 hosts, 10000 VMs, 3 replicas, C=32)" in names


@pytest.mark.parametrize(("cpu_ms", "cores", "expected"), [(4.0, 2, 500.0), (5.0, 2, 400.0), (0.0, 2, 0.0)])
def test_ceiling(cpu_ms: float, cores: int, expected: float) -> None:
    assert cpu_floor.ceiling_per_s(cpu_ms, cores) == expected
