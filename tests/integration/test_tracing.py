"""One create is one OpenTelemetry trace across gateway, nameserver and hypervisor agent."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from clients.wnodes_client import Client
from tests import stacks

pytestmark = pytest.mark.integration


def test_one_trace_spans_gateway_nameserver_and_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spans_dir = tmp_path / "spans"
    spans_dir.mkdir()
    monkeypatch.setenv("WNODES_OTEL_EXPORTER", "file")
    monkeypatch.setenv("WNODES_OTEL_DIR", str(spans_dir))
    stack = stacks.start(tmp_path, "fake", 1)
    try:
        state = stack.state
        assert state is not None
        with Client(state.gateway, user="alice", vo="atlas") as client:
            vm = client.create_vm("tiny").result(timeout=60)
    finally:
        stack.down()  # processes flush their spans as they exit
    services_by_trace: dict[str, set[str]] = defaultdict(set)
    names_by_trace: dict[str, set[str]] = defaultdict(set)
    for path in spans_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            span = json.loads(line)
            trace = span["context"]["trace_id"]
            services_by_trace[trace].add(span["resource"]["attributes"]["service.name"])
            names_by_trace[trace].add(span["name"])
    create = [t for t, names in names_by_trace.items() if "/wnodes.v1.VirtualMachineService/CreateVirtualMachine" in names]
    assert len(create) == 1, names_by_trace
    trace = create[0]
    assert {"wnodes-gateway", "wnodes-nameserver", "wnodes-hypervisor"} <= services_by_trace[trace]
    assert {"hypervisor.start_vm", "driver.define_and_start", "guest.wait_ready"} <= names_by_trace[trace]
    assert vm.name
