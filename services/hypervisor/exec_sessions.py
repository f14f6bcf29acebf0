"""Executions in guests that outlive the RPC that started them.

A command runs in a background task that keeps its output; RPCs follow it from any offset. So
a caller whose stream broke (the gateway restarted, the network blinked) attaches again with
the same exec id and the offsets it has, and gets the rest: nothing lost, nothing run twice.

The agent itself may restart under a running command: every execution leaves a marker file
holding its guest-side key, and the guest logs the command's output. A new agent process that
is asked for an exec id it has a marker for attaches to the guest's log instead of running the
command again, and the caller still gets every byte and the exit code.

Finished executions are kept for a while, then forgotten (and the guest drops its log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.common.errors import FailedPrecondition, InvalidArgument
from services.hypervisor.drivers.base import (
    ExecEvent,
    ExecutionLost,
    Exit,
    GuestChannel,
    Stderr,
    Stdout,
    check_exec_key,
    new_exec_key,
)

LOG = logging.getLogger(__name__)
EXEC_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

RETENTION_S = 600.0


@dataclass
class ExecSession:
    vm_id: str
    key: str = ""
    guest: GuestChannel | None = None
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    exit_code: int | None = None
    error: Exception | None = None
    finished_at: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def pump(self, events: AsyncIterator[ExecEvent]) -> None:
        try:
            async for event in events:
                match event:
                    case Stdout(data):
                        self.stdout.extend(data)
                    case Stderr(data):
                        self.stderr.extend(data)
                    case Exit(code):
                        self.exit_code = code
                self._wake()
        except ExecutionLost as exc:
            self.error = FailedPrecondition(f"the guest no longer has this execution's output: {exc}", reason="EXEC_LOST")
        except Exception as exc:  # the guest or its channel went away
            self.error = exc
        finally:
            if self.exit_code is None and self.error is None:
                self.error = FailedPrecondition("the command's channel closed before it ended", reason="EXEC_LOST")
            self.finished_at = time.monotonic()
            self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def follow(self, stdout_offset: int, stderr_offset: int) -> AsyncIterator[ExecEvent]:
        """Output from the offsets on, as it comes, then the exit code (or the error)."""
        out, err = stdout_offset, stderr_offset
        while True:
            changed = self.changed
            if len(self.stdout) > out:
                chunk = bytes(self.stdout[out:])
                out += len(chunk)
                yield Stdout(chunk)
            if len(self.stderr) > err:
                chunk = bytes(self.stderr[err:])
                err += len(chunk)
                yield Stderr(chunk)
            if self.finished_at and out == len(self.stdout) and err == len(self.stderr):
                if self.exit_code is not None:
                    yield Exit(self.exit_code)
                    return
                assert self.error is not None
                raise self.error
            await changed.wait()


class ExecSessions:
    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str], ExecSession] = {}
        self._forgetting: set[asyncio.Task[None]] = set()

    async def open(
        self, vm_id: str, exec_id: str, start: Callable[[], Awaitable[GuestChannel]], command: str, uid: int, marker_dir: Path
    ) -> ExecSession:
        """The execution with this id: followed again if it is known, started now if not.

        The marker in marker_dir (the VM's run directory) outlives this process; it is how a
        restarted agent knows an exec id was started before, and under which guest key."""
        if not EXEC_ID.match(exec_id):
            raise InvalidArgument("exec_id must be 1-64 letters, digits, '-' or '_'", reason="INVALID_EXEC_ID")
        self._forget_old()
        key = (vm_id, exec_id)
        session = self._sessions.get(key)
        if session is not None:
            LOG.info("exec %s on %s: a caller attached again", exec_id, vm_id)
            return session
        marker = marker_dir / exec_id
        if marker.exists():
            guest_key = marker.read_text().strip()
            try:
                check_exec_key(guest_key)
            except ValueError:
                raise FailedPrecondition(
                    f"execution {exec_id} on {vm_id} was started by an earlier agent and left no guest key; its output is lost",
                    reason="EXEC_LOST",
                ) from None
            LOG.info("exec %s on %s: started by an earlier agent process; following the guest's log", exec_id, vm_id)
            guest = await start()
            session = self._begin(key, ExecSession(vm_id, guest_key, guest), guest.attach(guest_key))
            return session
        marker_dir.mkdir(parents=True, exist_ok=True)
        guest_key = new_exec_key()
        marker.write_text(guest_key + "\n")
        guest = await start()
        return self._begin(key, ExecSession(vm_id, guest_key, guest), guest.exec(command, uid=uid, key=guest_key))

    def _begin(self, key: tuple[str, str], session: ExecSession, events: AsyncIterator[ExecEvent]) -> ExecSession:
        self._sessions[key] = session
        session.task = asyncio.create_task(session.pump(events))
        return session

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key, session in list(self._sessions.items()):
            if session.finished_at and now - session.finished_at > RETENTION_S:
                del self._sessions[key]
                if session.guest is not None and session.exit_code is not None:
                    self._forgetting.add(asyncio.create_task(self._forget_in_guest(session.guest, session.key)))

    async def _forget_in_guest(self, guest: GuestChannel, key: str) -> None:
        try:
            await guest.forget(key)
        finally:
            self._forgetting.discard(asyncio.current_task())

    async def close(self) -> None:
        for session in self._sessions.values():
            if session.task is not None:
                session.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await session.task
