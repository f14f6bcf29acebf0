from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("WNODES_OTEL_EXPORTER", "none")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Real VMs need libvirt and the images `make setup` builds; say so loudly rather than skip
    # silently when a developer runs the suite on a bare machine.
    missing = [tool for tool in ("etcd", "etcdctl", "qemu-img") if shutil.which(tool) is None]
    if missing:
        raise pytest.UsageError(f"missing {', '.join(missing)}: run 'make setup' first")
