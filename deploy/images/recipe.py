"""Declarative image recipes: what a VO's image is, kept in the repository and built on demand.

A recipe is a TOML file (deploy/images/recipes/NAME.toml)::

    name = "atlas-wn"                # the image it becomes a new version of
    base = "debian12"                # tiny | debian12
    description = "ATLAS worker node"
    vo = "atlas"                     # the owner VO
    visibility = "VO"                # PRIVATE | VO | PUBLIC
    packages = ["bc"]                # Debian packages (debian12 only: tiny has no package manager)

    [[files]]                        # files to add, owned by root
    path = "/etc/motd"
    content = "ATLAS worker node\\n"  # or source = "atlas/motd" (relative to the recipe)
    mode = "0644"

Parsing is pure and strict: an unknown key, base, visibility or a malformed package name is
refused with a message naming the recipe and the key, because a typo that is silently ignored
becomes an image that lacks what the VO asked for. The builder is deploy/images/recipe_build.py.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

BASES = ("tiny", "debian12")
VISIBILITIES = ("PRIVATE", "VO", "PUBLIC")
# Debian policy 5.6.1: lower case letters, digits, + - . ; at least two characters, starting alphanumeric.
# An option such as "-o..." or a shell metacharacter can never pass.
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
IMAGE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
VO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TOP_KEYS = frozenset({"name", "base", "description", "vo", "visibility", "packages", "files"})
FILE_KEYS = frozenset({"path", "content", "source", "mode"})


class RecipeError(ValueError):
    """A recipe that cannot be built; the message says which file and which key."""


@dataclass(frozen=True)
class RecipeFile:
    path: str
    """Absolute path in the guest."""
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Recipe:
    name: str
    base: str
    vo: str
    visibility: str = "VO"
    description: str = ""
    packages: tuple[str, ...] = ()
    files: tuple[RecipeFile, ...] = field(default=())
    source: str = ""
    """Where the recipe came from (a file name), for messages and the version's record."""
    sha256: str = ""
    """Of the recipe's text: which recipe a version was built from."""

    def customizations(self) -> list[str]:
        """One line each, recorded in the image version (ImageVersion.customizations)."""
        lines = [f"recipe {self.source or self.name} sha256:{self.sha256}", f"base {self.base}"]
        if self.packages:
            lines.append("packages " + " ".join(self.packages))
        lines += [f"file {f.path} sha256:{hashlib.sha256(f.content).hexdigest()[:16]} mode {f.mode:04o}" for f in self.files]
        return lines


def load_recipe(path: Path) -> Recipe:
    """Reads and validates a recipe file; file sources are relative to its folder."""
    try:
        text = path.read_text()
    except OSError as err:
        raise RecipeError(f"{path}: cannot read: {err.strerror}") from None
    return parse_recipe(text, source=path.name, base_dir=path.parent)


def parse_recipe(text: str, source: str = "<recipe>", base_dir: Path | None = None) -> Recipe:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{source}: not valid TOML: {err}") from None
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise RecipeError(f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(TOP_KEYS))})")
    for key in ("name", "base", "vo"):
        if key not in data:
            raise RecipeError(f"{source}: '{key}' is required")
    name = _string(data, "name", source)
    if not IMAGE_NAME.match(name):
        raise RecipeError(f"{source}: name {name!r} must be lower case letters, digits and '-', starting with a letter")
    base = _string(data, "base", source)
    if base not in BASES:
        raise RecipeError(f"{source}: unknown base {base!r} (one of {', '.join(BASES)})")
    vo = _string(data, "vo", source)
    if not VO_NAME.match(vo):
        raise RecipeError(f"{source}: vo {vo!r} is not a VO name")
    visibility = _string(data, "visibility", source, "VO")
    if visibility not in VISIBILITIES:
        raise RecipeError(f"{source}: visibility {visibility!r} must be one of {', '.join(VISIBILITIES)}")
    packages = data.get("packages", [])
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise RecipeError(f"{source}: 'packages' must be a list of package names")
    bad = [p for p in packages if not PACKAGE_NAME.match(p)]
    if bad:
        raise RecipeError(f"{source}: bad package name(s) {', '.join(map(repr, bad))} (Debian names: a-z 0-9 + - .)")
    if packages and base != "debian12":
        raise RecipeError(f"{source}: base {base!r} has no package manager: 'packages' needs base 'debian12' "
                          "(add static binaries under [[files]] instead)")  # fmt: skip
    if len(set(packages)) != len(packages):
        raise RecipeError(f"{source}: a package is listed twice")
    files_data = data.get("files", [])
    if not isinstance(files_data, list):
        raise RecipeError(f"{source}: 'files' must be an array of tables ([[files]])")
    files = tuple(_file(entry, i, source, base_dir) for i, entry in enumerate(files_data))
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise RecipeError(f"{source}: a file path is listed twice")
    return Recipe(
        name=name, base=base, vo=vo, visibility=visibility,
        description=_string(data, "description", source, ""), packages=tuple(packages), files=files,
        source=source, sha256=hashlib.sha256(text.encode()).hexdigest(),
    )  # fmt: skip


def _string(data: dict[str, Any], key: str, source: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise RecipeError(f"{source}: '{key}' must be a string")
    return value


def _file(entry: object, index: int, source: str, base_dir: Path | None) -> RecipeFile:
    where = f"{source}: files[{index}]"
    if not isinstance(entry, dict):
        raise RecipeError(f"{where} must be a table")
    unknown = sorted(set(entry) - FILE_KEYS)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(FILE_KEYS))})")
    path = entry.get("path")
    if not isinstance(path, str) or not path.startswith("/") or ".." in PurePosixPath(path).parts or path.endswith("/"):
        raise RecipeError(f"{where}: 'path' must be an absolute file path without '..'")
    if ("content" in entry) == ("source" in entry):
        raise RecipeError(f"{where} ({path}): give exactly one of 'content' or 'source'")
    if "content" in entry:
        if not isinstance(entry["content"], str):
            raise RecipeError(f"{where} ({path}): 'content' must be a string")
        content = entry["content"].encode()
    else:
        rel = entry["source"]
        if not isinstance(rel, str) or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            raise RecipeError(f"{where} ({path}): 'source' must be a path relative to the recipe, without '..'")
        if base_dir is None:
            raise RecipeError(f"{where} ({path}): 'source' needs a recipe file to be relative to")
        try:
            content = (base_dir / rel).read_bytes()
        except OSError as err:
            raise RecipeError(f"{where} ({path}): cannot read source {rel}: {err.strerror}") from None
    mode_text = entry.get("mode", "0644")
    if not isinstance(mode_text, str) or not re.fullmatch(r"0?[0-7]{3}", mode_text):
        raise RecipeError(f"{where} ({path}): 'mode' must be an octal string such as \"0755\"")
    return RecipeFile(path=path, content=content, mode=int(mode_text, 8))
