"""The catalogue of error reasons (services/common/error_reasons.py) against the source: every
reason services/ can raise is catalogued with its code, nothing catalogued is dead, and
docs/error-reasons.md is the catalogue's current rendering."""

from __future__ import annotations

import ast
import functools
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common import error_reasons, errors
from services.common.error_reasons import REASONS, image_state_reason, render_markdown

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ROOT / "services"
# Calls that return a catalogued reason (checked below), allowed as a reason= value.
REASON_FUNCTIONS = {"image_state_reason": (*error_reasons._BY_IMAGE_STATE.values(), "IMAGE_NOT_AVAILABLE")}


@dataclass(frozen=True)
class Raised:
    reason: str
    where: str
    error: str = ""  # the error class it is raised with, when the call names one


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value]


def _passes_on(node: ast.AST) -> bool:
    """Reads the reason of an error made elsewhere (err.reason, a stored {"reason": ...}): that
    reason was scanned where it was raised."""
    return any((isinstance(n, ast.Attribute) and n.attr == "reason") or (isinstance(n, ast.Constant) and n.value == "reason")
               for n in ast.walk(node))


def _module(rel: Path) -> str:
    return ".".join(rel.with_suffix("").parts)


def _error_class(dotted: str) -> type[errors.WnodesError]:
    module, _, name = dotted.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, errors.WnodesError), dotted
    return cls


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def scan_module(path: Path, source: str) -> tuple[list[Raised], list[str]]:
    """The reasons a module raises, and what the scan cannot vouch for (file:line: why)."""
    tree = ast.parse(source)
    rel = path.relative_to(ROOT)
    found: list[Raised] = []
    problems: list[str] = []
    constants = {
        t.id: n.value.value
        for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
        for t in n.targets if isinstance(t, ast.Name)
    }
    # Functions of this module that take a reason: (name -> positional index).
    takes_reason: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            positional = [a.arg for a in node.args.posonlyargs + node.args.args]
            if "reason" in positional:
                takes_reason[node.name] = positional.index("reason")
            defaults = dict(zip(positional[len(positional) - len(node.args.defaults):], node.args.defaults, strict=True))
            defaults |= {a.arg: d for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True) if d is not None}
            if "reason" in defaults:
                found += [Raised(s, f"{rel}:{node.lineno}") for s in _strings(defaults["reason"])]
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if (isinstance(item, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "default_reason" for t in item.targets)
                        and isinstance(item.value, ast.Constant)):
                    found.append(Raised(str(item.value.value), f"{rel}:{item.lineno}", f"{_module(rel)}.{node.name}"))
        elif isinstance(node, ast.Assign | ast.AnnAssign) and not isinstance(node.value, ast.Constant | None):
            # e.g. reason = "BACKEND_UNAVAILABLE" if ... else ""
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and "reason" in t.id.lower() for t in targets) and node.value is not None:
                found += [Raised(s, where) for s in _strings(node.value)]
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if any(isinstance(t, ast.Name) and t.id.lower() in ("reason", "default_reason") for t in node.targets):
                found += [Raised(s, where) for s in _strings(node.value)]
        elif isinstance(node, ast.Call):
            error = f"services.common.errors.{_name(node.func)}" if isinstance(getattr(errors, _name(node.func), None), type) else ""
            values = [kw.value for kw in node.keywords if kw.arg == "reason"]
            index = takes_reason.get(_name(node.func))
            if index is not None and len(node.args) > index:
                values.append(node.args[index])
            for value in values:
                if isinstance(value, ast.Constant):
                    if value.value:
                        found.append(Raised(str(value.value), where, error))
                elif isinstance(value, ast.Name):
                    if value.id in constants:
                        found.append(Raised(constants[value.id], where, error))
                    # else a parameter passed on: its callers and default are scanned instead
                elif isinstance(value, ast.BoolOp | ast.IfExp):
                    found += [Raised(s, where, error) for s in _strings(value)]
                elif isinstance(value, ast.Call) and _name(value.func) in REASON_FUNCTIONS:
                    found += [Raised(s, where, error) for s in REASON_FUNCTIONS[_name(value.func)]]
                elif _passes_on(value):
                    pass
                else:
                    problems.append(f"{where}: reason={ast.unparse(value)} is not a literal, a constant or a catalogued function")
    return found, problems


