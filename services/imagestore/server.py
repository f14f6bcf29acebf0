"""Wires the imagestore: blob directory + catalogue in etcd -> servicer."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from services.common import config, serve, telemetry
from services.common.etcd_store import EtcdStore
from services.common.keys import Keys
from services.imagestore.blobs import BlobStore
from services.imagestore.catalog import Catalog
from services.imagestore.customization_service import CustomizeService, ProcessCustomizer
from services.imagestore.servicer import ImagestoreServicer
from wnodes.imagestore.v1 import imagestore_service_pb2_grpc

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImagestoreConfig:
    listen: str
    etcd: tuple[str, ...]
    key_root: str
    blob_dir: Path
    """Where content-addressed blobs are kept."""
    guestfs_cache_dir: Path | None = None
    """Where libguestfs keeps its appliance (built once, then reused); default: libguestfs's own
    (/var/tmp/.guestfs-<uid>, shared by every imagestore of this user on the machine)."""


def parse_args(argv: list[str] | None = None) -> ImagestoreConfig:
    p = argparse.ArgumentParser(prog="wnodes-imagestore", description="WNoDeS imagestore: image catalogue and blobs")
    p.add_argument("--listen", default=config.env("IMAGESTORE_LISTEN", "127.0.0.1:0"))
    p.add_argument("--etcd", default=config.env("ETCD", "127.0.0.1:2379"))
    p.add_argument("--key-root", default=config.env("KEY_ROOT", "/wnodes/v1"))
    p.add_argument("--blob-dir", type=Path, default=Path(config.env("IMAGESTORE_BLOB_DIR", "/var/lib/wnodes/blobs")))
    p.add_argument("--guestfs-cache-dir", type=Path, default=config.env("IMAGESTORE_GUESTFS_CACHE_DIR", "") or None)
    a = p.parse_args(argv)
    cache = Path(a.guestfs_cache_dir) if a.guestfs_cache_dir else None
    return ImagestoreConfig(a.listen, tuple(config.split_endpoints(a.etcd)), a.key_root, a.blob_dir, cache)


async def serve_imagestore(cfg: ImagestoreConfig, stop: asyncio.Event) -> None:
    telemetry.setup("wnodes-imagestore")
    store = EtcdStore(cfg.etcd)
    await store.connect()
    server, health, port = await serve.make_server(cfg.listen)
    catalog, blobs = Catalog(store, Keys(cfg.key_root)), BlobStore(cfg.blob_dir)
    customize = CustomizeService(catalog, blobs, ProcessCustomizer(cache_dir=cfg.guestfs_cache_dir))
    servicer = ImagestoreServicer(catalog, blobs, customize)
    imagestore_service_pb2_grpc.add_ImagestoreServiceServicer_to_server(servicer, server)
    await server.start()
    await serve.set_serving(health)
    LOG.info("imagestore serving on %s:%d (blobs in %s)", cfg.listen.rsplit(":", 1)[0], port, cfg.blob_dir)
    await stop.wait()
    await server.stop(grace=2)
    await store.close()


def main(argv: list[str] | None = None) -> None:
    serve.setup_logging("imagestore")
    cfg = parse_args(argv)
    serve.run(lambda stop: serve_imagestore(cfg, stop))
