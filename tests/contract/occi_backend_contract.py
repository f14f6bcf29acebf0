"""The CloudBackend contract (services/gateway/occi/cloud_backend.py): subclass
``CloudBackendContract`` and provide the ``backend`` fixture. Its one implementation, over the
gateway core, runs all of it twice: on the in-process control plane (tests/contract) and over
real processes (tests/integration/test_occi.py)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.identity import Principal
from services.gateway.occi.cloud_backend import CloudBackend, Compute, ComputeSpec, NetworkSpec, StorageSpec

ALICE = Principal("alice", "atlas")
BOB = Principal("bob", "cms")


async def until_active(backend: CloudBackend, compute_id: str, timeout: float = 60.0) -> Compute:
    deadline = asyncio.get_running_loop().time() + timeout
    while (c := await backend.get_compute(ALICE, compute_id)).state != "active":
        assert c.state != "error", c
        assert asyncio.get_running_loop().time() < deadline, "the compute never became active"
        await asyncio.sleep(0.2)
    return c


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

    async def test_compute_actions_follow_the_power_table(self, backend: CloudBackend) -> None:
        c = await backend.create_compute(ALICE, ComputeSpec(self.image, 1, 256))
        try:
            await until_active(backend, c.id)  # a real VM boots first; acting on a boot is a conflict
            # Execute / Assert: each action answers once it is done
            assert (await backend.compute_action(ALICE, c.id, "suspend")).state == "suspended"
            assert (await backend.compute_action(ALICE, c.id, "start")).state == "active"  # start resumes
            assert (await backend.compute_action(ALICE, c.id, "stop")).state == "inactive"
            assert (await backend.compute_action(ALICE, c.id, "stop")).state == "inactive"  # already there
            with pytest.raises(FailedPrecondition):
                await backend.compute_action(ALICE, c.id, "restart")  # a stopped compute is started, not restarted
            with pytest.raises(FailedPrecondition):
                await backend.compute_action(ALICE, c.id, "suspend")
            assert (await backend.compute_action(ALICE, c.id, "start")).state == "active"
            assert (await backend.compute_action(ALICE, c.id, "restart")).state == "active"
            with pytest.raises(NotFound):
                await backend.compute_action(BOB, c.id, "stop")
        finally:
            await backend.delete_compute(ALICE, c.id)

    async def test_storage_lifecycle(self, backend: CloudBackend) -> None:
        # Prepare / Execute
        s = await backend.create_storage(ALICE, StorageSpec(1.5, "disk"))
        # Assert
        assert (s.size_gib, s.title, s.state) == (1.5, "disk", "online")
        assert s.id in {x.id for x in await backend.list_storages(ALICE)}
        assert s.id not in {x.id for x in await backend.list_storages(BOB)}
        with pytest.raises(NotFound):
            await backend.get_storage(BOB, s.id)
        with pytest.raises(NotFound):
            await backend.delete_storage(BOB, s.id)
        assert (await backend.set_storage_online(ALICE, s.id, False)).state == "offline"
        assert (await backend.get_storage(ALICE, s.id)).state == "offline"
        assert (await backend.set_storage_online(ALICE, s.id, True)).state == "online"
        await backend.delete_storage(ALICE, s.id)
        with pytest.raises(NotFound):
            await backend.get_storage(ALICE, s.id)
        with pytest.raises(NotFound):
            await backend.delete_storage(ALICE, s.id)

    async def test_storage_links_are_virtio_disks(self, backend: CloudBackend) -> None:
        first = await backend.create_storage(ALICE, StorageSpec(0.25, "first"))
        second = await backend.create_storage(ALICE, StorageSpec(0.25, "second"))
        offline = await backend.create_storage(ALICE, StorageSpec(0.25, "offline"))
        await backend.set_storage_online(ALICE, offline.id, False)
        c = await backend.create_compute(ALICE, ComputeSpec(self.image, 1, 256))
        try:
            # Execute: the first free device, then one asked for
            link = await backend.attach_storage(ALICE, c.id, first.id)
            # Assert
            assert (link.compute_id, link.storage_id, link.device, link.serial, link.state) == (c.id, first.id, "/dev/vdb", first.id, "active")
            assert link.id in {x.id for x in await backend.list_storage_links(ALICE)}
            assert link.id not in {x.id for x in await backend.list_storage_links(BOB)}
            with pytest.raises(FailedPrecondition):
                await backend.attach_storage(ALICE, c.id, second.id, "vdb")  # taken
            with pytest.raises(InvalidArgument):
                await backend.attach_storage(ALICE, c.id, second.id, "sdb")  # not a virtio disk
            with pytest.raises(FailedPrecondition):
                await backend.attach_storage(ALICE, c.id, offline.id)  # offline storage cannot be attached
            assert (await backend.attach_storage(ALICE, c.id, second.id, "vdd")).device == "/dev/vdd"
            with pytest.raises(NotFound):
                await backend.attach_storage(BOB, c.id, second.id)
            with pytest.raises(FailedPrecondition):
                await backend.delete_storage(ALICE, first.id)  # attached
            with pytest.raises(FailedPrecondition):
                await backend.set_storage_online(ALICE, first.id, False)  # attached
            with pytest.raises(NotFound):
                await backend.detach_storage(BOB, link.id)
            await until_active(backend, c.id)
            await backend.compute_action(ALICE, c.id, "suspend")
            with pytest.raises(FailedPrecondition):
                await backend.detach_storage(ALICE, link.id)  # a paused guest cannot let go of a disk
            await backend.compute_action(ALICE, c.id, "start")
            await backend.detach_storage(ALICE, link.id)
            assert link.id not in {x.id for x in await backend.list_storage_links(ALICE)}
            with pytest.raises(NotFound):
                await backend.detach_storage(ALICE, link.id)
            await backend.compute_action(ALICE, c.id, "suspend")
            again = await backend.attach_storage(ALICE, c.id, first.id)  # a suspended compute takes disks
            assert (again.id, again.device, again.state) == (link.id, "/dev/vdb", "active")
            await backend.compute_action(ALICE, c.id, "start")
            await backend.detach_storage(ALICE, again.id)
            await backend.delete_storage(ALICE, first.id)  # detached: free to go
        finally:
            await backend.delete_compute(ALICE, c.id)
        # deleting the compute released what was attached to it
        assert not [x for x in await backend.list_storage_links(ALICE) if x.compute_id == c.id]
        for s in (second, offline):
            await backend.delete_storage(ALICE, s.id)

    async def test_networks_and_interfaces(self, backend: CloudBackend) -> None:
        # Prepare: one network without an address, one with
        chosen = await backend.create_network(ALICE, NetworkSpec("chosen"))
        given = await backend.create_network(ALICE, NetworkSpec("given", address="10.77.0.0/24"))
        c = await backend.create_compute(ALICE, ComputeSpec(self.image, 1, 256))
        try:
            # Assert: a free subnet of the site's pool was picked
            subnet = ipaddress.IPv4Network(chosen.address)
            assert subnet.subnet_of(ipaddress.IPv4Network("10.128.0.0/9")) and subnet.prefixlen == 24
            assert (chosen.gateway, chosen.allocation, chosen.state) == (str(subnet.network_address + 1), "dynamic", "active")
            assert chosen.vlan and given.vlan and chosen.vlan != given.vlan
            assert (given.address, given.gateway) == ("10.77.0.0/24", "10.77.0.1")
            with pytest.raises(NotFound):
                await backend.get_network(BOB, given.id)

            # Execute: interfaces lease a MAC and an address
            eth0 = await backend.create_network_interface(ALICE, c.id, chosen.id)
            eth1 = await backend.create_network_interface(ALICE, c.id, given.id, "10.77.0.9")
            assert (eth0.interface, eth0.network_id, eth0.gateway, eth0.state) == ("eth0", chosen.id, chosen.gateway, "active")
            assert ipaddress.IPv4Address(eth0.address) in subnet and eth0.mac and eth0.mac != eth1.mac
            assert (eth1.interface, eth1.address) == ("eth1", "10.77.0.9")
            assert {eth0.id, eth1.id} <= {x.id for x in await backend.list_network_interfaces(ALICE)}
            assert not {eth0.id, eth1.id} & {x.id for x in await backend.list_network_interfaces(BOB)}
            with pytest.raises(NotFound):
                await backend.create_network_interface(BOB, c.id, given.id)

            # down and up: interfaces follow their network
            assert (await backend.set_network_up(ALICE, given.id, False)).state == "inactive"
            assert {x.id: x.state for x in await backend.list_network_interfaces(ALICE)}[eth1.id] == "inactive"
            assert (await backend.set_network_up(ALICE, given.id, True)).state == "active"
            with pytest.raises(FailedPrecondition):
                await backend.delete_network(ALICE, given.id)  # it has an interface
            await backend.delete_network_interface(ALICE, eth1.id)
            with pytest.raises(NotFound):
                await backend.delete_network_interface(ALICE, eth1.id)
            await backend.delete_network(ALICE, given.id)
            with pytest.raises(NotFound):
                await backend.get_network(ALICE, given.id)
        finally:
            await backend.delete_compute(ALICE, c.id)
        # deleting the compute removed its interfaces
        assert eth0.id not in {x.id for x in await backend.list_network_interfaces(ALICE)}
        await backend.delete_network(ALICE, chosen.id)

    async def test_a_static_network_needs_the_interfaces_address(self, backend: CloudBackend) -> None:
        network = await backend.create_network(ALICE, NetworkSpec("static", address="192.168.70.0/24", allocation="static"))
        c = await backend.create_compute(ALICE, ComputeSpec(self.image, 1, 256))
        try:
            with pytest.raises(InvalidArgument):
                await backend.create_network_interface(ALICE, c.id, network.id)
            nic = await backend.create_network_interface(ALICE, c.id, network.id, "192.168.70.20")
            assert (nic.address, nic.allocation) == ("192.168.70.20", "static")
        finally:
            await backend.delete_compute(ALICE, c.id)
        await backend.delete_network(ALICE, network.id)
