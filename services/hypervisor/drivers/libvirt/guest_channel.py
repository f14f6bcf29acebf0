"""The host end of a guest's virtio-serial channel: three unix sockets QEMU listens on.

Protocol (the guest side, and its full description, is deploy/images/guest/wnodes-init.sh):

- ``org.wnodes.control`` carries lines. Host: ``PING``, ``EXEC <key> <uid> <base64 command>``,
  ``ATTACH <key> <stdout offset> <stderr offset>``, ``FORGET <key>``, ``POWEROFF``. Guest:
  ``READY <kernel release>`` (at boot, after each reconnection of the host end and in answer to
  PING), ``EXIT <key> <code> <stdout bytes> <stderr bytes>`` once a command ended and its output
  was sent, ``LOST <key>`` (ATTACH to an execution it does not know), ``ERROR <text>``, and
  ``LOG <text>``: a line of the guest's syslog (images customised with syslog to the hypervisor),
  logged here through ``GUEST_LOG`` with the VM's name, so it lands in the agent's log.
- ``org.wnodes.stdout`` and ``org.wnodes.stderr`` carry frames: ``WNF1 <key> <offset> <length>\\n``
  then that many bytes of the command's log from that offset. The guest logs every command's
  output to files and a single streamer sends them, so a host end that restarted mid-command (or
  mid-frame) asks with ATTACH and gets the output again from any offset: nothing is lost, and
  offsets make repeats harmless.

The guest blocks writing to a port while the host end is not connected, and QEMU keeps what the
host sends until the guest reads: either end may come first. Only one host end can be connected
to a socket at a time; a second one waits until the first closes (QEMU accepts one client).
Commands run concurrently in the guest.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from services.hypervisor.drivers.base import (
    ExecEvent,
    ExecutionLost,
    Exit,
    GuestNotReady,
    GuestReady,
    Stderr,
    Stdout,
    check_exec_key,
    new_exec_key,
)
from services.hypervisor.drivers.libvirt.domain_xml import ChannelPaths

LOG = logging.getLogger(__name__)
# The guests' own syslog lines (LOG on the control port): a logger of their own, so a site can
# route or silence them apart from the agent's messages.
GUEST_LOG = logging.getLogger("wnodes.guest.syslog")

_READ_SIZE = 65536
_QUEUE_SIZE = 256
_FRAME_HEADER = re.compile(rb"WNF1 ([0-9a-f]{32}) ([0-9]{1,20}) ([0-9]{1,20})\n")
_LONGEST_HEADER = 5 + 32 + 1 + 20 + 1 + 20 + 1


@dataclass(frozen=True)
class Piece:
    """Bytes of one execution's log, at an offset."""

    key: str
    offset: int
    data: bytes


