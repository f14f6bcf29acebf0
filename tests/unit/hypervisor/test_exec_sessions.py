from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.errors import FailedPrecondition
from services.hypervisor.drivers.base import ExecEvent, ExecutionLost, Exit, Stderr, Stdout
from services.hypervisor.exec_sessions import ExecSessions


class Guest:
    def __init__(self, events: list[ExecEvent], gate: asyncio.Event | None = None) -> None:
        self.events = events
        self.gate = gate
        self.runs = 0
        self.attached = 0
        self.rebooted = False
        self.keys: list[str] = []

    async def exec(self, command: str, uid: int = 0, key: str = "") -> AsyncIterator[ExecEvent]:
        self.runs += 1
        self.keys.append(key)
        for i, event in enumerate(self.events):
            if i == 1 and self.gate is not None:
                await self.gate.wait()
            yield event

    async def attach(self, key: str) -> AsyncIterator[ExecEvent]:
        if key not in self.keys or self.rebooted:
            raise ExecutionLost(f"no execution {key}")
        self.attached += 1
        for event in self.events:
            yield event

    async def forget(self, key: str) -> None:
        return None

    async def wait_ready(self, timeout: float) -> object:
        return object()

    async def close(self) -> None:
        return None


async def test_a_second_caller_attaches_and_resumes_at_its_offsets(tmp_path: Path) -> None:
    gate = asyncio.Event()
    guest = Guest([Stdout(b"abc"), Stdout(b"def"), Stderr(b"e"), Exit(3)], gate)
    sessions = ExecSessions()

    async def start() -> Guest:
        return guest

    first = await sessions.open("vm-1", "x1", start, "cmd", 0, tmp_path)  # type: ignore[arg-type]
    got = []
    async for event in first.follow(0, 0):
        got.append(event)
        break  # the first caller's stream breaks after "abc"
    gate.set()
    again = await sessions.open("vm-1", "x1", start, "cmd", 0, tmp_path)  # type: ignore[arg-type]
    rest = [e async for e in again.follow(3, 0)]
    assert got == [Stdout(b"abc")]
    assert rest == [Stdout(b"def"), Stderr(b"e"), Exit(3)]
    assert guest.runs == 1, "attaching ran the command again"


async def test_a_lost_channel_is_an_error_not_an_exit_code(tmp_path: Path) -> None:
    sessions = ExecSessions()
    guest = Guest([Stdout(b"partial")])

    async def start() -> Guest:
        return guest

    session = await sessions.open("vm-1", "x2", start, "cmd", 0, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(FailedPrecondition):
        [e async for e in session.follow(0, 0)]


async def test_a_restarted_agent_follows_the_guest_log_instead_of_running_again(tmp_path: Path) -> None:
    guest = Guest([Stdout(b"out"), Exit(3)])

    async def start() -> Guest:
        return guest

    first = await ExecSessions().open("vm-1", "x3", start, "cmd", 0, tmp_path)  # type: ignore[arg-type]
    assert first.task is not None
    await first.task
    again = await ExecSessions().open("vm-1", "x3", start, "cmd", 0, tmp_path)  # type: ignore[arg-type]  # a new agent process
    assert [e async for e in again.follow(0, 0)] == [Stdout(b"out"), Exit(3)]
    assert (guest.runs, guest.attached) == (1, 1)
    assert (tmp_path / "x3").read_text().strip() == guest.keys[0]


async def test_an_execution_the_guest_forgot_is_reported_lost(tmp_path: Path) -> None:
    guest = Guest([Exit(0)])

    async def start() -> Guest:
        return guest

    first = await ExecSessions().open("vm-1", "x4", start, "cmd", 0, tmp_path)  # type: ignore[arg-type]
    assert first.task is not None
    await first.task
    guest.rebooted = True
    again = await ExecSessions().open("vm-1", "x4", start, "cmd", 0, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(FailedPrecondition) as info:
        [e async for e in again.follow(0, 0)]
    assert info.value.reason == "EXEC_LOST"
    assert guest.runs == 1
