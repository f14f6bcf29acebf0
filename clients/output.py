"""Output shared by the CLIs: tables for people, JSON for scripts (``--output json``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import json_format, message
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def as_dict(msg: message.Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], output: str, title: str = "") -> None:
    if output == "json":
        json.dump(list(rows), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    table = Table(title=title or None)
    for col in columns:
        table.add_column(col, overflow="fold")  # wrap long names rather than cut them
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    # A pipe gets the whole width, so `| grep` sees whole names.
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def run_cli(main: Callable[[], int]) -> None:
    """The console-script entry of both CLIs: exit with main's status; a reader that closes the
    pipe early (`... | head`) is not an error worth a traceback."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    sys.exit(code)


def emit_one(obj: dict[str, Any], output: str) -> None:
    if output == "json":
        json.dump(obj, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    width = max((len(k) for k in obj), default=0)
    for key, value in obj.items():
        print(f"{key:<{width}}  {value}")
