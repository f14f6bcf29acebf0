"""The agent's client of the imagestore's internal gRPC API: blob downloads for the image cache
(a BlobSource) and uploads of saved VM disks as new image versions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.common import telemetry
from services.common.grpc_errors import downstream_error
from services.common.identity import Principal
from services.common.records import ImageRecord
from wnodes.imagestore.v1 import imagestore_service_pb2, imagestore_service_pb2_grpc
from wnodes.v1 import image_pb2, image_service_pb2

UPLOAD_CHUNK = 1 << 20


@dataclass(frozen=True)
class DiskUpload:
    """A new version of image made of a saved disk and the boot files of the version it came from."""

    image: str
    disk: Path
    disk_sha256: str
    source: ImageRecord
    description: str = ""
    visibility: str = "VO"


class ImagestoreClient:
    def __init__(self, endpoint: str) -> None:
        self._channel = grpc.aio.insecure_channel(endpoint, interceptors=telemetry.client_interceptors())
        self._stub = imagestore_service_pb2_grpc.ImagestoreServiceStub(self._channel)

    async def download(self, sha256: str, offset: int) -> AsyncIterator[bytes]:
        request = imagestore_service_pb2.DownloadBlobRequest(sha256=sha256, offset=offset)
        try:
            async for chunk in self._stub.DownloadBlob(request):
                yield chunk.data
        except grpc.aio.AioRpcError as err:
            # An imagestore that died mid-transfer is UNAVAILABLE: the VM waiting for the blob
            # is retried (and the transfer resumes from what was written), not failed.
            raise downstream_error(err) from err

    async def upload_disk(self, upload: DiskUpload, owner: Principal) -> str:
        """Registers the new version as owner (its VO owns it); returns its name. Only the disk
        travels: the kernel and initrd are the source version's blobs, which the imagestore has."""
        source = upload.source
        header = image_pb2.ImageVersion(
            image=upload.image, owner_vo=owner.vo, visibility=image_pb2.ImageVersion.Visibility.Value(upload.visibility),
            architecture=source.architecture, format="qcow2", description=upload.description,
            disk=image_pb2.Blob(sha256=upload.disk_sha256, size_bytes=upload.disk.stat().st_size),
        )  # fmt: skip
        if source.kernel:
            header.direct_boot.CopyFrom(image_pb2.DirectBoot(
                kernel=_blob(source.kernel), initrd=_blob(source.initrd) if source.initrd else None, cmdline=source.cmdline,
            ))  # fmt: skip

        async def messages() -> AsyncIterator[image_service_pb2.UploadImageVersionRequest]:
            yield image_service_pb2.UploadImageVersionRequest(header=header)
            with upload.disk.open("rb") as f:
                while chunk := f.read(UPLOAD_CHUNK):
                    yield image_service_pb2.UploadImageVersionRequest(
                        chunk=image_service_pb2.UploadImageVersionRequest.Chunk(part="disk", data=chunk)
                    )

        try:
            version = await self._stub.UploadImageVersion(messages(), metadata=owner.to_metadata(), timeout=3600)
        except grpc.aio.AioRpcError as err:
            raise downstream_error(err) from err
        return str(version.name)

    async def close(self) -> None:
        await self._channel.close()


def _blob(ref: dict[str, object]) -> image_pb2.Blob:
    return image_pb2.Blob(sha256=str(ref["sha256"]), size_bytes=int(str(ref["size_bytes"])))