class FrameReader:
    """Cuts a port's byte stream into pieces of frames, as the bytes arrive.

    A frame's payload is handed on in pieces (a 1 MiB frame is not held back until it is whole).
    Bytes outside a frame (the tail of a frame whose start a crashed host end read) are dropped.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._key = ""
        self._offset = 0
        self._remaining = 0
        self.dropped = 0

    def feed(self, data: bytes) -> list[Piece]:
        pieces: list[Piece] = []
        buffer = self._buffer + data
        while buffer:
            if self._remaining:
                chunk = buffer[: self._remaining]
                buffer = buffer[len(chunk) :]
                pieces.append(Piece(self._key, self._offset, chunk))
                self._offset += len(chunk)
                self._remaining -= len(chunk)
                continue
            match = _FRAME_HEADER.search(buffer)
            if match is None:
                # Keep what could be the start of a header cut by the read.
                keep = buffer[-(_LONGEST_HEADER - 1) :]
                self.dropped += len(buffer) - len(keep)
                buffer = keep
                break
            self.dropped += match.start()
            self._key = match.group(1).decode()
            self._offset = int(match.group(2))
            self._remaining = int(match.group(3))
            buffer = buffer[match.end() :]
        self._buffer = buffer
        return pieces


class _Wake:
    """Queued to wake a listener after the channel failed."""


@dataclass
class _Exec:
    key: str
    queue: asyncio.Queue[ExecEvent | _Wake] = field(default_factory=lambda: asyncio.Queue(_QUEUE_SIZE))
    received: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    # (code, stdout bytes, stderr bytes) from the EXIT line
    exit: tuple[int, int, int] | None = None
    finished: bool = False
    # An ATTACH is on its way: later gaps are the guest still sending what came before it.
    asked: bool = False
    error: Exception | None = None

    async def emit(self, event: ExecEvent | _Wake) -> None:
        await self.queue.put(event)

    def fail(self, error: Exception) -> None:
        self.error = error
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_Wake())

    async def events(self) -> AsyncIterator[ExecEvent]:
        while True:
            if self.error is not None and self.queue.empty():
                raise self.error
            event = await self.queue.get()
            if isinstance(event, _Wake):
                continue
            yield event
            if isinstance(event, Exit):
                return


class _Connection:
    """One connection to the three sockets and the tasks reading them."""

    def __init__(
        self,
        name: str,
        streams: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    ) -> None:
        self.name = name
        self._streams = streams
        self.control = streams["control"][1]
        self.ready = asyncio.Event()
        self.kernel_release = ""
        self.broken = asyncio.Event()
        self.error: GuestNotReady | None = None
        self.execs: dict[str, _Exec] = {}
        self._tasks = [
            asyncio.create_task(self._read_control(streams["control"][0])),
            asyncio.create_task(self._read_output("stdout", streams["stdout"][0])),
            asyncio.create_task(self._read_output("stderr", streams["stderr"][0])),
        ]

    @property
    def alive(self) -> bool:
        return not self.broken.is_set()

    def follow(self, key: str) -> _Exec:
        if key in self.execs:
            raise GuestNotReady(f"{self.name}: execution {key} is already followed on this channel")
        job = self.execs[key] = _Exec(key)
        if not self.alive:
            job.fail(self.error or GuestNotReady(f"{self.name}: channel closed"))
        return job

    def unfollow(self, job: _Exec) -> None:
        if self.execs.get(job.key) is job:
            del self.execs[job.key]

    async def send(self, line: str) -> None:
        if not self.alive:
            raise self.error or GuestNotReady(f"{self.name}: channel closed")
        try:
            self.control.write(line.encode() + b"\n")
            await self.control.drain()
        except (ConnectionError, OSError) as exc:
            self._fail(f"writing to the control channel failed: {exc}")
            raise self.error or GuestNotReady(str(exc)) from exc

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, writer in self._streams.values():
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        self._fail("channel closed by the host")

    def _fail(self, why: str) -> None:
        if self.broken.is_set():
            return
        self.error = GuestNotReady(f"{self.name}: {why}")
        self.broken.set()
        for job in self.execs.values():
            job.fail(self.error)

    async def _read_control(self, reader: asyncio.StreamReader) -> None:
        try:
            while line_bytes := await reader.readline():
                await self._on_control(line_bytes.decode(errors="replace").strip())
        except (ConnectionError, OSError, ValueError) as exc:
            self._fail(f"control channel failed: {exc}")
            return
        self._fail("control channel closed (guest stopped?)")

    async def _on_control(self, line: str) -> None:
        verb, _, rest = line.partition(" ")
        if verb == "READY":
            self.kernel_release = rest.strip()
            self.ready.set()
        elif verb == "EXIT":
            fields = rest.split(" ")
            job = self.execs.get(fields[0])
            if job is None:
                LOG.debug("%s: ignoring EXIT of a command nobody follows", self.name)
                return
            try:
                code, out, err = (int(f) for f in fields[1:4])
            except ValueError:
                LOG.warning("%s: bad EXIT line %r", self.name, line)
                job.fail(GuestNotReady(f"{self.name}: the guest agent sent a bad EXIT line {line!r}"))
                return
            job.exit = (code, out, err)
            await self._finish_if_done(job)
        elif verb == "LOST":
            job = self.execs.get(rest.strip())
            if job is not None:
                job.fail(ExecutionLost(f"{self.name}: the guest has no log of execution {job.key} (did it reboot?)"))
        elif verb == "LOG":
            GUEST_LOG.info("%s: %s", self.name, rest)
        elif verb == "ERROR":
            LOG.warning("%s: guest agent error: %s", self.name, rest)
        elif line:
            LOG.debug("%s: ignoring control line %r", self.name, line)

    async def _read_output(self, stream: str, reader: asyncio.StreamReader) -> None:
        frames = FrameReader()
        try:
            while data := await reader.read(_READ_SIZE):
                for piece in frames.feed(data):
                    await self._on_piece(stream, piece)
                if frames.dropped:
                    LOG.debug("%s: dropped %d bytes of %s outside frames", self.name, frames.dropped, stream)
                    frames.dropped = 0
        except (ConnectionError, OSError) as exc:
            self._fail(f"{stream} channel failed: {exc}")
            return
        self._fail(f"{stream} channel closed (guest stopped?)")

    async def _on_piece(self, stream: str, piece: Piece) -> None:
        job = self.execs.get(piece.key)
        if job is None or job.finished:
            return
        have = job.received[stream]
        if piece.offset > have:
            # Bytes before these went to an earlier host end: ask for them again, once.
            if not job.asked:
                job.asked = True
                with contextlib.suppress(GuestNotReady):  # send() failed the connection already
                    await self.send(f"ATTACH {job.key} {job.received['stdout']} {job.received['stderr']}")
            return
        new = piece.data[have - piece.offset :]
        if not new:
            return
        job.received[stream] += len(new)
        job.asked = False
        await job.emit(Stdout(new) if stream == "stdout" else Stderr(new))
        await self._finish_if_done(job)

    async def _finish_if_done(self, job: _Exec) -> None:
        if job.exit is None or job.finished:
            return
        code, out, err = job.exit
        if job.received["stdout"] < out or job.received["stderr"] < err:
            return  # frames on the other ports are still on their way
        job.finished = True
        await job.emit(Exit(code))


class VirtioSerialChannel:
    """GuestChannel over the unix sockets of a guest's org.wnodes.{control,stdout,stderr} ports.

    ``wait_ready`` connects (retrying until the sockets accept), sends PING and waits for READY;
    ``exec`` and ``attach`` connect first if needed.
    """

    def __init__(self, paths: ChannelPaths, *, name: str = "guest", connect_timeout: float = 60.0) -> None:
        self._paths = paths
        self._name = name
        self._connect_timeout = connect_timeout
        self._connect_lock = asyncio.Lock()
        self._conn: _Connection | None = None
        self._ready: GuestReady | None = None

    async def wait_ready(self, timeout: float) -> GuestReady:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and conn.alive and self._ready is not None:
                return self._ready
            if conn is None or not conn.alive:
                conn = self._conn = await self._connect(deadline)
            await conn.send("PING")
            await self._wait_for(conn.ready, conn, deadline, f"no READY within {timeout:.1f} s")
            self._ready = GuestReady(kernel_release=conn.kernel_release)
            LOG.debug("%s: guest ready, kernel %s", self._name, conn.kernel_release)
            return self._ready

    async def exec(self, command: str, uid: int = 0, key: str = "") -> AsyncIterator[ExecEvent]:
        if uid < 0:
            raise ValueError(f"uid must be >= 0, not {uid}")
        key = key or new_exec_key()
        check_exec_key(key)
        encoded = base64.b64encode(command.encode()).decode()
        async for event in self._follow(key, f"EXEC {key} {uid} {encoded}"):
            yield event

    async def attach(self, key: str) -> AsyncIterator[ExecEvent]:
        check_exec_key(key)
        async for event in self._follow(key, f"ATTACH {key} 0 0", asked=True):
            yield event

    async def forget(self, key: str) -> None:
        check_exec_key(key)
        conn = self._conn
        if conn is not None and conn.alive:
            with contextlib.suppress(GuestNotReady):
                await conn.send(f"FORGET {key}")

    async def close(self) -> None:
        async with self._connect_lock:
            conn, self._conn = self._conn, None
            self._ready = None
            if conn is not None:
                await conn.close()

    async def _follow(self, key: str, request: str, *, asked: bool = False) -> AsyncIterator[ExecEvent]:
        conn = self._conn
        if conn is None or not conn.alive or self._ready is None:
            await self.wait_ready(self._connect_timeout)
            conn = self._conn
            assert conn is not None
        job = conn.follow(key)
        job.asked = asked
        try:
            await conn.send(request)
            async for event in job.events():
                yield event
        finally:
            conn.unfollow(job)

    async def _connect(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        streams: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        paths = {"control": self._paths.control, "stdout": self._paths.stdout,
                 "stderr": self._paths.stderr}  # fmt: skip
        try:
            for role, path in paths.items():
                while True:
                    try:
                        streams[role] = await asyncio.open_unix_connection(str(path), limit=_READ_SIZE)
                        break
                    except (FileNotFoundError, ConnectionRefusedError) as exc:
                        if loop.time() >= deadline:
                            raise GuestNotReady(f"{self._name}: cannot connect to {path}: {exc}") from exc
                        await asyncio.sleep(0.02)
        except BaseException:
            for _, writer in streams.values():
                writer.close()
            raise
        LOG.debug("%s: connected to %s", self._name, self._paths.control.parent)
        return _Connection(self._name, streams)

    async def _wait_for(self, event: asyncio.Event, conn: _Connection, deadline: float | None, why: str) -> None:
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(conn.broken.wait())}
        timeout = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if event.is_set():
            return
        if not conn.alive:
            raise conn.error or GuestNotReady(f"{self._name}: channel closed")
        raise GuestNotReady(f"{self._name}: {why}")
