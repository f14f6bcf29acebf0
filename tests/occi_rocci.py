"""What EGI's rOCCI-core (the library under rOCCI-cli and rOCCI-server) accepts as
application/occi+json, written from its parser's rules, so a rendering can be checked against
the second implementation as well as against the OGF schema (tests/occi_schema.py).

Read from rOCCI-core's lib/occi/core/parsers/json_parser.rb, json/category.rb, json/entity.rb
and the JSON Schema its validator applies (json/validator/occi-schema.json):
- a model is {kinds, mixins, actions}; a kind and a mixin need term, scheme and location, an
  action term and scheme; nothing else is allowed in them;
- arrays of identifiers (mixins, actions, depends, applies) are draft-04 "stringArray"s, and
  links, resources and the model's lists have minItems 1: an empty array is refused (rOCCI
  itself leaves an empty one out);
- an attribute definition needs type, mutable and required and allows default, description and
  pattern only; type is one of boolean, string, number, array, object ("has no type" otherwise);
  pattern is a string that Ruby's Regexp.new compiles (the OGF schema says object);
- a resource needs kind, id and attributes; a link kind, id, source, target and attributes;
  source and target are {location, kind?}; a document of entities is a link, a resource, or
  {resources?, links?}.
"""

from __future__ import annotations

import re
from typing import Any

TYPES = frozenset({"boolean", "string", "number", "array", "object"})
_CATEGORY_KEYS = {
    "kind": ({"term", "scheme", "location"}, {"title", "attributes", "actions", "parent"}),
    "mixin": ({"term", "scheme", "location"}, {"title", "attributes", "actions", "depends", "applies"}),
    "action": ({"term", "scheme"}, {"title", "attributes"}),
}
_ENTITY_KEYS = {
    "resource": ({"kind", "id", "attributes"}, {"mixins", "actions", "links", "summary", "title"}),
    "link": ({"kind", "id", "source", "target", "attributes"}, {"mixins", "actions", "title"}),
}
_STRING_ARRAYS = ("mixins", "actions", "depends", "applies")


def errors(document: Any, definition: str) -> list[str]:
    """Why rOCCI-core would refuse the document as `definition` (model, kind, mixin, action,
    resource, link, resource_collection, link_collection, entity_collection); [] if it parses."""
    out: list[str] = []
    {
        "model": _model, "kind": _category, "mixin": _category, "action": _category,
        "resource": _entity, "link": _entity,
        "resource_collection": _collection, "link_collection": _collection, "entity_collection": _collection,
    }[definition](document, definition, "", out)
    return out


def _object(doc: Any, required: set[str], allowed: set[str], where: str, out: list[str]) -> bool:
    if not isinstance(doc, dict):
        out.append(f"{where or '/'}: not an object")
        return False
    out += [f"{where}/{k}: required" for k in sorted(required - set(doc))]
    out += [f"{where}/{k}: not allowed" for k in sorted(set(doc) - required - allowed)]
    return True


def _non_empty_array(doc: dict[str, Any], key: str, where: str, out: list[str]) -> list[Any]:
    value = doc.get(key)
    if key not in doc:
        return []
    if not isinstance(value, list):
        out.append(f"{where}/{key}: not an array")
        return []
    if not value:
        out.append(f"{where}/{key}: an empty array (minItems 1)")
    return value


def _string_array(doc: dict[str, Any], key: str, where: str, out: list[str]) -> None:
    values = _non_empty_array(doc, key, where, out)
    if any(not isinstance(v, str) for v in values):
        out.append(f"{where}/{key}: not an array of strings")
    if len(set(map(str, values))) != len(values):
        out.append(f"{where}/{key}: repeats an item (uniqueItems)")


def _model(doc: Any, _definition: str, where: str, out: list[str]) -> None:
    if not _object(doc, set(), {"kinds", "mixins", "actions"}, where, out):
        return
    for key, definition in (("kinds", "kind"), ("mixins", "mixin"), ("actions", "action")):
        for i, category in enumerate(_non_empty_array(doc, key, where, out)):
            _category(category, definition, f"{where}/{key}/{i}", out)


def _category(doc: Any, definition: str, where: str, out: list[str]) -> None:
    required, allowed = _CATEGORY_KEYS[definition]
    if not _object(doc, required, allowed, where, out):
        return
    for key in ("term", "scheme", "title", "parent", "location"):
        if key in doc and not isinstance(doc[key], str):
            out.append(f"{where}/{key}: not a string")
    for key in _STRING_ARRAYS:
        _string_array(doc, key, where, out)
    attributes = doc.get("attributes", {})
    if not isinstance(attributes, dict):
        out.append(f"{where}/attributes: not an object")
        return
    for name, definition_doc in attributes.items():
        _attribute_definition(definition_doc, f"{where}/attributes/{name}", out)


def _attribute_definition(doc: Any, where: str, out: list[str]) -> None:
    if not _object(doc, {"type", "mutable", "required"}, {"default", "description", "pattern"}, where, out):
        return
    if doc.get("type") not in TYPES:
        out.append(f"{where}/type: {doc.get('type')!r} is not one of {', '.join(sorted(TYPES))} (the attribute has no type)")
    for key in ("mutable", "required"):
        if key in doc and not isinstance(doc[key], bool):
            out.append(f"{where}/{key}: not a boolean")
    if "default" in doc and doc["default"] is None:
        out.append(f"{where}/default: null")
    if "description" in doc and not isinstance(doc["description"], str):
        out.append(f"{where}/description: not a string")
    if "pattern" in doc:
        pattern = doc["pattern"]
        if not isinstance(pattern, str):
            out.append(f"{where}/pattern: a {type(pattern).__name__}, not a string (Regexp.new)")
        else:
            try:
                re.compile(pattern)
            except re.error as exc:
                out.append(f"{where}/pattern: not a regular expression ({exc})")


def _attributes(doc: dict[str, Any], where: str, out: list[str]) -> None:
    attributes = doc.get("attributes")
    if not isinstance(attributes, dict):
        out.append(f"{where}/attributes: not an object")
        return
    for name, value in attributes.items():
        if value is None:  # "Cannot typecast (un)set value"
            out.append(f"{where}/attributes/{name}: null")


def _entity(doc: Any, definition: str, where: str, out: list[str]) -> None:
    required, allowed = _ENTITY_KEYS[definition]
    if not _object(doc, required, allowed, where, out):
        return
    for key in ("kind", "id", "title", "summary"):
        if key in doc and not isinstance(doc[key], str):
            out.append(f"{where}/{key}: not a string")
    for key in ("mixins", "actions"):
        _string_array(doc, key, where, out)
    if "attributes" in doc:
        _attributes(doc, where, out)
    for i, link in enumerate(_non_empty_array(doc, "links", where, out)):
        _entity(link, "link", f"{where}/links/{i}", out)
    for end in ("source", "target"):
        if end in doc and _object(doc[end], {"location"}, {"kind"}, f"{where}/{end}", out):
            out += [f"{where}/{end}/{k}: not a string" for k in ("location", "kind") if k in doc[end] and not isinstance(doc[end][k], str)]


def _collection(doc: Any, definition: str, where: str, out: list[str]) -> None:
    # rOCCI parses every collection as an entity collection: resources and links, each optional.
    if not _object(doc, set(), {"resources", "links"}, where, out):
        return
    for key, kind in (("resources", "resource"), ("links", "link")):
        for i, item in enumerate(_non_empty_array(doc, key, where, out)):
            _entity(item, kind, f"{where}/{key}/{i}", out)
