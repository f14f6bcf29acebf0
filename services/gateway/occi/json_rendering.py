"""application/occi+json (GFD.226) out and in. Rendered documents follow the schema in
tests/data/occi-1.2-schema.json and parse in EGI's rOCCI-core too (where the two disagree on an
optional field, it is left out), both checked by tests/unit/occi/test_json_schema.py."""

from __future__ import annotations

import json
from typing import Any

from services.common.errors import InvalidArgument
from services.gateway.occi.categories import Action, Attribute, Category, CategoryRef, Kind, Mixin, Value
from services.gateway.occi.entities import EntityView, ParsedEntity, ParsedLink

# Core attributes that JSON carries as top-level members instead of inside "attributes".
_TOP_LEVEL = {"occi.core.id": "id", "occi.core.title": "title", "occi.core.summary": "summary"}
_LINK_ENDS = ("occi.core.source", "occi.core.target", "occi.core.source.kind", "occi.core.target.kind")


def _attribute_description(a: Attribute) -> dict[str, Any]:
    json_type = {"integer": "number", "enum": "string"}.get(a.type, a.type)
    out: dict[str, Any] = {"mutable": a.mutable, "required": a.required, "type": json_type}
    if a.default is not None:
        out["default"] = a.default
    if a.description:
        out["description"] = a.description
    # No "pattern": the OGF schema wants an object, rOCCI-core a string (a regexp), and each
    # refuses the other's. It is optional, so it is left out; the text rendering and the
    # validation of what clients send still hold the enums and ranges.
    return out


def _non_empty(out: dict[str, Any], **arrays: list[Any]) -> None:
    """Sets the arrays that have items: rOCCI-core refuses an empty one (draft-04 stringArray,
    minItems 1) and leaves them out itself; GFD.226 makes them all optional."""
    out.update({key: items for key, items in arrays.items() if items})


def category(c: Category) -> dict[str, Any]:
    out: dict[str, Any] = {"term": c.term, "scheme": c.scheme}
    if c.title:
        out["title"] = c.title
    if c.attributes or not isinstance(c, Action):
        out["attributes"] = {a.name: _attribute_description(a) for a in c.attributes}
    if isinstance(c, Kind):
        _non_empty(out, actions=list(c.actions))
        if c.parent:
            out["parent"] = c.parent
        if c.location:
            out["location"] = c.location
    elif isinstance(c, Mixin):
        _non_empty(out, actions=list(c.actions), depends=list(c.depends), applies=list(c.applies))
        out["location"] = c.location
    return out


def model(categories: list[Category]) -> dict[str, Any]:
    return {
        "kinds": [category(c) for c in categories if isinstance(c, Kind)],
        "mixins": [category(c) for c in categories if isinstance(c, Mixin)],
        "actions": [category(c) for c in categories if isinstance(c, Action)],
    }


def entity(e: EntityView) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": e.kind.id}
    _non_empty(out, mixins=[m.id for m in e.mixins], actions=[a.id for a in e.actions])
    attributes: dict[str, Value] = {}
    for name, value in e.attributes.items():
        if name in _TOP_LEVEL:
            out[_TOP_LEVEL[name]] = value
        elif name not in _LINK_ENDS:
            attributes[name] = value
    out["attributes"] = attributes
    if "occi.core.source" in e.attributes:
        out["source"] = {"location": e.attributes["occi.core.source"], "kind": e.source_kind}
        out["target"] = {"location": e.attributes["occi.core.target"], "kind": e.target_kind}
        out.pop("summary", None)
    else:
        _non_empty(out, links=[entity(link) for link in e.links])
    return out


def collection(entities: list[EntityView], links: bool) -> dict[str, Any]:
    """An empty collection is ``{}``: rOCCI-core refuses an empty ``resources`` array (and
    renders ``{}`` itself), and the OGF schema takes ``{}`` as a document (a model with no
    members), so it is the one form both parse."""
    if not entities:
        return {}
    return {"links" if links else "resources": [entity(e) for e in entities]}


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, sort_keys=False)


# --- parsing -----------------------------------------------------------------------------

def _ref(type_id: object, cls: str, where: str) -> CategoryRef:
    if not isinstance(type_id, str) or "#" not in type_id:
        raise InvalidArgument(f"{where}: {str(type_id)[:200]!r} is not a type identifier (scheme#term)", reason="MALFORMED_RENDERING")
    scheme, _, term = type_id.rpartition("#")
    return CategoryRef(scheme=scheme + "#", term=term, cls=cls)


