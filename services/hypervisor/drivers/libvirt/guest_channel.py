"""The host end of a guest's virtio-serial channel: three unix sockets QEMU listens on.

Protocol (the guest side is deploy/images/guest/wnodes-init.sh):

- ``org.wnodes.control`` carries lines. Host: ``PING``, ``EXEC <nonce> <uid> <base64 command>``,
  ``POWEROFF``. Guest: ``READY <kernel release>`` (at boot, after each reconnection of the host
  end and in answer to PING), ``EXIT <nonce> <code>`` when a command ended, ``ERROR <text>``.
- ``org.wnodes.stdout`` and ``org.wnodes.stderr`` carry a command's output as written. A byte
  stream has no per-command end of file, so the guest writes the nonce (32 hex digits, nothing
  around them) to both before the command starts and again when it ended. This end drops what
  comes before the start marker (the tail of an earlier command whose host end crashed, output of
  background processes), strips the markers, and yields Exit only once both end markers and the
  EXIT line arrived, so every byte written before the command ended is delivered before Exit.

The guest blocks writing to a port while the host end is not connected, and QEMU keeps what the
host sends until the guest reads: either end may come first. Only one host end can be connected
to a socket at a time; a second one waits until the first closes (QEMU accepts one client).

Output outside a command's start and end markers is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from services.hypervisor.drivers.base import ExecEvent, Exit, GuestNotReady, GuestReady, Stderr, Stdout
from services.hypervisor.drivers.libvirt.domain_xml import ChannelPaths

LOG = logging.getLogger(__name__)

_READ_SIZE = 65536
_QUEUE_SIZE = 256


def split_at_marker(buffer: bytes, marker: bytes) -> tuple[bytes, bytes, bool]:
    """Splits a stream buffer at an end marker.

    Returns (bytes that are output for sure, bytes to keep until more data arrives, whether the
    marker was found). When the marker is found, what follows it is dropped. Otherwise only the
    longest tail of the buffer that could be the start of the marker is kept back.
    """
    index = buffer.find(marker)
    if index >= 0:
        return buffer[:index], b"", True
    for keep in range(min(len(marker) - 1, len(buffer)), 0, -1):
        if buffer.endswith(marker[:keep]):
            return buffer[:-keep], buffer[-keep:], False
    return buffer, b"", False


class _Wake:
    """Queued to wake an exec waiting for events after the channel failed."""


@dataclass
class _Exec:
    nonce: str
    queue: asyncio.Queue[ExecEvent | _Wake] = field(default_factory=lambda: asyncio.Queue(_QUEUE_SIZE))
    pending: dict[str, bytes] = field(default_factory=lambda: {"stdout": b"", "stderr": b""})
    started: dict[str, bool] = field(default_factory=lambda: {"stdout": False, "stderr": False})
    ended: dict[str, bool] = field(default_factory=lambda: {"stdout": False, "stderr": False})
    exit_code: int | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    error: GuestNotReady | None = None
    abandoned: bool = False

    @property
    def marker(self) -> bytes:
        return self.nonce.encode()

    async def emit(self, event: ExecEvent | _Wake) -> None:
        if not self.abandoned:
            await self.queue.put(event)

    def abandon(self) -> None:
        self.abandoned = True
        while not self.queue.empty():
            self.queue.get_nowait()


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
        self.current: _Exec | None = None
        self._tasks = [
            asyncio.create_task(self._read_control(streams["control"][0])),
            asyncio.create_task(self._read_output("stdout", streams["stdout"][0])),
            asyncio.create_task(self._read_output("stderr", streams["stderr"][0])),
        ]

    @property
    def alive(self) -> bool:
        return not self.broken.is_set()

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
        job = self.current
        if job is not None:
            job.error = self.error
            with contextlib.suppress(asyncio.QueueFull):
                job.queue.put_nowait(_Wake())

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
            nonce, _, code = rest.partition(" ")
            job = self.current
            if job is None or job.nonce != nonce:
                LOG.debug("%s: ignoring EXIT of an earlier command", self.name)
                return
            try:
                job.exit_code = int(code)
            except ValueError:
                LOG.warning("%s: bad EXIT line %r", self.name, line)
                job.exit_code = 255
            await self._finish_if_done(job)
        elif verb == "ERROR":
            LOG.warning("%s: guest agent error: %s", self.name, rest)
        elif line:
            LOG.debug("%s: ignoring control line %r", self.name, line)

    async def _read_output(self, stream: str, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(_READ_SIZE):
                await self._on_output(stream, data)
        except (ConnectionError, OSError) as exc:
            self._fail(f"{stream} channel failed: {exc}")
            return
        self._fail(f"{stream} channel closed (guest stopped?)")

    async def _on_output(self, stream: str, data: bytes) -> None:
        job = self.current
        if job is None or job.ended[stream]:
            LOG.debug("%s: dropping %d bytes of %s outside a command", self.name, len(data), stream)
            return
        data = job.pending[stream] + data
        if not job.started[stream]:
            stale, keep, found = split_at_marker(data, job.marker)
            if stale:
                LOG.debug("%s: dropping %d bytes of %s before the start marker", self.name, len(stale), stream)
            if not found:
                job.pending[stream] = keep
                return
            job.started[stream] = True
            data = data[data.index(job.marker) + len(job.marker) :]
        out, keep, found = split_at_marker(data, job.marker)
        job.pending[stream] = keep
        if out:
            await job.emit(Stdout(out) if stream == "stdout" else Stderr(out))
        if found:
            job.ended[stream] = True
            await self._finish_if_done(job)

    async def _finish_if_done(self, job: _Exec) -> None:
        if job.exit_code is None or not all(job.ended.values()) or job.finished.is_set():
            return
        job.finished.set()
        if self.current is job:
            self.current = None
        await job.emit(Exit(job.exit_code))


class VirtioSerialChannel:
    """GuestChannel over the unix sockets of a guest's org.wnodes.{control,stdout,stderr} ports.

    ``wait_ready`` connects (retrying until the sockets accept), sends PING and waits for READY;
    ``exec`` connects first if needed. Calls to ``exec`` are serialised by a lock.
    """

    def __init__(self, paths: ChannelPaths, *, name: str = "guest", connect_timeout: float = 60.0) -> None:
        self._paths = paths
        self._name = name
        self._connect_timeout = connect_timeout
        self._exec_lock = asyncio.Lock()
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

    async def exec(self, command: str, uid: int = 0) -> AsyncIterator[ExecEvent]:
        if uid < 0:
            raise ValueError(f"uid must be >= 0, not {uid}")
        async with self._exec_lock:
            conn = self._conn
            if conn is None or not conn.alive or self._ready is None:
                await self.wait_ready(self._connect_timeout)
                conn = self._conn
                assert conn is not None
            previous = conn.current
            if previous is not None:
                # An earlier caller stopped listening before its command ended: the guest runs
                # one command at a time, so wait for that one to end.
                await self._wait_for(previous.finished, conn, None, "channel lost")
            job = _Exec(nonce=secrets.token_hex(16))
            conn.current = job
            encoded = base64.b64encode(command.encode()).decode()
            try:
                await conn.send(f"EXEC {job.nonce} {uid} {encoded}")
                while True:
                    if job.error is not None and job.queue.empty():
                        raise job.error
                    event = await job.queue.get()
                    if isinstance(event, _Wake):
                        continue
                    yield event
                    if isinstance(event, Exit):
                        return
            finally:
                if not job.finished.is_set():
                    job.abandon()

    async def close(self) -> None:
        async with self._connect_lock:
            conn, self._conn = self._conn, None
            self._ready = None
            if conn is not None:
                await conn.close()

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
