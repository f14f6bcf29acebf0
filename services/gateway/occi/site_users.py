"""The site user file: who may use the OCCI interface, with which password or certificate, in
which VO. TOML, one table per local user:

    [users.alice]
    vo = "atlas"
    password_bcrypt = "$2b$12$..."          # optional: HTTP basic auth
    dn = "/DC=org/DC=example/CN=Alice"       # optional: X.509 subject (end-entity certificate)

``write_user_file`` makes one (used by ``wnodes-admin stack up`` for its demo users).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from services.common.errors import InvalidArgument

_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_VO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class SiteUser:
    name: str
    vo: str
    password_bcrypt: str = ""
    dn: str = ""


@dataclass(frozen=True)
class SiteUsers:
    by_name: dict[str, SiteUser]
    by_dn: dict[str, SiteUser]

    @staticmethod
    def load(path: Path) -> SiteUsers:
        """Reads and checks the file; a bad entry fails the gateway's start with its name."""
        data = tomllib.loads(path.read_text())
        by_name: dict[str, SiteUser] = {}
        by_dn: dict[str, SiteUser] = {}
        for name, entry in dict(data.get("users", {})).items():
            if not _NAME.match(name) or not isinstance(entry, dict):
                raise InvalidArgument(f"{path}: user {name!r} must be a [users.NAME] table with a lowercase account name")
            vo, hashed, dn = entry.get("vo", ""), entry.get("password_bcrypt", ""), entry.get("dn", "")
            if not isinstance(vo, str) or not _VO.match(vo):
                raise InvalidArgument(f"{path}: user {name}: vo must be a VO name")
            if not isinstance(hashed, str) or hashed and not hashed.startswith("$2"):
                raise InvalidArgument(f"{path}: user {name}: password_bcrypt must be a bcrypt hash ($2b$...)")
            if not isinstance(dn, str) or dn and not dn.startswith("/"):
                raise InvalidArgument(f"{path}: user {name}: dn must be a slash-separated subject (/C=../CN=..)")
            user = SiteUser(name, vo, hashed, dn)
            by_name[name] = user
            if dn:
                if dn in by_dn:
                    raise InvalidArgument(f"{path}: {dn} is given to both {by_dn[dn].name} and {name}")
                by_dn[dn] = user
        return SiteUsers(by_name, by_dn)


def hash_password(password: str, rounds: int = 12) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def write_user_file(path: Path, users: list[tuple[str, str, str, str]], rounds: int = 12) -> None:
    """users: (name, vo, password or "", dn or ""). The file is private to its owner (0600)."""
    lines = ["# WNoDeS site users (OCCI): user -> VO, bcrypt password hash, X.509 subject", ""]
    for name, vo, password, dn in users:
        lines.append(f"[users.{name}]")
        lines.append(f"vo = {json.dumps(vo)}")
        if password:
            lines.append(f"password_bcrypt = {json.dumps(hash_password(password, rounds))}")
        if dn:
            lines.append(f"dn = {json.dumps(dn)}")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("\n".join(lines))
