"""The OCCI Core type system (GFD.221): categories (kinds, mixins, actions) and the attributes
they declare. Plain frozen data; the model of this server is built from them in
``infrastructure.py`` and ``templates.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

Value = str | int | float | bool
"""An attribute value as the renderings carry it."""

AttributeType = Literal["string", "integer", "number", "boolean", "enum"]
CategoryClass = Literal["kind", "mixin", "action"]


@dataclass(frozen=True)
class Attribute:
    """An attribute declaration. ``integer`` is a number that must be integral (cores, VLAN);
    ``enum`` is a string restricted to ``choices``."""

    name: str
    type: AttributeType = "string"
    required: bool = False
    mutable: bool = True
    default: Value | None = None
    description: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = 256
    provider: bool = False
    """Owned by the provider (state, hostname, id...): a client's value is ignored, never applied."""

    def render_spec(self) -> str:
        """The text rendering's ``attributes=`` entry: ``name{required immutable}``."""
        flags = [f for f, on in (("required", self.required), ("immutable", not self.mutable)) if on]
        return f"{self.name}{{{' '.join(flags)}}}" if flags else self.name


@dataclass(frozen=True)
class Category:
    scheme: str
    term: str
    title: str = ""
    attributes: tuple[Attribute, ...] = ()

    @property
    def id(self) -> str:
        """The type identifier: scheme + term."""
        return self.scheme + self.term

    category_class: ClassVar[CategoryClass]

    def attribute(self, name: str) -> Attribute | None:
        return next((a for a in self.attributes if a.name == name), None)


@dataclass(frozen=True)
class Action(Category):
    category_class: ClassVar[CategoryClass] = "action"


@dataclass(frozen=True)
class Kind(Category):
    parent: str = ""
    actions: tuple[str, ...] = ()
    location: str = ""
    """Path of the kind's collection ("/compute/"); empty only for core#entity."""

    category_class: ClassVar[CategoryClass] = "kind"


@dataclass(frozen=True)
class Mixin(Category):
    depends: tuple[str, ...] = ()
    applies: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    location: str = ""
    user_defined: bool = False
    """Added by a user through POST /-/ (a tag), not by the provider."""

    category_class: ClassVar[CategoryClass] = "mixin"


@dataclass(frozen=True)
class CategoryRef:
    """A category as a request names it: identity plus what a user-mixin definition may carry."""

    scheme: str
    term: str
    cls: str = ""
    title: str = ""
    rel: tuple[str, ...] = ()
    location: str = ""
    attributes: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return self.scheme + self.term
