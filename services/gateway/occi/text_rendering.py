"""The text renderings (GFD.229) out: each thing becomes (header name, value) pairs. ``text/plain``
writes them as body lines, ``text/occi`` as HTTP headers (``negotiation.py`` decides which)."""

from __future__ import annotations

from collections.abc import Iterable

from services.gateway.occi.categories import Action, Category, Kind, Mixin, Value
from services.gateway.occi.entities import EntityView

Line = tuple[str, str]


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def value_literal(value: Value) -> str:
    """Strings quoted, numbers and booleans bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return quote(value)


def category_line(category: Category, full: bool = True) -> Line:
    parts = [category.term, f"scheme={quote(category.scheme)}", f"class={quote(category.category_class)}"]
    if category.title:
        parts.append(f"title={quote(category.title)}")
    if full:
        rel = category.parent if isinstance(category, Kind) else category.depends[0] if isinstance(category, Mixin) and category.depends else ""
        if rel:
            parts.append(f"rel={quote(rel)}")
        location = category.location if isinstance(category, Kind | Mixin) else ""
        if location:
            parts.append(f"location={quote(location)}")
        if category.attributes:
            parts.append(f"attributes={quote(' '.join(a.render_spec() for a in category.attributes))}")
        actions = category.actions if isinstance(category, Kind | Mixin) else ()
        if actions:
            parts.append(f"actions={quote(' '.join(actions))}")
    return "Category", "; ".join(parts)


def categories_lines(categories: Iterable[Category]) -> list[Line]:
    return [category_line(c) for c in categories]


def _action_link(location: str, action: Action) -> Line:
    return "Link", f"<{location}?action={action.term}>; rel={quote(action.id)}"


def _inline_link(link: EntityView) -> Line:
    target = str(link.attributes["occi.core.target"])
    parts = [f"<{target}>", f"rel={quote(link.target_kind)}", f"self={quote(link.location)}",
             f"category={quote(' '.join([link.kind.id, *(m.id for m in link.mixins)]))}"]
    parts += [f"{name}={value_literal(value)}" for name, value in link.attributes.items()]
    return "Link", "; ".join(parts)


def entity_lines(entity: EntityView) -> list[Line]:
    lines = [category_line(entity.kind, full=False), *(category_line(m, full=False) for m in entity.mixins)]
    lines += [_inline_link(link) for link in entity.links]
    lines += [_action_link(entity.location, a) for a in entity.actions]
    lines += [("X-OCCI-Attribute", f"{name}={value_literal(value)}") for name, value in entity.attributes.items()]
    return lines


def locations_lines(urls: Iterable[str]) -> list[Line]:
    return [("X-OCCI-Location", url) for url in urls]


def as_body(lines: list[Line]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in lines)


def as_headers(lines: list[Line]) -> list[Line]:
    """One header per name with a comma-separated list (GFD.229 recommends comma lists)."""
    merged: dict[str, list[str]] = {}
    for name, value in lines:
        merged.setdefault(name, []).append(value)
    return [(name, ", ".join(values)) for name, values in merged.items()]
