from __future__ import annotations

import pytest

from services.common.errors import FailedPrecondition, ImageNotFound
from services.common.identity import Principal
from services.common.image_catalog import ImageCatalog
from services.common.records import ImageRecord

ALICE = Principal("alice", "atlas")
BOB = Principal("bob", "atlas")
CAROL = Principal("carol", "cms")


def rec(visibility: str, state: str = "AVAILABLE", version: int = 1) -> ImageRecord:
    return ImageRecord(image="img", version=version, owner_vo="atlas", owner_user="alice", visibility=visibility, state=state)


@pytest.mark.parametrize(
    ("visibility", "alice", "bob", "carol"),
    [("PUBLIC", True, True, True), ("VO", True, True, False), ("PRIVATE", True, False, False)],
)
def test_visibility(visibility: str, alice: bool, bob: bool, carol: bool) -> None:
    r = rec(visibility)
    assert [r.visible_to(p.vo, p.is_admin, p.user) for p in (ALICE, BOB, CAROL)] == [alice, bob, carol]
    assert r.visible_to("other", is_admin=True)


def test_a_deleted_version_is_invisible_except_to_admins() -> None:
    assert not rec("PUBLIC", "DELETED").visible_to("atlas", False, "alice")
    assert rec("PUBLIC", "DELETED").visible_to("atlas", True, "root")


class Catalog(ImageCatalog):
    def __init__(self, found: list[ImageRecord]) -> None:
        self._found = found

    async def versions(self, image: str = "", *, fresh: bool = False) -> list[ImageRecord]:
        return [r for r in self._found if not image or r.image == image]


async def test_another_vo_s_image_is_not_found_and_its_details_are_not_told() -> None:
    catalog = Catalog([rec("VO")])
    for ask in (catalog.get("img", 1, CAROL), catalog.resolve("img", None, CAROL)):
        with pytest.raises(ImageNotFound) as info:
            await ask
        assert "alice" not in info.value.message and "atlas" not in info.value.message.replace(repr(CAROL.vo), "")


async def test_a_deprecated_version_is_refused_to_new_vms_with_what_to_use_instead() -> None:
    catalog = Catalog([rec("VO", "DEPRECATED", 1), rec("VO", "AVAILABLE", 2)])
    with pytest.raises(FailedPrecondition) as info:
        await catalog.resolve("img", 1, BOB)
    assert info.value.reason == "IMAGE_DEPRECATED"
    assert "images/img/versions/2" in info.value.message
    assert (await catalog.resolve("img", None, BOB)).version == 2
    assert (await catalog.get("img", 1, BOB)).state == "DEPRECATED"  # still shown


async def test_an_image_with_only_deprecated_versions_has_none_to_boot() -> None:
    with pytest.raises(FailedPrecondition) as info:
        await Catalog([rec("VO", "DEPRECATED")]).resolve("img", None, BOB)
    assert info.value.reason == "IMAGE_NOT_AVAILABLE"
