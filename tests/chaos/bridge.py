"""A cuttable link between a network namespace and the host's loopback, made of unix sockets.

    python -m tests.chaos.bridge host  DIR PORT...   # in the host namespace: DIR/PORT.sock -> 127.0.0.1:PORT
    python -m tests.chaos.bridge guest DIR PORT...   # in the namespace: 127.0.0.1:PORT -> DIR/PORT.sock

A namespace shares the file system, not the network: the two halves carry TCP between the
namespace's loopback and the host's through unix sockets, so nothing leaves loopback and no
address has to be configured. SIGSTOP on either half is a partition (bytes stop, nothing is
reset, the peers only find out through their own timeouts); SIGCONT heals it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


async def _splice(client: tuple[asyncio.StreamReader, asyncio.StreamWriter], opener) -> None:  # type: ignore[no-untyped-def]
    try:
        upstream = await opener()
    except OSError:
        client[1].close()
        return
    await asyncio.gather(_pipe(client[0], upstream[1]), _pipe(upstream[0], client[1]))


async def main(side: str, directory: Path, ports: list[int]) -> None:
    servers = []
    for port in ports:
        sock = str(directory / f"{port}.sock")
        if side == "host":
            Path(sock).unlink(missing_ok=True)
            servers.append(await asyncio.start_unix_server(
                lambda r, w, p=port: _splice((r, w), lambda: asyncio.open_connection("127.0.0.1", p)), path=sock))
        else:
            servers.append(await asyncio.start_server(
                lambda r, w, s=sock: _splice((r, w), lambda: asyncio.open_unix_connection(s)), "127.0.0.1", port))
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), [int(p) for p in sys.argv[3:]]))
