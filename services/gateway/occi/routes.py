"""HTTP verbs on OCCI paths (GFD.223) -> OcciService use cases. One catch-all route: which path
is a collection depends on the caller's model (their os_tpl mixins, their own mixins)."""

from __future__ import annotations

import re

from aiohttp import web

from services.common.errors import InvalidArgument, NotFound
from services.common.identity import Principal
from services.gateway.occi import infrastructure as infra
from services.gateway.occi import json_rendering, locations, negotiation, responses, text_parsing, validation
from services.gateway.occi.categories import Category, Kind, Mixin
from services.gateway.occi.entities import EntityView, ParsedEntity
from services.gateway.occi.http_errors import MethodNotAllowed, PayloadTooLarge
from services.gateway.occi.model import Model
from services.gateway.occi.negotiation import Choice
from services.gateway.occi.service import OcciService

QUERY_PATHS = ("/-/", "/.well-known/org/ogf/occi/-/")
MAX_PAGE_NUMBER = 1000
PRINCIPAL_KEY = web.RequestKey("wnodes.principal", Principal)
"""Where the authentication middleware leaves the caller's Principal on the request."""
_MAX_QUERY = 8


async def parse_request(request: web.Request) -> ParsedEntity:
    """The rendering a request carries, whatever its Content-Type (syntax only)."""
    body = await request.text() if request.body_exists else ""
    media = negotiation.request_type(request.headers.get("Content-Type"), bool(body.strip()))
    if media in (negotiation.OCCI_JSON, negotiation.JSON):
        return json_rendering.parse(body) if body.strip() else ParsedEntity()
    if media == negotiation.URI_LIST:
        return ParsedEntity(locations=[text_parsing.parse_location(line) for line in body.splitlines()
                                       if line.strip() and not line.startswith("#")])
    if media == negotiation.TEXT_OCCI or not body.strip() or body.strip() == "OK":
        return text_parsing.parse_headers(request.headers.items())
    return text_parsing.parse_body(body)


def _page(request: web.Request, entities: list[EntityView]) -> list[EntityView]:
    page_text, number_text = request.query.get("page"), request.query.get("number")
    if page_text is None and number_text is None:
        return entities
    try:
        page = int(page_text) if page_text is not None else 1
        number = int(number_text) if number_text is not None else MAX_PAGE_NUMBER
    except ValueError as exc:
        raise InvalidArgument("page and number must be integers", reason="INVALID_PAGE") from exc
    if number > MAX_PAGE_NUMBER:
        raise PayloadTooLarge(f"number={number} is too big: at most {MAX_PAGE_NUMBER} entities per page")
    if page < 1 or number < 1:
        raise InvalidArgument("page and number start at 1", reason="INVALID_PAGE")
    start = (page - 1) * number
    return entities[start:start + number]


def _filter(entities: list[EntityView], wanted: ParsedEntity) -> list[EntityView]:
    """Collection filtering (GFD.223, text/occi headers): by category, and by attribute values."""
    out = []
    for e in entities:
        ids = {e.kind.id, *(m.id for m in e.mixins)}
        if any(c.id not in ids for c in wanted.categories):
            continue
        if any(e.attributes.get(k) != v for k, v in wanted.attributes.items()):
            continue
        out.append(e)
    return out


