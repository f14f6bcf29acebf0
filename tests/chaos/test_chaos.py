"""The short chaos set (`make chaos` runs the full one): one SIGKILL of each component type under
load, then every invariant; and quorum loss."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clients.wnodes_client import Client
from deploy.stack.stack import Stack
from tests import stacks
from tests.chaos.quorum import quorum_loss
from tests.chaos.scenarios import SINGLES, Plan, run_plan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = stacks.start(tmp_path_factory.mktemp("chaos"), "fake", 20, fake_vcpus=4, fake_memory_mib=4096)
    yield s
    s.down()


@pytest.fixture(autouse=True)
def clean_slate(stack: Stack) -> Iterator[None]:
    """A plan that leaks fails itself; the next plan starts from an empty registry, so one leak
    is reported once instead of by every test after it."""
    yield
    assert stack.state is not None
    with Client(stack.state.gateway) as client:
        for vm in list(client.list_vms()):
            try:
                client.delete_vm(vm.name).result(timeout=60)
            except Exception:  # noqa: BLE001 - best effort; the next plan's invariants would show it
                pass


@pytest.mark.parametrize("plan", SINGLES, ids=[p.kills[0] for p in SINGLES])
def test_kill_under_load_keeps_every_invariant(stack: Stack, plan: Plan) -> None:
    outcome = run_plan(stack, plan)
    assert outcome.counts["accepted"] > 0, outcome.counts
    assert not outcome.verdict.violations, (outcome.counts, outcome.verdict.violations)
    assert outcome.samples > 0, "the invariants were never sampled during the run"


def test_quorum_loss_fails_fast_and_recovers(stack: Stack) -> None:
    outcome = quorum_loss(stack)
    assert not outcome.violations, outcome.summary()
