"""ImageRecord -> wnodes.v1.ImageVersion: shared by the imagestore (which owns the catalogue) and
the nameserver (whose save operations answer with the version they made)."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from services.common.records import ImageRecord
from wnodes.v1 import image_pb2


def _blob(ref: dict[str, object]) -> image_pb2.Blob | None:
    return image_pb2.Blob(sha256=str(ref["sha256"]), size_bytes=int(ref["size_bytes"])) if ref else None  # type: ignore[call-overload]


def image_to_proto(rec: ImageRecord) -> image_pb2.ImageVersion:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(rec.create_time * 1e9))
    out = image_pb2.ImageVersion(
        name=rec.name,
        image=f"images/{rec.image}",
        version=rec.version,
        owner_vo=rec.owner_vo,
        visibility=image_pb2.ImageVersion.Visibility.Value(rec.visibility),
        architecture=rec.architecture,
        format=rec.format,
        disk=_blob(rec.disk),
        state=image_pb2.ImageVersion.State.Value(rec.state),
        create_time=ts,
        description=rec.description,
        customizations=rec.customizations,
    )
    if rec.kernel:
        out.direct_boot.CopyFrom(image_pb2.DirectBoot(kernel=_blob(rec.kernel), initrd=_blob(rec.initrd), cmdline=rec.cmdline))
    return out

