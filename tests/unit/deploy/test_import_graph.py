"""The dependency between deploy/ and clients/ is one way: the admin CLI's ``stack`` and
``images build`` verbs call the deployment code; the deployment code imports nothing from
clients/ (not the SDK: deploy/stack/gateway.py speaks the public API's stubs). And no service
imports deploy/ or clients/. Read from the source (every import, lazy ones in functions too), so
it cannot creep back unnoticed."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@functools.cache  # services/ is read for two checks
def imported_modules(path: Path) -> frozenset[str]:
    """Every module path imports, wherever the import stands (absolute imports only: the code base
    has no relative ones)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(found)


def offenders(tree: str, forbidden: str) -> list[str]:
    return sorted(
        f"{path.relative_to(REPO)}: {module}"
        for path in (REPO / tree).rglob("*.py")
        for module in imported_modules(path)
        if module == forbidden or module.startswith(f"{forbidden}.")
    )


@pytest.mark.parametrize(("tree", "forbidden"), [
    ("deploy", "clients"), ("services", "deploy"), ("services", "clients"),
    # Of clients/, only the admin CLI and the demo (clients/demo.py) drive a deployment.
    ("clients/wnodes_client", "deploy"), ("clients/wnodes_cli", "deploy"), ("clients/lrms", "deploy"),
])  # fmt: skip
def test_a_tree_does_not_import_the_other(tree: str, forbidden: str) -> None:
    # Execute / Verify
    assert offenders(tree, forbidden) == []


def test_the_admin_cli_reaches_the_deployment_code() -> None:
    # The one-way dependency exists and is where the brief says: if this fails, the check above
    # may be scanning nothing.
    admin = imported_modules(REPO / "clients" / "wnodes_admin" / "main.py")
    assert "deploy.stack.stack" in admin and "deploy.images.recipe_build" in admin


def test_a_lazy_import_in_a_function_is_seen(tmp_path: Path) -> None:
    # Setup
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from clients.wnodes_client import Client\n    import clients.output\n")

    # Execute / Verify
    assert {"clients.wnodes_client", "clients.output"} <= imported_modules(source)
