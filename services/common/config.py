"""Configuration helpers: every service has one frozen dataclass, filled from command-line flags
whose defaults come from WNODES_* environment variables, and passed down through constructors."""

from __future__ import annotations

import os


def env(name: str, default: str) -> str:
    return os.environ.get(f"WNODES_{name}", default)


def split_endpoints(value: str) -> list[str]:
    return [e.strip() for e in value.split(",") if e.strip()]
