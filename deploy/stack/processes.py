"""Starting, watching and stopping the stack's processes, by PID, never by name."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Starts a process in its own session (so a Ctrl-C of the caller does not reach it).

    posix_spawn, not Popen: the stack keeps processes by PID (and `alive` reaps them), so a
    Popen object would only be dropped while its child runs, which Python reports as a
    ResourceWarning ("subprocess N is still running")."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    # Resolved as Popen does: on the PATH the child gets.
    executable = shutil.which(argv[0], path=full_env.get("PATH")) or argv[0]
    with log.open("ab") as out:
        return os.posix_spawn(
            executable, argv, full_env, setsid=True,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, out.fileno(), 2),
            ],
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def stop(pid: int, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Signals pid and waits for it to go; SIGKILL after timeout."""
    if not alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.05)


def wait_until(check: Callable[[], bool], timeout: float, what: str, pid: int | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if pid is not None and not alive(pid):
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited during start-up; log tail:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} was not ready within {timeout:.0f}s")
        time.sleep(0.05)


def grpc_healthy(endpoint: str) -> bool:
    try:
        with grpc.insecure_channel(endpoint) as channel:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def tcp_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections there (a daemon that is not gRPC)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
