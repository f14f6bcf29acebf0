"""The OCCI model one caller sees: the static categories, an os_tpl per image their VO may use,
a resource_tpl per site size, and the mixins they defined themselves. Built per request (the
image list is cached for a few seconds per caller)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from services.gateway.occi import infrastructure as infra
from services.gateway.occi.categories import Action, Attribute, Category, CategoryRef, Kind, Mixin
from services.gateway.occi.templates import Size, os_tpl, resource_tpl


@dataclass
class Model:
    os_templates: dict[str, str] = field(default_factory=dict)
    """os_tpl mixin id -> image name."""
    sizes: dict[str, Size] = field(default_factory=dict)
    """resource_tpl mixin id -> size."""
    user_mixins: tuple[Mixin, ...] = ()
    _by_id: dict[str, Category] = field(default_factory=dict)
    _ordered: list[Category] = field(default_factory=list)

    @staticmethod
    def build(images: list[tuple[str, str]], sizes: tuple[Size, ...], user_mixins: tuple[Mixin, ...] = ()) -> Model:
        """images: (name, description) of every image the caller may use."""
        m = Model(user_mixins=user_mixins)
        provider: list[Category] = []
        for name, description in images:
            mixin = os_tpl(name, description)
            m.os_templates[mixin.id] = name
            provider.append(mixin)
        for size in sizes:
            mixin = resource_tpl(size)
            m.sizes[mixin.id] = size
            provider.append(mixin)
        m._ordered = [*infra.KINDS, *infra.MIXINS, *provider, *infra.ACTIONS, *user_mixins]
        m._by_id = {c.id: c for c in m._ordered}
        return m

    def __iter__(self) -> Iterator[Category]:
        return iter(self._ordered)

    def get(self, type_id: str) -> Category | None:
        return self._by_id.get(type_id)

    def kind(self, type_id: str) -> Kind | None:
        found = self._by_id.get(type_id)
        return found if isinstance(found, Kind) else None

    def mixin(self, type_id: str) -> Mixin | None:
        found = self._by_id.get(type_id)
        return found if isinstance(found, Mixin) else None

    def action(self, type_id: str) -> Action | None:
        found = self._by_id.get(type_id)
        return found if isinstance(found, Action) else None

    def kind_by_term(self, term: str) -> Kind | None:
        return next((k for k in infra.KINDS if k.term == term), None)

    def by_location(self, path: str) -> Kind | Mixin | None:
        for c in self._ordered:
            if isinstance(c, Kind | Mixin) and c.location == path:
                return c
        return None

    def lineage(self, kind: Kind) -> list[Kind]:
        """The kind and its parents, nearest first."""
        out = [kind]
        while out[-1].parent:
            parent = self.kind(out[-1].parent)
            if parent is None:
                break
            out.append(parent)
        return out

    def declared(self, kind: Kind, mixins: tuple[Mixin, ...] | list[Mixin]) -> dict[str, Attribute]:
        """Every attribute the kind (with its parents) and the mixins declare; mixins win (a
        template's default replaces the kind's)."""
        out: dict[str, Attribute] = {}
        for k in reversed(self.lineage(kind)):
            out.update({a.name: a for a in k.attributes})
        for m in mixins:
            for dep in m.depends:
                parent = self.mixin(dep)
                if parent is not None:
                    out.update({a.name: a for a in parent.attributes})
            out.update({a.name: a for a in m.attributes})
        return out

    def related(self, ref: CategoryRef) -> list[Category]:
        """The query interface's filter: the category named and those that build on it."""
        out = []
        for c in self._ordered:
            if c.id == ref.id and (not ref.cls or c.category_class == ref.cls):
                out.append(c)
            elif isinstance(c, Kind) and c.parent == ref.id or isinstance(c, Mixin) and ref.id in c.depends:
                out.append(c)
        return out

    def applies(self, mixin: Mixin, kind: Kind) -> bool:
        return not mixin.applies or any(k.id in mixin.applies for k in self.lineage(kind))
