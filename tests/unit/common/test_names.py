"""The name rules (services/common/names.py): one rule per kind of name, and every way in uses it."""

from __future__ import annotations

import pytest

from services.common import names
from services.common.errors import InvalidArgument
from services.gateway.occi import locations
from services.hypervisor.drivers.base import DriverError
from services.hypervisor.drivers.libvirt.driver import LibvirtDriver
from services.imagestore.catalog import check_header
from services.nameserver.networks import parse_interface_name, parse_network_name
from services.nameserver.volumes import parse_volume_name

GOOD_IMAGES = ["tiny", "debian12", "debian-12.1", "my_image", "0day", "a" * 63]
BAD_IMAGES = ["", "Tiny", ".hidden", "-x", "_x", "a b", "a/b", "../etc", "a" * 64, "tiny\n"]
GOOD_IDS = ["vm-1", "vm-0123456789", "x", "0", "a" * 63]
BAD_IDS = ["", "VM-1", "vm_1", "vm.1", "-vm", "vm/1", "..", "a" * 64, "vm-1\n"]


@pytest.mark.parametrize("image", GOOD_IMAGES)
def test_an_image_name_is_accepted_by_every_way_in(image: str) -> None:
    assert names.is_image_name(image)
    assert names.check_image_name(image) == image
    assert names.parse_image(image) == (image, None)
    assert names.parse_image(f"images/{image}/versions/2") == (image, 2)
    check_header(image, "PUBLIC", {"disk": ("0" * 64, 1)})  # the imagestore's upload


@pytest.mark.parametrize("image", BAD_IMAGES)
def test_a_bad_image_name_is_refused_by_every_way_in(image: str) -> None:
    assert not names.is_image_name(image)
    for check in (names.check_image_name, names.parse_image, lambda i: check_header(i, "PUBLIC", {"disk": ("0" * 64, 1)})):
        with pytest.raises(InvalidArgument) as info:
            check(image)
        assert info.value.reason in ("INVALID_IMAGE_NAME", "IMAGE_REQUIRED")


@pytest.mark.parametrize("rid", GOOD_IDS)
def test_a_resource_id_is_accepted_everywhere(rid: str) -> None:
    assert names.is_resource_id(rid)
    assert names.parse_resource_id(f"virtualMachines/{rid}", "virtualMachines") == rid
    assert locations.is_entity_id(rid)
    assert locations.split(f"/compute/{rid}") == ("/compute/", rid)
    LibvirtDriver._check_vm_id(rid)


@pytest.mark.parametrize("rid", BAD_IDS)
def test_a_bad_resource_id_is_refused_everywhere(rid: str) -> None:
    assert not names.is_resource_id(rid)
    with pytest.raises(InvalidArgument):
        names.parse_resource_id(f"virtualMachines/{rid}", "virtualMachines")
    with pytest.raises(DriverError):
        LibvirtDriver._check_vm_id(rid)


@pytest.mark.parametrize("kind", names.KINDS, ids=lambda k: k.prefix)
def test_what_the_nameserver_mints_passes_every_check(kind: names.IdKind) -> None:
    minted = {names.new_id(kind) for _ in range(200)}
    assert len(minted) == 200
    for rid in minted:
        assert rid.startswith(f"{kind.prefix}-")
        assert names.is_resource_id(rid)
        assert names.parse_resource_id(f"{kind.collection}/{rid}", kind.collection) == rid
        assert names.parse_minted(f"{kind.collection}/{rid}", kind) == rid
        assert names.parse_minted(rid, kind) == rid
        assert locations.is_entity_id(rid)
        LibvirtDriver._check_vm_id(rid)


def test_the_nameserver_parses_each_kind_strictly() -> None:
    vol, net, nic = names.new_id(names.VOLUME), names.new_id(names.NETWORK), names.new_id(names.INTERFACE)
    assert parse_volume_name(f"volumes/{vol}") == vol
    assert parse_network_name(f"networks/{net}") == net
    assert parse_interface_name(f"networkInterfaces/{nic}") == nic
    for parse, wrong in ((parse_volume_name, f"volumes/{net}"), (parse_network_name, "networks/net-1"),
                         (parse_interface_name, f"networkInterfaces/{nic.upper()}")):
        with pytest.raises(InvalidArgument) as info:
            parse(wrong)
        assert info.value.reason == "INVALID_NAME"
        assert "10 hex digits" in info.value.message


def test_a_storage_link_id_is_two_ids_and_an_entity_location() -> None:
    # As the OCCI backend joins them.
    link = f"{names.new_id(names.VM)}.{names.new_id(names.VOLUME)}"
    assert names.is_link_id(link) and not names.is_resource_id(link)
    assert locations.split(f"/link/storagelink/{link}")[1] == link
    for bad in ("vm-1.", ".vol-1", "vm-1.vol-1.x", "vm-1..vol-1"):
        assert not locations.is_entity_id(bad)