@functools.cache
def scan() -> tuple[list[Raised], list[str]]:
    found: list[Raised] = []
    problems: list[str] = []
    for path in sorted(SERVICES.rglob("*.py")):
        if path.name == "error_reasons.py":
            continue  # the catalogue itself
        f, p = scan_module(path, path.read_text())
        found += f
        problems += p
    return found, problems


def test_every_reason_raised_is_catalogued_with_its_code() -> None:
    found, problems = scan()
    assert not problems
    missing = sorted({f"{r.reason} ({r.where})" for r in found if r.reason not in REASONS})
    assert not missing, f"add these to services/common/error_reasons.py: {missing}"
    wrong_code = sorted(
        f"{r.reason} raised as {r.error} ({r.where}), catalogued as {', '.join(REASONS[r.reason].codes)}"
        for r in found if r.error and _error_class(r.error).code.name not in REASONS[r.reason].codes
    )
    assert not wrong_code


def test_every_catalogued_reason_is_raised_somewhere() -> None:
    found, _ = scan()
    dead = sorted(set(REASONS) - {r.reason for r in found})
    assert not dead, f"nothing in services/ raises these any more; remove them from the catalogue: {dead}"


def test_the_scan_sees_every_form_a_reason_takes() -> None:
    # Keyword literal, positional to a local helper, module constant, default, computed, and
    # the forms it refuses: the scan itself can fail.
    source = '''
REASON = "FROM_CONSTANT"
def _bad(message, reason="FROM_DEFAULT"):
    return InvalidArgument(message, reason=reason)
class Mine(WnodesError):
    default_reason = "FROM_CLASS"
def f(x):
    raise InvalidArgument("m", reason="FROM_KEYWORD")
    raise _bad("m", "FROM_POSITION")
    raise FailedPrecondition("m", reason=REASON)
    reason = "FROM_ASSIGNMENT" if x else ""
    raise FailedPrecondition("m", reason=f"IMAGE_{x}")
    raise InvalidArgument("m", reason=x.reason)
    raise InvalidArgument("m", reason=str(x.get("reason")))
    raise InvalidArgument("m", reason=x.why)
'''
    found, problems = scan_module(SERVICES / "example.py", source)
    assert {r.reason for r in found} == {"FROM_CONSTANT", "FROM_DEFAULT", "FROM_CLASS", "FROM_KEYWORD", "FROM_POSITION", "FROM_ASSIGNMENT"}
    assert {r.reason: r.error.rpartition(".")[2] for r in found if r.error} == {
        "FROM_CLASS": "Mine", "FROM_KEYWORD": "InvalidArgument", "FROM_CONSTANT": "FailedPrecondition"}
    assert [p.split(": ", 1)[1] for p in problems] == [
        "reason=f'IMAGE_{x}' is not a literal, a constant or a catalogued function",
        "reason=x.why is not a literal, a constant or a catalogued function",
    ]


@pytest.mark.parametrize("state", ["BUILDING", "DEPRECATED", "DELETED", "SOMETHING_NEW"])
def test_image_state_reasons_are_catalogued(state: str) -> None:
    assert image_state_reason(state) in REASONS


def test_reasons_are_upper_snake_case_and_each_has_a_meaning() -> None:
    for reason in REASONS.values():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*[A-Z0-9]", reason.name), reason.name
        assert reason.meaning.endswith(".") and "\n" not in reason.meaning, reason.name
        assert reason.codes


def test_the_docs_page_is_the_catalogue() -> None:
    page = ROOT / "docs" / "error-reasons.md"
    assert page.read_text() == render_markdown(), "run: python -m services.common.error_reasons > docs/error-reasons.md"
