"""The text renderings (GFD.229) in: ``text/plain`` bodies and ``text/occi`` headers into a
ParsedEntity. Syntax only; what the names mean is checked in ``validation.py``.

Header values may hold comma-separated lists, and a header may repeat: both are accepted. Every
problem raises InvalidArgument with a message that names the offending piece.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from services.common.errors import InvalidArgument
from services.gateway.occi.categories import CategoryRef, Value
from services.gateway.occi.entities import ParsedEntity, ParsedLink

OCCI_HEADERS = ("category", "link", "x-occi-attribute", "x-occi-location")
_TERM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ATTR_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_INT = re.compile(r"^[+-]?[0-9]+$")
_FLOAT = re.compile(r"^[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?$")
MAX_ITEMS = 1000


def split_outside_quotes(text: str, sep: str) -> list[str]:
    """Splits on ``sep`` where it is not inside "quotes" (with \\ escapes) or <angle brackets>."""
    parts, current, quoted, bracket, escape = [], [], False, False, False
    for ch in text:
        if escape:
            current.append(ch)
            escape = False
        elif quoted and ch == "\\":
            current.append(ch)
            escape = True
        elif ch == '"' and not bracket:
            quoted = not quoted
            current.append(ch)
        elif ch == "<" and not quoted:
            bracket = True
            current.append(ch)
        elif ch == ">" and not quoted:
            bracket = False
            current.append(ch)
        elif ch == sep and not quoted and not bracket:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise InvalidArgument(f"unterminated quoted string in {text[:200]!r}", reason="MALFORMED_RENDERING")
    parts.append("".join(current))
    return [p.strip() for p in parts]


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise InvalidArgument(f"expected a quoted string, got {text[:200]!r}", reason="MALFORMED_RENDERING")
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse_value(text: str, name: str) -> Value:
    text = text.strip()
    if text.startswith('"'):
        return unquote(text)
    if text in ("true", "false"):
        return text == "true"
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    raise InvalidArgument(f"attribute {name}: value {text[:100]!r} is neither a quoted string, a number nor true/false",
                          reason="MALFORMED_RENDERING")


def _pairs(chunks: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for chunk in chunks:
        if not chunk:
            continue
        key, eq, value = chunk.partition("=")
        if not eq or not key.strip():
            raise InvalidArgument(f"{what}: {chunk[:200]!r} is not key=value", reason="MALFORMED_RENDERING")
        out[key.strip()] = value.strip()
    return out


def parse_category(text: str) -> CategoryRef:
    chunks = split_outside_quotes(text, ";")
    term = chunks[0]
    if not _TERM.match(term):
        raise InvalidArgument(f"Category {text[:200]!r}: {term[:100]!r} is not a term", reason="MALFORMED_RENDERING")
    pairs = {k: unquote(v) for k, v in _pairs(chunks[1:], f"Category {term}").items()}
    if "scheme" not in pairs:
        raise InvalidArgument(f"Category {term}: scheme is missing", reason="MALFORMED_RENDERING")
    cls = pairs.get("class", "")
    if cls not in ("", "kind", "mixin", "action"):
        raise InvalidArgument(f"Category {term}: class must be kind, mixin or action, not {cls!r}", reason="MALFORMED_RENDERING")
    return CategoryRef(
        scheme=pairs["scheme"], term=term, cls=cls, title=pairs.get("title", ""),
        rel=tuple(pairs.get("rel", "").split()), location=pairs.get("location", ""),
        attributes=tuple(pairs.get("attributes", "").split()),
    )


def parse_attribute(text: str) -> tuple[str, Value]:
    name, eq, value = text.partition("=")
    name = name.strip()
    if not eq or not _ATTR_NAME.match(name):
        raise InvalidArgument(f"X-OCCI-Attribute {text[:200]!r} is not name=value", reason="MALFORMED_RENDERING")
    return name, parse_value(value, name)


def parse_link(text: str) -> ParsedLink:
    chunks = split_outside_quotes(text, ";")
    target = chunks[0]
    if not (target.startswith("<") and target.endswith(">")) or len(target) < 3:
        raise InvalidArgument(f"Link {text[:200]!r} must start with <URI>", reason="MALFORMED_RENDERING")
    link = ParsedLink(target=target[1:-1].strip())
    for key, value in _pairs(chunks[1:], f"Link <{link.target}>").items():
        if key == "rel":
            link.rel = tuple(unquote(value).split())
        elif key == "self":
            link.self_location = unquote(value)
        elif key == "category":
            link.categories = tuple(unquote(value).split())
        else:
            if not _ATTR_NAME.match(key):
                raise InvalidArgument(f"Link <{link.target}>: {key[:100]!r} is not an attribute name", reason="MALFORMED_RENDERING")
            link.attributes[key] = parse_value(value, key)
    return link


def parse_location(text: str) -> str:
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text or any(c.isspace() for c in text):
        raise InvalidArgument(f"X-OCCI-Location {text[:200]!r} is not a URI", reason="MALFORMED_RENDERING")
    return text


def parse_lines(pairs: Iterable[tuple[str, str]]) -> ParsedEntity:
    """(header name, value) pairs, in order, into one ParsedEntity."""
    parsed = ParsedEntity()
    count = 0
    for name, value in pairs:
        key = name.strip().lower()
        for item in split_outside_quotes(value, ","):
            if not item:
                continue
            count += 1
            if count > MAX_ITEMS:
                raise InvalidArgument(f"more than {MAX_ITEMS} OCCI items in one request", reason="MALFORMED_RENDERING")
            if key == "category":
                parsed.categories.append(parse_category(item))
            elif key == "link":
                parsed.links.append(parse_link(item))
            elif key == "x-occi-attribute":
                attr, val = parse_attribute(item)
                if attr in parsed.attributes:
                    raise InvalidArgument(f"attribute {attr} is given twice", reason="MALFORMED_RENDERING")
                parsed.attributes[attr] = val
            elif key == "x-occi-location":
                parsed.locations.append(parse_location(item))
    return parsed


def parse_body(body: str) -> ParsedEntity:
    """A text/plain body: one ``Name: value`` per line."""
    pairs = []
    for number, line in enumerate(re.split(r"\r\n|\n|\r", body), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or name.strip().lower() not in OCCI_HEADERS:
            raise InvalidArgument(f"line {number} is not an OCCI line (Category, Link, X-OCCI-Attribute or X-OCCI-Location): "
                                  f"{line[:200]!r}", reason="MALFORMED_RENDERING")
        if not value.strip():
            raise InvalidArgument(f"line {number} ({name.strip()}) has no value", reason="MALFORMED_RENDERING")
        pairs.append((name, value))
    return parse_lines(pairs)


def parse_headers(headers: Iterable[tuple[str, str]]) -> ParsedEntity:
    """text/occi: the OCCI headers of a request (others are ignored)."""
    return parse_lines((k, v) for k, v in headers if k.strip().lower() in OCCI_HEADERS)
