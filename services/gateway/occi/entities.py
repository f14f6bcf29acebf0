"""Entities between the wire and the backend: what a request's rendering parsed into
(``ParsedEntity``, not yet checked against the model) and what a response renders
(``EntityView``, resources and links alike)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.gateway.occi.categories import Action, CategoryRef, Kind, Mixin, Value


@dataclass
class ParsedLink:
    """An inline ``Link:`` (text) or an item of a resource's "links" (JSON)."""

    target: str
    rel: tuple[str, ...] = ()
    self_location: str = ""
    categories: tuple[str, ...] = ()
    """Type ids: the link's kind first if given, then its mixins."""
    attributes: dict[str, Value] = field(default_factory=dict)


@dataclass
class ParsedEntity:
    """One request's rendering, syntax-checked only."""

    categories: list[CategoryRef] = field(default_factory=list)
    attributes: dict[str, Value] = field(default_factory=dict)
    links: list[ParsedLink] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.categories or self.attributes or self.links or self.locations)


@dataclass
class EntityView:
    """A resource or a link as the server renders it. For a link, ``occi.core.source`` and
    ``occi.core.target`` are in ``attributes`` (locations) and ``source_kind``/``target_kind``
    name their kinds."""

    kind: Kind
    location: str
    attributes: dict[str, Value]
    mixins: tuple[Mixin, ...] = ()
    actions: tuple[Action, ...] = ()
    links: list[EntityView] = field(default_factory=list)
    source_kind: str = ""
    target_kind: str = ""

    @property
    def id(self) -> str:
        return str(self.attributes["occi.core.id"])
