"""Renders answers in the negotiated rendering: text/plain (body lines), text/occi (headers, body
"OK"), text/uri-list (locations) and application/occi+json."""

from __future__ import annotations

from aiohttp import web

from services.gateway.occi import json_rendering as js
from services.gateway.occi import text_rendering as txt
from services.gateway.occi.categories import Category, Mixin
from services.gateway.occi.entities import EntityView
from services.gateway.occi.negotiation import URI_LIST, Choice


def _text(choice: Choice, lines: list[txt.Line], status: int = 200, extra: dict[str, str] | None = None) -> web.Response:
    headers = {"Content-Type": choice.media_type, **(extra or {})}
    if choice.in_headers:
        response = web.Response(status=status, body=b"OK\n", headers=headers)
        for name, value in txt.as_headers(lines):
            response.headers.add(name, value)
        return response
    return web.Response(status=status, body=txt.as_body(lines).encode(), headers=headers)


def _json(choice: Choice, document: dict[str, object], status: int = 200, extra: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=(js.dumps(document) + "\n").encode(), headers={"Content-Type": choice.media_type, **(extra or {})})


def categories(choice: Choice, found: list[Category]) -> web.Response:
    if choice.is_json:
        return _json(choice, js.model(found))
    return _text(choice, txt.categories_lines(found))


def mixin(choice: Choice, m: Mixin) -> web.Response:
    if choice.is_json:
        return _json(choice, js.category(m))
    return _text(choice, [txt.category_line(m)])


def entity(choice: Choice, e: EntityView, base: str, status: int = 200) -> web.Response:
    extra = {"Location": base + e.location} if status == 201 else None
    if choice.is_json:
        return _json(choice, js.entity(e), status, extra)
    if status == 201:  # GFD.223: a create answers with the new location
        return _text(choice, txt.locations_lines([base + e.location]), status, extra)
    return _text(choice, txt.entity_lines(e))


def collection(choice: Choice, entities: list[EntityView], base: str) -> web.Response:
    urls = [base + e.location for e in entities]
    if choice.media_type == URI_LIST:
        return web.Response(body="".join(f"{u}\r\n" for u in urls).encode(), headers={"Content-Type": URI_LIST})
    if choice.is_json:
        links = [e for e in entities if "occi.core.source" in e.attributes]
        resources = [e for e in entities if "occi.core.source" not in e.attributes]
        if links and resources:
            return _json(choice, {"resources": [js.entity(e) for e in resources], "links": [js.entity(e) for e in links]})
        return _json(choice, js.collection(entities, links=bool(links)))
    return _text(choice, txt.locations_lines(urls))


def empty(choice: Choice, status: int = 200) -> web.Response:
    if choice.is_json:
        return _json(choice, {}, status)
    return _text(choice, [], status)


def error(status: int, message: str, extra: dict[str, str] | None = None) -> web.Response:
    """Errors are plain text whatever was asked for: a person or a log reads them."""
    return web.Response(status=status, body=(message + "\n").encode(), headers={"Content-Type": "text/plain", **(extra or {})})
