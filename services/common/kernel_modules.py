"""Which kernel modules to load, and in what order: the dependencies ``depmod`` records in
``/lib/modules/<release>/modules.dep``.

Two users: the image build (deploy/images/initramfs.py: the modules the initramfs loads before
it mounts the root file system) and the imagestore's customisation (the modules an image loads at
boot). Both ask for modules by name and get them back each after everything it depends on.

A line of modules.dep is ``kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz ...``: the module's
path (relative to the release's directory, possibly compressed) and the paths of the modules it
needs. A module's name is its file name without ``.ko`` and the compression suffix, with ``-``
read as ``_`` (the kernel treats the two alike: ``nf-x`` and ``nf_x`` are one module).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MODULE_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


class ModuleNotFound(ValueError):
    """A module (asked for, or needed by one asked for) that modules.dep does not list."""

    def __init__(self, name: str) -> None:
        super().__init__(f"kernel module {name} not in modules.dep")
        self.name = name


def module_name(path: str) -> str:
    """'kernel/net/nf-x.ko.xz' -> 'nf_x'."""
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


@dataclass(frozen=True)
class ModulesDep:
    """One kernel release's modules.dep: each module's path and the names of what it needs."""

    modules: dict[str, tuple[str, tuple[str, ...]]]
    """module name -> (path relative to the release's directory, names of its dependencies)"""

    @classmethod
    def parse(cls, text: str) -> ModulesDep:
        modules: dict[str, tuple[str, tuple[str, ...]]] = {}
        for line in text.splitlines():
            if ":" not in line:
                continue
            path, deps = line.split(":", 1)
            modules[module_name(path)] = (path, tuple(module_name(d) for d in deps.split()))
        return cls(modules)

    @classmethod
    def read(cls, modules_dir: Path) -> ModulesDep:
        """modules_dir: /lib/modules/<release>."""
        return cls.parse((modules_dir / "modules.dep").read_text())

    def path(self, name: str) -> str:
        """The module's file, relative to the release's directory."""
        return self.modules[name][0]

    def load_order(self, wanted: Iterable[str], skip: Iterable[str] = ()) -> list[str]:
        """The names of the wanted modules and their dependencies, each after everything it needs
        and each once; the modules in skip (already loaded) are left out.
        Raises ModuleNotFound for a module modules.dep does not list, ValueError on a cycle."""
        order: list[str] = []
        done = set(skip)

        def visit(name: str, stack: tuple[str, ...]) -> None:
            if name in done:
                return
            if name in stack:
                raise ValueError(f"module dependency cycle: {' -> '.join((*stack, name))}")
            if name not in self.modules:
                raise ModuleNotFound(name)
            for dep in self.modules[name][1]:
                visit(dep, (*stack, name))
            done.add(name)
            order.append(name)

        for name in wanted:
            visit(name.replace("-", "_"), ())
        return order
