"""The CloudBackend contract (services/gateway/occi/backend.py), one suite for every
implementation: subclass ``CloudBackendContract`` and provide the ``backend`` fixture.

Parts of the API that an implementation does not offer yet raise Unimplemented; those tests
are skipped with that reason, never passed silently."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from services.common.errors import NotFound, Unimplemented
from services.common.identity import Principal
from services.gateway.occi.backend import CloudBackend, ComputeSpec, NetworkSpec, StorageSpec

T = TypeVar("T")
ALICE = Principal("alice", "atlas")
BOB = Principal("bob", "cms")


async def offered(call: Awaitable[T]) -> T:
    try:
        return await call
    except Unimplemented as exc:
        pytest.skip(f"not offered by this backend yet: {exc.message}")


async def until_active(backend: CloudBackend, compute_id: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await backend.get_compute(ALICE, compute_id)).state != "active":
        assert asyncio.get_running_loop().time() < deadline, "the compute never became active"
        await asyncio.sleep(0.2)


class CloudBackendContract:
    image = "tiny"

    async def test_images_are_listed(self, backend: CloudBackend) -> None:
        assert self.image in {t.image for t in await backend.list_images(ALICE)}

    async def test_compute_lifecycle_and_ownership(self, backend: CloudBackend) -> None:
        # Prepare / Execute
        c = await backend.create_compute(ALICE, ComputeSpec(self.image, 1, 256, title="contract", resource_tpl="small"))
        # Assert
        assert c.id and c.cores == 1 and c.memory_mib == 256 and c.state in ("active", "inactive")
        got = await backend.get_compute(ALICE, c.id)
        assert (got.title, got.image, got.resource_tpl) == ("contract", self.image, "small")
        assert c.id in {x.id for x in await backend.list_computes(ALICE)}
        with pytest.raises(NotFound):
            await backend.get_compute(BOB, c.id)
        with pytest.raises(NotFound):
            await backend.delete_compute(BOB, c.id)
        assert c.id not in {x.id for x in await backend.list_computes(BOB)}
        updated = await backend.update_compute(ALICE, c.id, "renamed", "about")
        assert (updated.title, updated.summary) == ("renamed", "about")
        await backend.delete_compute(ALICE, c.id)
        with pytest.raises(NotFound):
            await backend.get_compute(ALICE, c.id)
        with pytest.raises(NotFound):
            await backend.delete_compute(ALICE, c.id)
        assert c.id not in {x.id for x in await backend.list_computes(ALICE)}

    async def test_missing_image_creates_nothing(self, backend: CloudBackend) -> None:
        before = {x.id for x in await backend.list_computes(ALICE)}
        with pytest.raises(NotFound):
            await backend.create_compute(ALICE, ComputeSpec("no-such-image", 1, 256))
        assert {x.id for x in await backend.list_computes(ALICE)} == before

    async def test_compute_actions(self, backend: CloudBackend) -> None:
        c = await backend.create_compute(ALICE, ComputeSpec(self.image, 1, 256))
        try:
            await until_active(backend, c.id)  # a real VM boots first; stopping a boot is a conflict
            stopped = await offered(backend.compute_action(ALICE, c.id, "stop"))
            assert stopped.state in ("inactive", "active")
            with pytest.raises(NotFound):
                await backend.compute_action(BOB, c.id, "start")
        finally:
            await backend.delete_compute(ALICE, c.id)

    async def test_storage_network_and_links(self, backend: CloudBackend) -> None:
        s = await offered(backend.create_storage(ALICE, StorageSpec(1.5, "disk")))
        n = await offered(backend.create_network(ALICE, NetworkSpec("net")))
        c = await backend.create_compute(ALICE, ComputeSpec(self.image, 1, 256))
        try:
            assert (await backend.get_storage(ALICE, s.id)).size_gib == 1.5
            with pytest.raises(NotFound):
                await backend.get_storage(BOB, s.id)
            with pytest.raises(NotFound):
                await backend.get_network(BOB, n.id)
            link = await backend.attach_storage(ALICE, c.id, s.id, "/dev/vdb")
            assert link.id in {x.id for x in await backend.list_storage_links(ALICE)}
            nic = await backend.create_network_interface(ALICE, c.id, n.id)
            assert nic.mac and nic.id in {x.id for x in await backend.list_network_interfaces(ALICE)}
            await backend.detach_storage(ALICE, link.id)
            await backend.delete_network_interface(ALICE, nic.id)
            assert link.id not in {x.id for x in await backend.list_storage_links(ALICE)}
        finally:
            await backend.delete_compute(ALICE, c.id)
        await backend.delete_storage(ALICE, s.id)
        await backend.delete_network(ALICE, n.id)
        with pytest.raises(NotFound):
            await backend.get_storage(ALICE, s.id)
