"""gRPC edge of the imagestore."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.common.error_reasons import image_state_reason
from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.common.grpc_errors import maps_errors
from services.common.grpc_types import Ctx
from services.common.image_proto import image_to_proto
from services.common.names import check_image_name, parse_image
from services.common.pagination import page_of
from services.common.principal_context import principal_of
from services.common.records import ImageRecord
from services.imagestore import convert
from services.imagestore.blobs import BlobStore, BlobWriter
from services.imagestore.catalog import Catalog, check_header
from services.imagestore.customization_service import CustomizeService
from services.imagestore.guestfs_customizer import Customization, FileSpec
from wnodes.imagestore.v1 import imagestore_service_pb2, imagestore_service_pb2_grpc
from wnodes.v1 import image_pb2, image_service_pb2


class ImagestoreServicer(imagestore_service_pb2_grpc.ImagestoreServiceServicer):
    def __init__(self, catalog: Catalog, blobs: BlobStore, customize: CustomizeService | None = None) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._customize = customize

    @maps_errors
    async def GetImageVersion(
        self, request: image_service_pb2.GetImageVersionRequest, context: Ctx
    ) -> image_pb2.ImageVersion:
        image, version = parse_image(request.name)
        record = await self._catalog.get(image, version, principal_of(context))
        return image_to_proto(record)

    @maps_errors
    async def ListImageVersions(
        self, request: image_service_pb2.ListImageVersionsRequest, context: Ctx
    ) -> image_service_pb2.ListImageVersionsResponse:
        principal = principal_of(context)
        image = parse_image(request.parent)[0] if request.parent else ""
        visible = await self._catalog.visible(image, principal)
        page, token = page_of(visible, request.page_size, request.page_token)
        return image_service_pb2.ListImageVersionsResponse(
            image_versions=[image_to_proto(r) for r in page], next_page_token=token
        )

    @maps_errors
    async def UploadImageVersion(
        self, request_iterator: AsyncIterator[image_service_pb2.UploadImageVersionRequest], context: Ctx
    ) -> image_pb2.ImageVersion:
        principal = principal_of(context)
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("the first message of an upload must be the header", reason="HEADER_REQUIRED")
        header = first.header
        image = header.image.removeprefix("images/")
        visibility = image_pb2.ImageVersion.Visibility.Name(header.visibility) if header.visibility else "VO"
        declared = convert.declared_blobs(header)
        check_header(image, visibility, declared)
        owner_vo = header.owner_vo or principal.vo
        if owner_vo != principal.vo and not principal.is_admin:
            raise PermissionDenied(f"you may upload images for VO {principal.vo!r} only")
        # A part is written when its first chunk arrives. A declared part that gets no chunk
        # must be a blob the store holds already (content-addressed: a saved VM's new version
        # shares its kernel and initrd with the version it booted, and sends only its disk).
        writers: dict[str, BlobWriter] = {}
        try:
            async for msg in request_iterator:
                if not msg.HasField("chunk"):
                    raise InvalidArgument("only the first message may be a header", reason="DUPLICATE_HEADER")
                part = msg.chunk.part
                if part not in declared:
                    raise InvalidArgument(f"chunk for undeclared part {part!r}", reason="UNDECLARED_PART")
                if part not in writers:
                    writers[part] = self._blobs.writer(part, *declared[part])
                writers[part].write(msg.chunk.data)
            for part, (sha, size) in declared.items():
                if part not in writers and not self._blobs.has(sha, size):
                    raise InvalidArgument(
                        f"{part}: no data was sent and the imagestore has no blob {sha[:16]} of {size} bytes", reason="BLOB_MISSING"
                    )
            for writer in writers.values():
                await asyncio.to_thread(writer.finish, self._blobs.root)
        except BaseException:
            for writer in writers.values():
                writer.discard()
            raise

        def ref(part: str) -> dict[str, object]:
            return {"sha256": declared[part][0], "size_bytes": declared[part][1]} if part in declared else {}

        record = ImageRecord(
            image=image,
            version=0,
            owner_vo=owner_vo,
            owner_user=principal.user,
            visibility=visibility,
            architecture=header.architecture or "x86_64",
            format=header.format or "qcow2",
            disk=ref("disk"),
            kernel=ref("kernel"),
            initrd=ref("initrd"),
            cmdline=header.direct_boot.cmdline,
            description=header.description,
            customizations=list(header.customizations),
            # Published (usable by new VMs) only once every blob has arrived and matched its
            # sha256: a refused upload leaves no version behind.
            state="BUILDING" if header.state == image_pb2.ImageVersion.BUILDING else "AVAILABLE",
        )
        return image_to_proto(await self._catalog.register(record))

    @maps_errors
    async def PublishImageVersion(self, request: image_service_pb2.PublishImageVersionRequest, context: Ctx) -> image_pb2.ImageVersion:
        return await self._transition(request.name, "publish", context)

    @maps_errors
    async def DeprecateImageVersion(
        self, request: image_service_pb2.DeprecateImageVersionRequest, context: Ctx
    ) -> image_pb2.ImageVersion:
        return await self._transition(request.name, "deprecate", context)

    @maps_errors
    async def DeleteImageVersion(self, request: image_service_pb2.DeleteImageVersionRequest, context: Ctx) -> image_pb2.ImageVersion:
        return await self._transition(request.name, "delete", context)

    @maps_errors
    async def PrefetchImage(self, request: image_service_pb2.PrefetchImageRequest, context: Ctx) -> image_service_pb2.PrefetchImageResponse:
        image, version = parse_image(request.name)
        if version is not None:
            raise InvalidArgument("prefetch names an image (images/NAME): hosts take its newest available version", reason="IMAGE_NAME_REQUIRED")
        hosts = [h.removeprefix("hypervisors/") for h in request.hosts]
        newest = await self._catalog.request_prefetch(image, hosts, principal_of(context))
        return image_service_pb2.PrefetchImageResponse(image_version=image_to_proto(newest), hosts=hosts)

    @maps_errors
    async def CustomizeImageVersion(
        self, request: image_service_pb2.CustomizeImageVersionRequest, context: Ctx
    ) -> AsyncIterator[image_service_pb2.CustomizeImageVersionProgress]:
        principal = principal_of(context)
        if self._customize is None:
            raise FailedPrecondition("this imagestore does not customise images (no libguestfs)", reason="CUSTOMIZATION_UNAVAILABLE")
        image = check_image_name(request.image.removeprefix("images/"))
        spec = Customization(
            files=tuple(FileSpec(f.path, f.content, f.mode or 0o644) for f in request.files),
            syslog_to_hypervisor=request.syslog_to_hypervisor,
            kernel_modules=tuple(request.kernel_modules),
            authorized_keys=tuple(request.authorized_keys),
            script=request.script,
        )
        spec.check()
        source_image, source_version = parse_image(request.source)
        source = await self._catalog.get(source_image, source_version, principal)
        if source.state not in ("AVAILABLE", "DEPRECATED"):
            raise FailedPrecondition(f"{source.name} is {source.state.lower()}: nothing to customise", reason=image_state_reason(source.state))
        visibility = image_pb2.ImageVersion.Visibility.Name(request.visibility) if request.visibility else ""
        async for step in self._customize.run(source, image, spec, principal, visibility, request.description):
            yield image_service_pb2.CustomizeImageVersionProgress(
                step=step.text, percent=step.percent, image_version=image_to_proto(step.record) if step.record else None
            )

    async def _transition(self, name: str, action: str, context: Ctx) -> image_pb2.ImageVersion:
        image, version = parse_image(name)
        if version is None:
            raise InvalidArgument(f"{action} needs a version: images/{image}/versions/N", reason="VERSION_REQUIRED")
        return image_to_proto(await self._catalog.transition(image, version, action, principal_of(context)))

    @maps_errors
    async def DownloadBlob(
        self, request: imagestore_service_pb2.DownloadBlobRequest, context: Ctx
    ) -> AsyncIterator[imagestore_service_pb2.BlobChunk]:
        chunks = self._blobs.read(request.sha256, request.offset)
        while True:
            data = await asyncio.to_thread(next, chunks, b"")
            if not data:
                return
            yield imagestore_service_pb2.BlobChunk(data=data)
