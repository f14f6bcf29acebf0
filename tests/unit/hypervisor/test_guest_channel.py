"""VirtioSerialChannel against a fake guest speaking the wnodes-init protocol on unix sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.hypervisor.drivers.base import (
    ExecEvent,
    ExecutionLost,
    Exit,
    GuestChannel,
    GuestNotReady,
    Stderr,
    Stdout,
    new_exec_key,
)
from services.hypervisor.drivers.libvirt.domain_xml import ChannelPaths
from services.hypervisor.drivers.libvirt.guest_channel import FrameReader, Piece, VirtioSerialChannel


def frame(key: str, offset: int, data: bytes) -> bytes:
    return f"WNF1 {key} {offset} {len(data)}\n".encode() + data


@dataclass
class FakeGuest:
    """Listens where QEMU would and answers like deploy/images/guest/wnodes-init.sh.

    A command is a list of ("out"|"err", bytes) writes, looked up by its text in `scripts`; the
    guest logs them by key, so ATTACH sends them again. `exit_first` sends EXIT before the frames;
    `chunk` writes frames in pieces of that many bytes; `stale` goes out before the first frame
    (the tail of a frame a crashed host end read the start of); `repeat` sends each frame twice;
    `skip_first` drops the first frame of each stream (as a crashed host end would have eaten it),
    so the host must notice the gap and ask again.
    """

    paths: ChannelPaths
    scripts: dict[str, tuple[list[tuple[str, bytes]], int]] = field(default_factory=dict)
    logs: dict[str, dict[str, bytes]] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    exit_first: bool = False
    chunk: int = 0
    stale: bytes = b""
    repeat: bool = False
    skip_first: bool = False
    hang_on: str = ""
    received: list[str] = field(default_factory=list)
    writers: dict[str, asyncio.StreamWriter] = field(default_factory=dict)
    servers: list[asyncio.Server] = field(default_factory=list)
    # Every connection ever accepted: a host end that reconnects replaces `writers`, and the
    # old connections must be closed too (or they leak as ResourceWarnings).
    accepted: list[asyncio.StreamWriter] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        for role, path in (("control", self.paths.control), ("stdout", self.paths.stdout), ("stderr", self.paths.stderr)):
            self.servers.append(await asyncio.start_unix_server(functools.partial(self._accept, role), path=str(path)))

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for writer in self.accepted:
            writer.close()
        for writer in self.accepted:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _accept(self, role: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers[role] = writer
        self.accepted.append(writer)
        if len(self.writers) == 3:
            self.connected.set()
        if role != "control":
            with contextlib.suppress(ConnectionError):
                await reader.read()
            return
        writer.write(b"READY 6.1.0-fake\n")
        while line := await reader.readline():
            text = line.decode().strip()
            self.received.append(text)
            verb, *args = text.split(" ")
            if verb == "PING":
                writer.write(b"READY 6.1.0-fake\n")
            elif verb == "EXEC":
                await self._exec(args[0], base64.b64decode(args[2]).decode())
            elif verb == "ATTACH":
                if args[0] not in self.logs:
                    writer.write(f"LOST {args[0]}\n".encode())
                else:
                    await self._stream(args[0], int(args[1]), int(args[2]), first=False)
            await writer.drain()

    async def _exec(self, key: str, command: str) -> None:
        if command == self.hang_on:
            await asyncio.Event().wait()
        writes, code = self.scripts.get(command, ([], 0))
        log = self.logs[key] = {"stdout": b"", "stderr": b""}
        self.codes[key] = code
        for stream, data in writes:
            log["stdout" if stream == "out" else "stderr"] += data
        await self._stream(key, 0, 0, first=True)

    async def _stream(self, key: str, out: int, err: int, *, first: bool) -> None:
        log, code = self.logs[key], self.codes[key]
        if self.exit_first:
            await self._send("control", f"EXIT {key} {code} {len(log['stdout'])} {len(log['stderr'])}\n".encode())
            await asyncio.sleep(0.05)  # the host sees EXIT well before the output
        for role, offset in (("stdout", out), ("stderr", err)):
            data = log[role][offset:]
            if not data:
                continue
            await self._send(role, self.stale)
            pieces = [frame(key, offset, data[:3]), frame(key, offset + 3, data[3:])] if len(data) > 3 else [frame(key, offset, data)]
            if self.skip_first and first:
                pieces = pieces[1:]
            for piece in pieces:
                for _ in range(2 if self.repeat else 1):
                    await self._send(role, piece)
        if not self.exit_first:
            await self._send("control", f"EXIT {key} {code} {len(log['stdout'])} {len(log['stderr'])}\n".encode())

    async def _send(self, role: str, data: bytes) -> None:
        writer = self.writers[role]
        step = self.chunk or max(1, len(data))
        for start in range(0, len(data), step):
            writer.write(data[start : start + step])
            await writer.drain()
            if self.chunk:
                await asyncio.sleep(0)


@pytest.fixture
async def guest(tmp_path: Path) -> AsyncIterator[FakeGuest]:
    fake = FakeGuest(ChannelPaths.in_dir(tmp_path))
    await fake.start()
    yield fake
    await fake.stop()


async def collect(events: AsyncIterator[ExecEvent]) -> tuple[bytes, bytes, list[ExecEvent]]:
    out, err, seen = b"", b"", []
    async for event in events:
        seen.append(event)
        if isinstance(event, Stdout):
            out += event.data
        elif isinstance(event, Stderr):
            err += event.data
    return out, err, seen


def conforms(channel: VirtioSerialChannel) -> GuestChannel:
    """mypy checks that VirtioSerialChannel implements the GuestChannel protocol."""
    return channel


KEY = "0123456789abcdef0123456789abcdef"


def test_frame_reader_cuts_headers_split_across_reads() -> None:
    stream = b"junk" + frame(KEY, 0, b"hello") + frame(KEY, 5, b" world")
    for size in (1, 3, 7, len(stream)):
        reader = FrameReader()
        pieces: list[Piece] = []
        for start in range(0, len(stream), size):
            pieces.extend(reader.feed(stream[start : start + size]))
        assert b"".join(p.data for p in pieces) == b"hello world", size
        assert all(p.key == KEY for p in pieces)
        assert [p.offset for p in pieces if p.data][0] == 0
        assert reader.dropped == 4


def test_frame_reader_keeps_header_lookalikes_inside_a_payload() -> None:
    inner = frame("f" * 32, 9, b"x")
    pieces = FrameReader().feed(frame(KEY, 0, inner))
    assert b"".join(p.data for p in pieces) == inner


async def test_wait_ready_pings_and_remembers(guest: FakeGuest) -> None:
    # Prepare
    channel = VirtioSerialChannel(guest.paths)

    # Execute
    ready = await channel.wait_ready(5)
    again = await channel.wait_ready(5)

    # Assert
    assert ready.kernel_release == "6.1.0-fake"
    assert again is ready
    assert guest.received == ["PING"]
    await channel.close()


async def test_wait_ready_retries_until_sockets_exist(tmp_path: Path) -> None:
    # Prepare: the channel starts waiting before the "guest" listens.
    fake = FakeGuest(ChannelPaths.in_dir(tmp_path))
    channel = VirtioSerialChannel(fake.paths)
    waiting = asyncio.create_task(channel.wait_ready(5))
    await asyncio.sleep(0.1)

    # Execute
    await fake.start()
    ready = await waiting

    # Assert
    assert ready.kernel_release == "6.1.0-fake"
    await channel.close()
    await fake.stop()


async def test_wait_ready_times_out(tmp_path: Path) -> None:
    channel = VirtioSerialChannel(ChannelPaths.in_dir(tmp_path))
    with pytest.raises(GuestNotReady):
        await channel.wait_ready(0.2)


async def test_exec_streams_output_and_exit(guest: FakeGuest) -> None:
    # Prepare
    guest.scripts["job"] = ([("out", b"line 1\n"), ("err", b"oops\n"), ("out", b"line 2\n")], 3)
    channel = VirtioSerialChannel(guest.paths)
    await channel.wait_ready(5)

    # Execute
    out, err, events = await collect(channel.exec("job", uid=1000))

    # Assert
    assert (out, err) == (b"line 1\nline 2\n", b"oops\n")
    assert events[-1] == Exit(3) and sum(isinstance(e, Exit) for e in events) == 1
    assert guest.received[-1].startswith("EXEC ") and guest.received[-1].split(" ")[2] == "1000"
    await channel.close()


async def test_all_output_before_exit_even_when_exit_line_comes_first(guest: FakeGuest) -> None:
    # Prepare: EXIT arrives before the output, whose frames come in small pieces.
    guest.exit_first = True
    guest.chunk = 7
    guest.scripts["job"] = ([("out", b"a" * 100_000), ("err", b"e")], 0)
    channel = VirtioSerialChannel(guest.paths)

    # Execute: exec connects by itself
    out, err, events = await collect(channel.exec("job"))

    # Assert
    assert out == b"a" * 100_000 and err == b"e"
    assert events[-1] == Exit(0)
    await channel.close()


async def test_frame_lookalike_output_is_kept(guest: FakeGuest) -> None:
    text = b"WNF1 " + KEY.encode() + b" 0 3\nabc and 0123456789abcdef\n"
    guest.scripts["echo"] = ([("out", text)], 0)
    channel = VirtioSerialChannel(guest.paths)
    out, _, _ = await collect(channel.exec("echo"))
    assert out == text
    await channel.close()


async def test_execs_run_concurrently(guest: FakeGuest) -> None:
    # Prepare
    guest.scripts["one"] = ([("out", b"1")], 1)
    guest.scripts["two"] = ([("out", b"2")], 2)
    channel = VirtioSerialChannel(guest.paths)
    await channel.wait_ready(5)

    # Execute
    results = await asyncio.gather(*(collect(channel.exec(c)) for c in ("one", "two", "one")))

    # Assert
    assert [(r[0], r[2][-1]) for r in results] == [(b"1", Exit(1)), (b"2", Exit(2)), (b"1", Exit(1))]
    await channel.close()


async def test_abandoned_exec_does_not_leak_into_the_next(guest: FakeGuest) -> None:
    # Prepare
    guest.scripts["long"] = ([("out", b"first "), ("out", b"rest of long")], 0)
    guest.scripts["next"] = ([("out", b"next")], 0)
    channel = VirtioSerialChannel(guest.paths)

    # Execute: stop listening after the first chunk
    events = channel.exec("long")
    async for _ in events:
        break
    await events.aclose()  # type: ignore[attr-defined]
    out, _, _ = await collect(channel.exec("next"))

    # Assert
    assert out == b"next"
    await channel.close()


async def test_guest_gone_during_exec(guest: FakeGuest) -> None:
    # Prepare
    guest.hang_on = "hang"
    channel = VirtioSerialChannel(guest.paths)
    await channel.wait_ready(5)

    # Execute: the guest disappears while the command runs
    async def consume() -> None:
        await collect(channel.exec("hang"))

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    await guest.stop()

    # Assert
    with pytest.raises(GuestNotReady):
        await asyncio.wait_for(task, 5)
    await channel.close()


async def test_reconnect_after_close(guest: FakeGuest) -> None:
    # The host end can close and reconnect (as a restarted agent does).
    first = VirtioSerialChannel(guest.paths)
    await first.wait_ready(5)
    await first.close()
    second = VirtioSerialChannel(guest.paths)
    assert (await second.wait_ready(5)).kernel_release == "6.1.0-fake"
    await second.close()


async def test_bytes_outside_frames_and_repeats_are_dropped(guest: FakeGuest) -> None:
    # Prepare: the tail of a frame read half by a crashed host end arrives first; frames repeat.
    guest.stale = b"late output of an earlier command" + b"f" * 40
    guest.repeat = True
    guest.scripts["job"] = ([("out", b"mine\n"), ("err", b"err\n")], 0)
    channel = VirtioSerialChannel(guest.paths)

    # Execute
    out, err, _ = await collect(channel.exec("job"))

    # Assert
    assert (out, err) == (b"mine\n", b"err\n")
    await channel.close()


async def test_a_gap_makes_the_host_ask_again(guest: FakeGuest) -> None:
    # Prepare: the first frame of each stream never arrives.
    guest.skip_first = True
    guest.scripts["job"] = ([("out", b"0123456789"), ("err", b"abcdef")], 4)
    channel = VirtioSerialChannel(guest.paths)

    # Execute
    out, err, events = await collect(channel.exec("job"))

    # Assert
    assert (out, err, events[-1]) == (b"0123456789", b"abcdef", Exit(4))
    assert any(line.startswith("ATTACH ") for line in guest.received)
    await channel.close()


async def test_a_new_host_end_attaches_and_gets_everything(guest: FakeGuest) -> None:
    # Prepare: a command ran for a host end that is gone (a restarted agent).
    guest.scripts["job"] = ([("out", b"before "), ("out", b"after\n"), ("err", b"e\n")], 5)
    key = new_exec_key()
    first = VirtioSerialChannel(guest.paths)
    events = first.exec("job", key=key)
    async for _ in events:
        break
    await events.aclose()  # type: ignore[attr-defined]
    await first.close()

    # Execute
    second = VirtioSerialChannel(guest.paths)
    out, err, seen = await collect(second.attach(key))

    # Assert
    assert (out, err, seen[-1]) == (b"before after\n", b"e\n", Exit(5))
    await second.close()


async def test_attach_to_an_unknown_execution_is_lost(guest: FakeGuest) -> None:
    channel = VirtioSerialChannel(guest.paths)
    with pytest.raises(ExecutionLost):
        await collect(channel.attach(new_exec_key()))
    await channel.close()


async def test_keys_are_checked(guest: FakeGuest) -> None:
    channel = VirtioSerialChannel(guest.paths)
    with pytest.raises(ValueError, match="32 lowercase hex"):
        await collect(channel.exec("job", key="not-a-key"))
    await channel.close()


async def test_guest_syslog_lines_go_to_the_agents_log(guest: FakeGuest, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare
    channel = VirtioSerialChannel(guest.paths)
    await channel.wait_ready(5)

    # Execute: LOG lines come unasked, between the agent's answers
    with caplog.at_level("INFO", logger="wnodes.guest.syslog"):
        await guest._send("control", b"LOG Nov 26 03:00:00 vwn-1 user.notice root: hello-from-guest\n")
        out, _, _ = await collect(channel.exec("echo ok"))  # the protocol goes on as before
        await asyncio.sleep(0.05)

    # Assert
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.name == "wnodes.guest.syslog"] == [
        "Nov 26 03:00:00 vwn-1 user.notice root: hello-from-guest"
    ]
    assert out == b""
    await channel.close()
