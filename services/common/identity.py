"""Who is calling. The gateway authenticates a request and forwards the identity to internal
services in metadata; internal services trust only the gateway (mutual TLS between services is
the next step, see docs/decisions.md)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

USER_KEY = "wnodes-user"
VO_KEY = "wnodes-vo"
ROLES_KEY = "wnodes-roles"


@dataclass(frozen=True)
class Principal:
    user: str
    vo: str
    roles: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def to_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ((USER_KEY, self.user), (VO_KEY, self.vo), (ROLES_KEY, ",".join(sorted(self.roles))))

    @staticmethod
    def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal | None:
        found = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (metadata or ())}
        user, vo = found.get(USER_KEY, ""), found.get(VO_KEY, "")
        if not user or not vo:
            return None
        roles = frozenset(r for r in found.get(ROLES_KEY, "").split(",") if r)
        return Principal(user=user, vo=vo, roles=roles)
