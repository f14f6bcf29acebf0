"""Image distribution: a host cache pulling from a real imagestore (gRPC on loopback, blobs on
disk), each figure next to a baseline measured in the same run.

- throughput of a 1 GiB image into a cold host cache (streamed, sha256-verified, fsynced) next
  to a plain file copy of the same bytes on the same disk (target: at least 0.8 of the copy);
- bytes moved for ten VMs of one image started together (target: one image's worth);
- time to create a VM's copy-on-write overlay on a cached image;
- cache hit rate in a mixed run (VMs of five images, skewed, cache room for three).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, cast

import grpc

from services.common.records import ImageRecord
from services.hypervisor.drivers.qemu_img import create_overlay
from services.hypervisor.image_cache import ImageCache
from services.hypervisor.imagestore_client import ImagestoreClient
from services.imagestore.blobs import BlobStore
from services.imagestore.catalog import Catalog
from services.imagestore.servicer import ImagestoreServicer
from wnodes.imagestore.v1 import imagestore_service_pb2_grpc

GIB = 1 << 30


def _write_blob(store: Path, size: int, seed: int) -> ImageRecord:
    """Incompressible bytes (a repeated random block) under their sha256, as the imagestore keeps them."""
    block = random.Random(seed).randbytes(64 << 20)
    digest = hashlib.sha256()
    tmp = store / f".bench-{seed}"
    with tmp.open("wb") as f:
        written = 0
        while written < size:
            chunk = block[: min(len(block), size - written)]
            f.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    sha = digest.hexdigest()
    tmp.rename(store / sha)
    return ImageRecord(image=f"bench{seed}", version=1, owner_vo="bench", disk={"sha256": sha, "size_bytes": size})


def _copy_with_fsync(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with dst.open("rb+") as f:
        os.fsync(f.fileno())


def _drop_page_cache(path: Path) -> None:
    """Both contenders read the source cold-ish: ask the kernel to forget its pages."""
    with path.open("rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


async def _run(work: Path, size: int) -> dict[str, Any]:
    blobs = BlobStore(work / "imagestore")
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 8 << 20)])
    # DownloadBlob needs the blob store only; the catalogue (etcd) plays no part here.
    imagestore_service_pb2_grpc.add_ImagestoreServiceServicer_to_server(ImagestoreServicer(cast(Catalog, None), blobs), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = ImagestoreClient(f"127.0.0.1:{port}")
    out: dict[str, Any] = {}
    try:
        big = _write_blob(blobs.root, size, 1)
        src = blobs.root / big.disk["sha256"]
        # Interleaved, best of two each: the shared disk and CPUs vary from second to second.
        pulls, copies = [], []
        for i in range(2):
            _drop_page_cache(src)
            started = time.monotonic()
            _copy_with_fsync(src, work / f"copy-{i}")
            copies.append(time.monotonic() - started)
            (work / f"copy-{i}").unlink()
            _drop_page_cache(src)
            cache = ImageCache(work / f"cache-big-{i}", client)
            started = time.monotonic()
            await cache.ensure(big)
            pulls.append(time.monotonic() - started)
            shutil.rmtree(work / f"cache-big-{i}")
        out["distribution"] = {"size_bytes": size, "pull_mib_s": size / min(pulls) / 2**20, "copy_mib_s": size / min(copies) / 2**20}

        small = _write_blob(blobs.root, 64 << 20, 2)
        cache = ImageCache(work / "cache-ten", client)
        await asyncio.gather(*(cache.ensure(small, holder=f"vm-{i}") for i in range(10)))
        out["ten_vms"] = {"image_bytes": small.disk["size_bytes"], "bytes_moved": cache.bytes_transferred, "transfers": cache.transfers}

        base = work / "base.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "10G"], check=True)
        times = []
        for i in range(10):
            started = time.monotonic()
            await create_overlay(base, work / f"overlay-{i}.qcow2")
            times.append(time.monotonic() - started)
        out["overlay_ms"] = sorted(times)[len(times) // 2] * 1000

        images = [_write_blob(blobs.root, 8 << 20, 10 + i) for i in range(5)]
        mixed = ImageCache(work / "cache-mixed", client, max_bytes=3 * (8 << 20))
        rng = random.Random(7)
        for n in range(100):  # skewed: image 0 most popular (as a farm's main worker image is)
            choice = images[min(int(rng.expovariate(0.9)), 4)]
            await mixed.ensure(choice, holder=f"vm-{n}")
            mixed.release(f"vm-{n}")
        out["mixed"] = {"hits": mixed.hits, "misses": mixed.misses, "hit_rate": mixed.hits / (mixed.hits + mixed.misses)}
    finally:
        await client.close()
        await server.stop(grace=0)
    return out


def run(work: Path, size: int = GIB) -> dict[str, Any]:
    directory = work / "images"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_run(directory, size))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
