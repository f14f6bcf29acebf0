"""Provider templates: one os_tpl mixin per image the caller may use, one resource_tpl mixin per
site size. Sizes come from a TOML file a site edits:

    [sizes.small]
    title = "1 core, 1 GiB"
    cores = 1
    memory_gib = 1.0
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import InvalidArgument
from services.gateway.occi.categories import Attribute, Mixin
from services.gateway.occi.infrastructure import COMPUTE, OS_TPL, RESOURCE_TPL

OS_TPL_SCHEME = "http://schemas.wnodes.infn.it/occi/infrastructure/os_tpl#"
RESOURCE_TPL_SCHEME = "http://schemas.wnodes.infn.it/occi/infrastructure/resource_tpl#"
_TERM = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Size:
    term: str
    cores: int
    memory_gib: float
    title: str = ""


DEFAULT_SIZES = (
    Size("small", 1, 0.5, "small: 1 core, 0.5 GiB"),
    Size("medium", 2, 2.0, "medium: 2 cores, 2 GiB"),
    Size("large", 4, 8.0, "large: 4 cores, 8 GiB"),
)


def load_sizes(path: Path | None) -> tuple[Size, ...]:
    """The site's sizes, or DEFAULT_SIZES without a file. A bad file fails at start, loudly."""
    if path is None:
        return DEFAULT_SIZES
    data = tomllib.loads(path.read_text())
    sizes = []
    for term, entry in dict(data.get("sizes", {})).items():
        if not _TERM.match(term):
            raise InvalidArgument(f"{path}: size name {term!r} must be lowercase letters, digits, '_' or '-'")
        cores, memory = entry.get("cores"), entry.get("memory_gib")
        if not isinstance(cores, int) or cores < 1 or not isinstance(memory, int | float) or memory <= 0:
            raise InvalidArgument(f"{path}: size {term!r} needs cores (integer >= 1) and memory_gib (> 0)")
        sizes.append(Size(term, cores, float(memory), str(entry.get("title", f"{term}: {cores} cores, {memory} GiB"))))
    if not sizes:
        raise InvalidArgument(f"{path}: no [sizes.NAME] tables")
    return tuple(sizes)


def resource_tpl(size: Size) -> Mixin:
    return Mixin(
        RESOURCE_TPL_SCHEME, size.term, size.title or size.term, depends=(RESOURCE_TPL.id,), applies=(COMPUTE.id,),
        location=f"/mixin/resource_tpl/{size.term}/",
        attributes=(
            Attribute("occi.compute.cores", "integer", mutable=False, default=size.cores, description="set by this template"),
            Attribute("occi.compute.memory", "number", mutable=False, default=size.memory_gib, description="set by this template (GiB)"),
        ),
    )


def os_tpl_term(image: str) -> str:
    """An OCCI term for an image name ('debian-12.1' -> 'debian-12_1'): terms allow no dots."""
    term = image.lower().replace(".", "_")
    return term if term[:1].isalpha() else f"img_{term}"


def os_tpl(image: str, description: str = "") -> Mixin:
    term = os_tpl_term(image)
    return Mixin(
        OS_TPL_SCHEME, term, description or f"image {image}", depends=(OS_TPL.id,), applies=(COMPUTE.id,),
        location=f"/mixin/os_tpl/{term}/",
    )
