"""Mixins users define through POST /-/ (GFD.223), used as tags on their own entities.

Kept in this gateway process's memory, per owner: a restart forgets them, and two gateways do
not share them. Nothing in wnodes.v1 stores them yet; they are tags and carry no attributes,
so nothing a VM runs depends on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.identity import Principal
from services.gateway.occi.categories import CategoryRef, Mixin

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^\s\"]{1,200}#$")
_LOCATION = re.compile(r"^/[A-Za-z0-9._~/-]{0,200}/$")
MAX_PER_OWNER = 100

Owner = tuple[str, str]


@dataclass
class UserMixins:
    _defined: dict[Owner, dict[str, Mixin]] = field(default_factory=dict)
    _members: dict[Owner, dict[str, set[str]]] = field(default_factory=dict)

    @staticmethod
    def _owner(principal: Principal) -> Owner:
        return principal.user, principal.vo

    def of(self, principal: Principal) -> tuple[Mixin, ...]:
        return tuple(self._defined.get(self._owner(principal), {}).values())

    def define(self, principal: Principal, ref: CategoryRef, taken: set[str], bound: set[str]) -> Mixin:
        """taken: type ids that exist already; bound: locations in use."""
        mine = self._defined.setdefault(self._owner(principal), {})
        if not _SCHEME.match(ref.scheme) or not ref.term:
            raise InvalidArgument(f"mixin {ref.term!r}: scheme must be an absolute URI ending in '#'", reason="INVALID_MIXIN")
        if ref.cls not in ("", "mixin"):
            raise InvalidArgument("only mixins can be defined by users", reason="INVALID_MIXIN")
        if ref.id in taken or ref.id in mine:
            raise AlreadyExists(f"{ref.id} exists already")
        location = ref.location or f"/mixin/user/{ref.term}/"
        if not _LOCATION.match(location) or location in bound or any(m.location == location for m in mine.values()):
            raise InvalidArgument(f"mixin {ref.term}: location {location[:100]!r} must be a free path ending in '/'",
                                  reason="INVALID_MIXIN")
        if len(mine) >= MAX_PER_OWNER:
            raise InvalidArgument(f"at most {MAX_PER_OWNER} user mixins per user", reason="TOO_MANY_MIXINS")
        mixin = Mixin(ref.scheme, ref.term, ref.title[:256], depends=ref.rel[:4], location=location, user_defined=True)
        mine[mixin.id] = mixin
        return mixin

    def remove(self, principal: Principal, type_id: str) -> None:
        mine = self._defined.get(self._owner(principal), {})
        if type_id not in mine:
            raise NotFound(f"no user mixin {type_id}")
        del mine[type_id]
        self._members.get(self._owner(principal), {}).pop(type_id, None)

    def members(self, principal: Principal, type_id: str) -> set[str]:
        return set(self._members.get(self._owner(principal), {}).get(type_id, set()))

    def tag(self, principal: Principal, type_id: str, paths: list[str], replace: bool = False) -> None:
        members = self._members.setdefault(self._owner(principal), {})
        if replace:
            members[type_id] = set()
        members.setdefault(type_id, set()).update(paths)

    def untag(self, principal: Principal, type_id: str, paths: list[str] | None) -> None:
        members = self._members.get(self._owner(principal), {}).get(type_id)
        if members is not None:
            if paths is None:
                members.clear()
            else:
                members.difference_update(paths)

    def tags_of(self, principal: Principal, path: str) -> tuple[Mixin, ...]:
        mine = self._defined.get(self._owner(principal), {})
        members = self._members.get(self._owner(principal), {})
        return tuple(m for i, m in mine.items() if path in members.get(i, ()))

    def forget(self, principal: Principal, path: str) -> None:
        for members in self._members.get(self._owner(principal), {}).values():
            members.discard(path)