def _attributes(raw: object, where: str) -> dict[str, Value]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where}: attributes must be an object", reason="MALFORMED_RENDERING")
    out: dict[str, Value] = {}
    for name, value in raw.items():
        if not isinstance(value, str | int | float | bool):
            raise InvalidArgument(f"attribute {name}: arrays, objects and null are not values of any attribute here",
                                  reason="MALFORMED_RENDERING")
        out[name] = value
    return out


def _string_list(raw: object, where: str) -> list[object]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidArgument(f"{where} must be an array", reason="MALFORMED_RENDERING")
    return raw


def _location(raw: object, where: str) -> str:
    if isinstance(raw, dict):
        raw = raw.get("location")
    if not isinstance(raw, str) or not raw:
        raise InvalidArgument(f"{where} must be {{\"location\": URI}} or a URI", reason="MALFORMED_RENDERING")
    return raw


def _entity(doc: dict[str, Any], where: str) -> ParsedEntity:
    parsed = ParsedEntity()
    if "kind" in doc:
        parsed.categories.append(_ref(doc["kind"], "kind", f"{where}.kind"))
    for i, mixin in enumerate(_string_list(doc.get("mixins"), f"{where}.mixins")):
        parsed.categories.append(_ref(mixin, "mixin", f"{where}.mixins[{i}]"))
    parsed.attributes = _attributes(doc.get("attributes"), where)
    for key, name in _TOP_LEVEL.items():
        if name in doc:
            value = doc[name]
            if not isinstance(value, str):
                raise InvalidArgument(f"{where}.{name} must be a string", reason="MALFORMED_RENDERING")
            parsed.attributes[key] = value
    for end in ("source", "target"):
        if end in doc:
            parsed.attributes[f"occi.core.{end}"] = _location(doc[end], f"{where}.{end}")
    for i, raw in enumerate(_string_list(doc.get("links"), f"{where}.links")):
        if not isinstance(raw, dict):
            raise InvalidArgument(f"{where}.links[{i}] must be an object", reason="MALFORMED_RENDERING")
        link = _entity(raw, f"{where}.links[{i}]")
        target = link.attributes.pop("occi.core.target", None)
        if not isinstance(target, str):
            raise InvalidArgument(f"{where}.links[{i}] has no target", reason="MALFORMED_RENDERING")
        link.attributes.pop("occi.core.source", None)
        parsed.links.append(ParsedLink(target=target, categories=tuple(c.id for c in link.categories), attributes=link.attributes))
    return parsed


def parse(body: str) -> ParsedEntity:
    """A resource, a link, an action invocation, a collection of one of them (its first
    member), a mixin definition ({"mixins": [...]}) or a location list ({"locations": [...]})."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"the body is not JSON: {exc}", reason="MALFORMED_RENDERING") from exc
    if not isinstance(doc, dict):
        raise InvalidArgument("the JSON body must be an object", reason="MALFORMED_RENDERING")
    if "action" in doc:
        parsed = ParsedEntity(categories=[_ref(doc["action"], "action", "action")])
        parsed.attributes = _attributes(doc.get("attributes"), "action")
        return parsed
    for plural in ("resources", "links"):
        if plural in doc:
            items = _string_list(doc[plural], plural)
            if len(items) != 1 or not isinstance(items[0], dict):
                raise InvalidArgument(f"{plural} must hold exactly one entity to create", reason="MALFORMED_RENDERING")
            return _entity(items[0], f"{plural}[0]")
    if "mixins" in doc and "kind" not in doc:
        parsed = ParsedEntity()
        for i, m in enumerate(_string_list(doc["mixins"], "mixins")):
            if not isinstance(m, dict) or not isinstance(m.get("term"), str) or not isinstance(m.get("scheme"), str):
                raise InvalidArgument(f"mixins[{i}] must be an object with term and scheme", reason="MALFORMED_RENDERING")
            depends = [d for d in _string_list(m.get("depends"), f"mixins[{i}].depends") if isinstance(d, str)]
            parsed.categories.append(CategoryRef(m["scheme"], m["term"], "mixin", str(m.get("title", "")), tuple(depends),
                                                 str(m.get("location", ""))))
        return parsed
    if "locations" in doc:
        return ParsedEntity(locations=[_location(x, "locations[]") for x in _string_list(doc["locations"], "locations")])
    return _entity(doc, "resource")
