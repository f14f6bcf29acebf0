from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.stack.stack import Stack
from tests import stacks


@pytest.fixture(scope="session")
def vm_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole stack with one real hypervisor agent driving libvirt + QEMU, and a real Slurm
    whose node is that hypervisor."""
    if not (stacks.IMAGES / "tiny" / "manifest.json").exists():
        raise pytest.UsageError("guest images are not built: run 'make setup'")
    stack = stacks.start(tmp_path_factory.mktemp("vms"), "libvirt", with_slurm=True)
    yield stack
    stack.down()


def env_for(stack: Stack, user: str = "alice", vo: str = "atlas") -> dict[str, str]:
    state = stack.state
    assert state is not None
    return {**os.environ, "WNODES_GATEWAY": state.gateway, "WNODES_USER": user, "WNODES_VO": vo}


def wnodes_bin() -> str:
    return str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "wnodes")
