"""Saving a VM's disk as a new version of an image.

The driver writes a flat, consistent copy of the disk (a running domain is paused for it, after
the agent had the guest sync), the copy is hashed and uploaded to the imagestore with the boot
files of the version the VM booted, owned by the VM owner's VO, and removed. The VM goes on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from services.common.digests import sha256_file
from services.common.errors import FailedPrecondition
from services.common.identity import Principal
from services.common.records import ImageRecord, VmRecord
from services.hypervisor.drivers.base import HypervisorDriver
from services.hypervisor.imagestore_client import DiskUpload, ImagestoreClient

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class SaveRequest:
    vm: VmRecord
    # The image to add a version to, and the version the VM booted (its boot files are reused).
    image: str
    source: ImageRecord
    # The VM's disk, and a directory for the temporary copy (the VM's own: it goes with the VM).
    disk: Path
    work_dir: Path
    operation: str


class DiskSaver:
    def __init__(self, driver: HypervisorDriver, imagestore: ImagestoreClient | None, compress: bool = True) -> None:
        """compress: the copy is a compressed qcow2 (slower to make, smaller to store and to
        pull into every host's cache)."""
        self._driver = driver
        self._imagestore = imagestore
        self._compress = compress

    async def save(self, request: SaveRequest) -> str:
        """Copies, uploads and removes the copy; returns the new version's name."""
        if self._imagestore is None:
            raise FailedPrecondition("this hypervisor agent has no imagestore to save to", reason="NO_IMAGESTORE")
        vm = request.vm
        copy = request.work_dir / f"save-{request.operation}.qcow2"
        try:
            await self._driver.export_disk(vm.id, request.disk, copy, compress=self._compress)
            sha256 = await asyncio.to_thread(sha256_file, copy)
            upload = DiskUpload(
                image=request.image, disk=copy, disk_sha256=sha256, source=request.source,
                description=f"saved from {vm.name} ({vm.image_version}) by {vm.owner_user}",
            )  # fmt: skip
            name = await self._imagestore.upload_disk(upload, Principal(user=vm.owner_user, vo=vm.owner_vo))
            LOG.info("saved the disk of %s as %s (%d bytes)", vm.name, name, copy.stat().st_size)
            return name
        finally:
            copy.unlink(missing_ok=True)