class OcciRoutes:
    def __init__(self, service: OcciService) -> None:
        self._service = service

    def add_to(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.dispatch)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if len(request.query) > _MAX_QUERY:
            raise InvalidArgument("too many query parameters", reason="INVALID_QUERY")
        p = request[PRINCIPAL_KEY]
        path = request.path
        model = await self._service.model(p)
        if path in QUERY_PATHS:
            return await self._query(request, p, model)
        if path == "/":
            return await self._collection(request, p, model, infra.RESOURCE, union=True)
        if path.endswith("/"):
            category = model.by_location(path)
            if category is None:
                raise NotFound(f"{path} is no collection here (see /-/ for the locations)")
            return await self._collection(request, p, model, category)
        return await self._entity(request, p, model, path)

    # --- query interface -------------------------------------------------------------------

    async def _query(self, request: web.Request, p: Principal, model: Model) -> web.Response:
        choice = negotiation.choose(request.headers.get("Accept"), collection=False)
        parsed = await parse_request(request)
        if request.method in ("GET", "HEAD"):
            found: list[Category] = list(model)
            if parsed.categories:
                found = [c for ref in parsed.categories for c in model.related(ref)]
            return responses.categories(choice, list(dict.fromkeys(found)))
        if request.method == "POST":
            mixins = [c for c in parsed.categories]
            if not mixins or parsed.attributes or parsed.links:
                raise InvalidArgument("POST /-/ defines mixins: send their Category renderings only", reason="MALFORMED_RENDERING")
            taken = {c.id for c in model}
            bound = {c.location for c in model if isinstance(c, Kind | Mixin) and c.location}
            defined = [self._service.user_mixins.define(p, ref, taken, bound) for ref in mixins]
            return responses.categories(choice, list(defined))
        if request.method == "DELETE":
            if not parsed.categories:
                raise InvalidArgument("DELETE /-/ names the user mixin(s) to remove in Category renderings", reason="MALFORMED_RENDERING")
            for ref in parsed.categories:
                self._service.user_mixins.remove(p, ref.id)
            return responses.empty(choice)
        raise MethodNotAllowed(f"{request.method} is not defined on the query interface (GET, POST, DELETE)")

    # --- collections -----------------------------------------------------------------------

    async def _collection(self, request: web.Request, p: Principal, model: Model, category: Kind | Mixin,
                          union: bool = False) -> web.Response:
        base = str(request.url.origin())
        method, action = request.method, request.query.get("action")
        if method in ("GET", "HEAD"):
            choice = negotiation.choose(request.headers.get("Accept"), collection=True)
            wanted = await parse_request(request)
            entities = await self._service.collection(p, model, category)
            if union:
                entities += await self._service.collection(p, model, infra.LINK)
            return responses.collection(choice, _page(request, _filter(entities, wanted)), base)
        choice = negotiation.choose(request.headers.get("Accept"), collection=False)
        parsed = await parse_request(request)
        if method == "POST" and action is not None:
            if not isinstance(category, Kind):
                raise InvalidArgument("actions are triggered on a kind's collection or on an entity", reason="INVALID_ACTION_TARGET")
            act, attrs = validation.check_action(parsed, model, category, action)
            for e in await self._service.collection(p, model, category):
                await self._service.act(p, model, e.location, act, attrs)
            return responses.empty(choice)
        if isinstance(category, Mixin):
            return await self._mixin_membership(request, p, model, category, parsed, choice, base)
        if method == "POST" and not union:
            if category in (infra.STORAGELINK, infra.NETWORKINTERFACE):
                link, source = validation.check_link_entity(parsed, model, category)
                created = await self._service.create_link(p, model, link, source)
            else:
                created = await self._service.create(p, model, validation.check_entity(parsed, model, category))
            return responses.entity(choice, created, base, status=201)
        if method == "DELETE" and not union and category not in (infra.ENTITY, infra.RESOURCE, infra.LINK):
            for e in await self._service.collection(p, model, category):
                await self._service.delete(p, model, e.location)
            return responses.empty(choice)
        raise MethodNotAllowed(f"{method} is not defined on {request.path}")

    async def _mixin_membership(self, request: web.Request, p: Principal, model: Model, mixin: Mixin, parsed: ParsedEntity,
                                choice: Choice, base: str) -> web.Response:
        if not mixin.user_defined:
            raise MethodNotAllowed(f"{request.path} is a provider mixin: its members are set when they are created")
        paths = [locations.path_of(u) for u in parsed.locations]
        for path in paths:
            await self._service.get(p, model, path)  # must exist and be the caller's
        if request.method in ("POST", "PUT"):
            self._service.user_mixins.tag(p, mixin.id, paths, replace=request.method == "PUT")
        elif request.method == "DELETE":
            self._service.user_mixins.untag(p, mixin.id, paths if parsed.locations else None)
        else:
            raise MethodNotAllowed(f"{request.method} is not defined on {request.path}")
        return responses.collection(negotiation.choose(request.headers.get("Accept"), collection=True),
                                    await self._service.collection(p, model, mixin), base)

    # --- entities --------------------------------------------------------------------------

    async def _entity(self, request: web.Request, p: Principal, model: Model, path: str) -> web.Response:
        base = str(request.url.origin())
        choice = negotiation.choose(request.headers.get("Accept"), collection=False)
        collection, _ = locations.split(path)
        kind = model.by_location(collection)
        if not isinstance(kind, Kind) or not re.fullmatch(r"/[a-z]+/[a-z0-9.-]+", path):
            raise NotFound(f"{path} does not exist")
        method, action = request.method, request.query.get("action")
        if method in ("GET", "HEAD"):
            return responses.entity(choice, await self._service.get(p, model, path), base)
        parsed = await parse_request(request)
        if method == "POST" and action is not None:
            act, attrs = validation.check_action(parsed, model, kind, action)
            result = await self._service.act(p, model, path, act, attrs)
            if isinstance(result, Mixin):
                return responses.mixin(choice, result)
            return responses.entity(choice, result, base)
        if method in ("POST", "PUT"):
            await self._service.get(p, model, path)  # 404 first: never say more about another user's entity
            checked = validation.check_entity(parsed, model, kind, partial=True)
            updated = await self._service.update(p, model, path, checked, replace=method == "PUT")
            return responses.entity(choice, updated, base)
        if method == "DELETE":
            await self._service.delete(p, model, path)
            return responses.empty(choice)
        raise MethodNotAllowed(f"{method} is not defined on {path}")
