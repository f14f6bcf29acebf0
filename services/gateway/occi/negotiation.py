"""Content negotiation: which rendering a request carries and which one its answer gets.

Renderings: text/plain (and text/occi+plain), text/occi (headers), text/uri-list (collections
only) and application/occi+json (application/json too). No Accept, or */*, means text/plain.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.gateway.occi.http_errors import NotAcceptable

TEXT_PLAIN = "text/plain"
TEXT_OCCI = "text/occi"
URI_LIST = "text/uri-list"
OCCI_JSON = "application/occi+json"
JSON = "application/json"
TEXT_OCCI_PLAIN = "text/occi+plain"

RENDERINGS = (TEXT_PLAIN, TEXT_OCCI, OCCI_JSON, URI_LIST, JSON, TEXT_OCCI_PLAIN)
ACCEPT_HEADER = ", ".join(RENDERINGS)
PARSEABLE = {TEXT_PLAIN, TEXT_OCCI_PLAIN, TEXT_OCCI, OCCI_JSON, JSON, URI_LIST}


@dataclass(frozen=True)
class Choice:
    media_type: str

    @property
    def is_json(self) -> bool:
        return self.media_type in (OCCI_JSON, JSON)

    @property
    def in_headers(self) -> bool:
        return self.media_type == TEXT_OCCI


def _media_ranges(accept: str) -> list[tuple[str, float, int]]:
    ranges = []
    for index, item in enumerate(accept.split(",")):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if not media:
            continue
        q = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError as exc:
                    raise InvalidArgument(f"Accept: bad q value in {item.strip()[:100]!r}", reason="MALFORMED_HEADER") from exc
        ranges.append((media, q, index))
    return ranges


def choose(accept: str | None, collection: bool) -> Choice:
    """The rendering to answer with. 406 if nothing acceptable is offered; a listing of
    text/uri-list on a non-collection is a 400 (GFD.229)."""
    if not accept or not accept.strip():
        return Choice(TEXT_PLAIN)
    offered = [r for r in RENDERINGS if collection or r != URI_LIST]
    best: tuple[float, int, str] | None = None
    uri_list_only = False
    for media, q, index in _media_ranges(accept):
        if q <= 0:
            continue
        if media == URI_LIST and not collection:
            uri_list_only = True
            continue
        if media in ("*/*", "text/*"):
            candidate = TEXT_PLAIN
        elif media == "application/*":
            candidate = OCCI_JSON
        elif media in offered:
            candidate = media
        else:
            continue
        key = (q, -index, candidate)
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:
        if uri_list_only:
            raise InvalidArgument("text/uri-list renders collections only; ask for text/plain, text/occi or "
                                  "application/occi+json here", reason="URI_LIST_NOT_COLLECTION")
        raise NotAcceptable(f"none of the accepted types ({accept[:200]}) is offered; offered: {', '.join(offered)}")
    return Choice(best[2])


def request_type(content_type: str | None, has_body: bool) -> str:
    """The rendering a request carries: its Content-Type, or text/occi (headers) without a body."""
    media = (content_type or "").split(";")[0].strip().lower()
    if not media or media == "application/octet-stream":
        return TEXT_PLAIN if has_body else TEXT_OCCI
    if media not in PARSEABLE:
        raise InvalidArgument(f"Content-Type {media[:100]!r} is not an OCCI rendering; send one of "
                              f"{', '.join(sorted(PARSEABLE))}", reason="UNSUPPORTED_CONTENT_TYPE")
    return media
