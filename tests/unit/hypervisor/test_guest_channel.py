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

from services.hypervisor.drivers.base import ExecEvent, Exit, GuestChannel, GuestNotReady, Stderr, Stdout
from services.hypervisor.drivers.libvirt.domain_xml import ChannelPaths
from services.hypervisor.drivers.libvirt.guest_channel import VirtioSerialChannel, split_at_marker


@dataclass
class FakeGuest:
    """Listens where QEMU would and answers like deploy/images/guest/wnodes-init.sh.

    A command is a list of ("out"|"err", bytes) writes, looked up by its text in `scripts`;
    `exit_first` sends EXIT before the end markers (the host must still wait for them),
    `split_markers` writes each end marker in two pieces and `stale` is written before each start
    marker (as the tail of an earlier command whose host end crashed would be).
    """

    paths: ChannelPaths
    scripts: dict[str, tuple[list[tuple[str, bytes]], int]] = field(default_factory=dict)
    exit_first: bool = False
    split_markers: bool = False
    hang_on: str = ""
    stale: bytes = b""
    received: list[str] = field(default_factory=list)
    writers: dict[str, asyncio.StreamWriter] = field(default_factory=dict)
    servers: list[asyncio.Server] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        for role, path in (("control", self.paths.control), ("stdout", self.paths.stdout), ("stderr", self.paths.stderr)):
            self.servers.append(await asyncio.start_unix_server(functools.partial(self._accept, role), path=str(path)))

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for writer in self.writers.values():
            writer.close()

    async def _accept(self, role: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers[role] = writer
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
            await writer.drain()

    async def _exec(self, nonce: str, command: str) -> None:
        if command == self.hang_on:
            await asyncio.Event().wait()
        writes, code = self.scripts.get(command, ([], 0))
        for role in ("stdout", "stderr"):
            self.writers[role].write(self.stale + nonce.encode())
            await self.writers[role].drain()
        if self.exit_first:
            self.writers["control"].write(f"EXIT {nonce} {code}\n".encode())
            await self.writers["control"].drain()
            await asyncio.sleep(0.05)  # the host sees EXIT well before the output
        for stream, data in writes:
            w = self.writers["stdout" if stream == "out" else "stderr"]
            w.write(data)
            await w.drain()
            await asyncio.sleep(0)
        for role in ("stdout", "stderr"):
            marker = nonce.encode()
            pieces = [marker[:5], marker[5:]] if self.split_markers else [marker]
            for piece in pieces:
                self.writers[role].write(piece)
                await self.writers[role].drain()
                await asyncio.sleep(0.01)
        if not self.exit_first:
            self.writers["control"].write(f"EXIT {nonce} {code}\n".encode())


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


@pytest.mark.parametrize(
    ("buffer", "expected"),
    [
        (b"hello", (b"hello", b"", False)),
        (b"hello MARK tail", (b"hello ", b"", True)),
        (b"helloMA", (b"hello", b"MA", False)),
        (b"M", (b"", b"M", False)),
        (b"MARK", (b"", b"", True)),
        (b"MAMARK", (b"MA", b"", True)),
        (b"", (b"", b"", False)),
    ],
)
def test_split_at_marker(buffer: bytes, expected: tuple[bytes, bytes, bool]) -> None:
    assert split_at_marker(buffer, b"MARK") == expected


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
    # Prepare: EXIT arrives before the output and the end markers, which come in pieces.
    guest.exit_first = True
    guest.split_markers = True
    guest.scripts["job"] = ([("out", b"a" * 100_000), ("err", b"e")], 0)
    channel = VirtioSerialChannel(guest.paths)

    # Execute: exec connects by itself
    out, err, events = await collect(channel.exec("job"))

    # Assert
    assert out == b"a" * 100_000 and err == b"e"
    assert events[-1] == Exit(0)
    await channel.close()


async def test_marker_lookalike_output_is_kept(guest: FakeGuest) -> None:
    # Output that starts like a nonce (hex digits) must come through whole.
    guest.scripts["hex"] = ([("out", b"0123456789abcdef"), ("out", b"0123\n")], 0)
    channel = VirtioSerialChannel(guest.paths)
    out, _, _ = await collect(channel.exec("hex"))
    assert out == b"0123456789abcdef0123\n"
    await channel.close()


async def test_execs_are_serialised(guest: FakeGuest) -> None:
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


async def test_output_before_the_start_marker_is_dropped(guest: FakeGuest) -> None:
    # Prepare: the tail of a command run for a crashed host end arrives first.
    guest.stale = b"late output of an earlier command" + b"f" * 40
    guest.scripts["job"] = ([("out", b"mine\n")], 0)
    channel = VirtioSerialChannel(guest.paths)

    # Execute
    out, err, _ = await collect(channel.exec("job"))

    # Assert
    assert (out, err) == (b"mine\n", b"")
    await channel.close()
