"""Protobuf -> what an upload declares."""

from __future__ import annotations

from wnodes.v1 import image_pb2


def declared_blobs(header: image_pb2.ImageVersion) -> dict[str, tuple[str, int]]:
    blobs = {}
    if header.HasField("disk"):
        blobs["disk"] = (header.disk.sha256, header.disk.size_bytes)
    if header.HasField("direct_boot"):
        if header.direct_boot.HasField("kernel"):
            blobs["kernel"] = (header.direct_boot.kernel.sha256, header.direct_boot.kernel.size_bytes)
        if header.direct_boot.HasField("initrd"):
            blobs["initrd"] = (header.direct_boot.initrd.sha256, header.direct_boot.initrd.size_bytes)
    return blobs
