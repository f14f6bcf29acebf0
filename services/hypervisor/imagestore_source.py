"""The image cache's BlobSource over the imagestore's internal gRPC API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from services.common import telemetry
from wnodes.imagestore.v1 import imagestore_service_pb2, imagestore_service_pb2_grpc


class ImagestoreBlobSource:
    def __init__(self, endpoint: str) -> None:
        self._channel = grpc.aio.insecure_channel(endpoint, interceptors=telemetry.client_interceptors())
        self._stub = imagestore_service_pb2_grpc.ImagestoreServiceStub(self._channel)

    async def download(self, sha256: str, offset: int) -> AsyncIterator[bytes]:
        request = imagestore_service_pb2.DownloadBlobRequest(sha256=sha256, offset=offset)
        async for chunk in self._stub.DownloadBlob(request):
            yield chunk.data

    async def close(self) -> None:
        await self._channel.close()
