"""Checks a parsed rendering against the caller's model before anything is called: known
categories of the right class, mixins that apply to the kind, declared attributes of the right
type and range, required ones present. The result holds only what a client may set (values of
provider-owned attributes, such as a state, are dropped)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.common.errors import InvalidArgument
from services.gateway.occi import infrastructure as infra
from services.gateway.occi import locations
from services.gateway.occi.categories import Action, Attribute, Kind, Mixin, Value
from services.gateway.occi.entities import ParsedEntity, ParsedLink
from services.gateway.occi.model import Model

_LINK_KIND_BY_TARGET = {infra.STORAGE.location: infra.STORAGELINK, infra.NETWORK.location: infra.NETWORKINTERFACE}
_CLIENT_OPTIONAL = {"occi.storagelink.deviceid"}
"""Required, but a provider default exists when a link is given inline with its compute."""


@dataclass
class LinkRequest:
    kind: Kind
    target: str
    """Path of the target resource."""
    mixins: list[Mixin] = field(default_factory=list)
    attributes: dict[str, Value] = field(default_factory=dict)


@dataclass
class EntityRequest:
    kind: Kind
    mixins: list[Mixin] = field(default_factory=list)
    attributes: dict[str, Value] = field(default_factory=dict)
    links: list[LinkRequest] = field(default_factory=list)
    given_provider_values: dict[str, Value] = field(default_factory=dict)
    """Provider-owned attributes the client sent (e.g. occi.core.id on a PUT): checked, not applied."""


def _bad(message: str, reason: str = "INVALID_ATTRIBUTE") -> InvalidArgument:
    return InvalidArgument(message, reason=reason)


def check_value(attr: Attribute, value: Value) -> Value:
    """The value if it fits the declaration (an integer given for a number becomes a float)."""
    name = attr.name
    if attr.type in ("string", "enum"):
        if not isinstance(value, str):
            raise _bad(f"attribute {name} must be a string, got {value!r}")
        if len(value) > attr.max_length:
            raise _bad(f"attribute {name} is {len(value)} characters long; at most {attr.max_length} are allowed")
        allowed = "\n\t" if attr.max_length > 1024 else ""
        if any((ord(c) < 32 and c not in allowed) or ord(c) == 127 for c in value):
            raise _bad(f"attribute {name} contains control characters")
        if attr.choices and value not in attr.choices:
            raise _bad(f"attribute {name} must be one of {', '.join(attr.choices)}, not {value[:50]!r}")
        return value
    if attr.type == "boolean":
        if not isinstance(value, bool):
            raise _bad(f"attribute {name} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"attribute {name} must be a number, got {value!r}")
    if attr.type == "integer" and not isinstance(value, int):
        raise _bad(f"attribute {name} must be an integer, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(f"attribute {name} must be a finite number")
    if attr.minimum is not None and value < attr.minimum or attr.maximum is not None and value > attr.maximum:
        raise _bad(f"attribute {name} must be between {attr.minimum:g} and {attr.maximum:g}, got {value!r}"
                   if attr.minimum is not None and attr.maximum is not None else f"attribute {name} is out of range: {value!r}")
    return float(value) if attr.type == "number" else value


def _categories(parsed: ParsedEntity, model: Model) -> tuple[list[Kind], list[Mixin], list[Action]]:
    kinds, mixins, actions = [], [], []
    for ref in parsed.categories:
        found = model.get(ref.id)
        if found is None:
            raise _bad(f"unknown category {ref.id} (see /-/ for the categories this server offers)", "UNKNOWN_CATEGORY")
        if ref.cls and ref.cls != found.category_class:
            raise _bad(f"{ref.id} is a {found.category_class}, not a {ref.cls}", "WRONG_CATEGORY_CLASS")
        if isinstance(found, Kind):
            kinds.append(found)
        elif isinstance(found, Mixin):
            if found not in mixins:
                mixins.append(found)
        elif isinstance(found, Action):
            actions.append(found)
    return kinds, mixins, actions


def _attributes(given: dict[str, Value], declared: dict[str, Attribute], owner: str) -> tuple[dict[str, Value], dict[str, Value]]:
    client: dict[str, Value] = {}
    provider: dict[str, Value] = {}
    for name, value in given.items():
        attr = declared.get(name)
        if attr is None:
            raise _bad(f"attribute {name} is not declared by {owner} or its mixins", "UNKNOWN_ATTRIBUTE")
        checked = check_value(attr, value)
        (provider if attr.provider else client)[name] = checked
    return client, provider


def _require(present: dict[str, Value], declared: dict[str, Attribute], owner: str, optional: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    missing = sorted(a.name for a in declared.values() if a.required and not a.provider and a.default is None
                     and a.name not in present and a.name not in optional)
    if missing:
        raise _bad(f"{owner} needs the attribute(s) {', '.join(missing)}", "MISSING_ATTRIBUTE")


def check_mixins(kind: Kind, mixins: list[Mixin], model: Model) -> None:
    for m in mixins:
        if not model.applies(m, kind):
            raise _bad(f"mixin {m.id} does not apply to {kind.term}", "MIXIN_NOT_APPLICABLE")
    for base in (infra.OS_TPL, infra.RESOURCE_TPL):
        chosen = [m.id for m in mixins if base.id in m.depends and not m.user_defined]
        if len(chosen) > 1:
            raise _bad(f"at most one {base.term} may be given, not {', '.join(chosen)}", "TOO_MANY_TEMPLATES")


def _link(parsed: ParsedLink, model: Model, inline: bool) -> LinkRequest:
    target = locations.path_of(parsed.target)
    collection, _ = locations.split(target)
    kinds = [k for k in (model.kind(c) for c in parsed.categories) if k is not None]
    unknown = [c for c in parsed.categories if model.get(c) is None]
    if unknown:
        raise _bad(f"link to {target}: unknown category {unknown[0]}", "UNKNOWN_CATEGORY")
    kind = kinds[0] if kinds else _LINK_KIND_BY_TARGET.get(collection)
    if kind is None or kind not in (infra.STORAGELINK, infra.NETWORKINTERFACE):
        raise _bad(f"link to {target}: only storage links (to /storage/ID) and network interfaces (to /network/ID) can be made",
                   "UNSUPPORTED_LINK")
    if _LINK_KIND_BY_TARGET.get(collection) is not kind:
        raise _bad(f"link to {target}: a {kind.term} must point at a {'storage' if kind is infra.STORAGELINK else 'network'}",
                   "WRONG_LINK_TARGET")
    mixins = [m for m in (model.mixin(c) for c in parsed.categories) if m is not None]
    check_mixins(kind, mixins, model)
    declared = model.declared(kind, mixins)
    given = {k: v for k, v in parsed.attributes.items() if k not in ("occi.core.source", "occi.core.target")}
    client, _ = _attributes(given, declared, kind.term)
    optional = _CLIENT_OPTIONAL if inline else set()
    _require({**client, "occi.core.source": "", "occi.core.target": ""}, declared, kind.term, optional)
    return LinkRequest(kind, target, mixins, client)


def check_entity(parsed: ParsedEntity, model: Model, collection_kind: Kind | None, *, partial: bool = False) -> EntityRequest:
    """A create (partial=False: required attributes must be there) or a partial update."""
    kinds, mixins, actions = _categories(parsed, model)
    if actions:
        raise _bad(f"{actions[0].id} is an action: trigger it with POST ...?action={actions[0].term}", "WRONG_CATEGORY_CLASS")
    if len(kinds) > 1:
        raise _bad(f"an entity has one kind, not {len(kinds)}", "TOO_MANY_KINDS")
    kind = kinds[0] if kinds else collection_kind
    if kind is None:
        raise _bad("the rendering names no kind (e.g. Category: compute; scheme=\"...\"; class=\"kind\")", "KIND_REQUIRED")
    if collection_kind is not None and kind is not collection_kind:
        raise _bad(f"a {kind.term} cannot be made or changed in the {collection_kind.term} collection", "WRONG_KIND")
    if kind in (infra.ENTITY, infra.RESOURCE, infra.LINK):
        raise _bad(f"{kind.id} is abstract here: create a compute, storage, network, storagelink or networkinterface",
                   "ABSTRACT_KIND")
    check_mixins(kind, mixins, model)
    declared = model.declared(kind, mixins)
    client, provider = _attributes(parsed.attributes, declared, kind.term)
    if not partial:
        _require(client, declared, kind.term)
    links = [_link(link, model, inline=True) for link in parsed.links if not _is_action_link(link, model)]
    if links and kind is not infra.COMPUTE:
        raise _bad("only a compute can be created with inline links", "UNSUPPORTED_LINK")
    return EntityRequest(kind, mixins, client, links, provider)


def _is_action_link(link: ParsedLink, model: Model) -> bool:
    """Action links come back in a full rendering a client PUTs; they are not links to make."""
    return "?action=" in link.target or any(model.action(r) is not None for r in link.rel)


def check_link_entity(parsed: ParsedEntity, model: Model, kind: Kind) -> tuple[LinkRequest, str]:
    """A standalone link (POST /storagelink/): returns it and its source's path."""
    request = check_entity(ParsedEntity(parsed.categories, {k: v for k, v in parsed.attributes.items()
                                                            if k not in ("occi.core.source", "occi.core.target")}),
                           model, kind, partial=True)
    source, target = parsed.attributes.get("occi.core.source"), parsed.attributes.get("occi.core.target")
    if not isinstance(source, str) or not isinstance(target, str):
        raise _bad(f"a {kind.term} needs occi.core.source and occi.core.target (locations)", "MISSING_ATTRIBUTE")
    link = _link(ParsedLink(target=target, categories=tuple(c.id for c in parsed.categories),
                            attributes=dict(request.attributes)), model, inline=False)
    source_path = locations.path_of(source)
    if locations.split(source_path)[0] != infra.COMPUTE.location:
        raise _bad(f"the source of a {kind.term} must be a compute (/compute/ID), not {source_path}", "WRONG_LINK_SOURCE")
    return link, source_path


def check_action(parsed: ParsedEntity, model: Model, kind: Kind, term: str) -> tuple[Action, dict[str, Value]]:
    """POST ?action=term: the action must be the kind's; a body, if any, must name the same action."""
    action = next((a for a in (model.action(i) for i in kind.actions) if a is not None and a.term == term), None)
    if action is None:
        offered = ", ".join(i.rpartition("#")[2] for i in kind.actions) or "none"
        raise _bad(f"{kind.term} has no action {term[:50]!r} (its actions: {offered})", "UNKNOWN_ACTION")
    kinds, mixins, actions = _categories(parsed, model)
    if kinds or mixins or parsed.links or parsed.locations:
        raise _bad("an action invocation carries the action's category and its attributes only", "MALFORMED_RENDERING")
    if actions and actions != [action]:
        raise _bad(f"the body names {actions[0].id}, the query string {action.id}", "ACTION_MISMATCH")
    declared = {a.name: a for a in action.attributes}
    client, _ = _attributes(parsed.attributes, declared, f"action {action.term}")
    return action, client
