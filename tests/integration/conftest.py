from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.wnodes_client import Client
from deploy.stack.stack import Stack
from tests import stacks


@pytest.fixture(scope="module")
def fake_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """20 simulated hosts of 4 vCPUs and 8 GiB behind the real control plane on a real etcd cluster."""
    stack = stacks.start(tmp_path_factory.mktemp("fake"), "fake", 20, fake_vcpus=4, fake_memory_mib=8192)
    yield stack
    stack.down()


@pytest.fixture
def client(fake_stack: Stack) -> Iterator[Client]:
    state = fake_stack.state
    assert state is not None
    with Client(state.gateway, user="alice", vo="atlas") as c:
        yield c


def wnodes_env(stack: Stack, user: str = "alice", vo: str = "atlas") -> dict[str, str]:
    import os

    state = stack.state
    assert state is not None
    return {**os.environ, "WNODES_GATEWAY": state.gateway, "WNODES_USER": user, "WNODES_VO": vo}


def venv_bin(name: str) -> str:
    return str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / name)
