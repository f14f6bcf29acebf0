from __future__ import annotations

from services.common.records import ImageRecord, PrefetchRecord
from services.hypervisor.image_updates import plan


def version(image: str, v: int, state: str = "AVAILABLE") -> ImageRecord:
    return ImageRecord(image=image, version=v, owner_vo="atlas", state=state, disk={"sha256": f"{image}{v}".ljust(64, "0"), "size_bytes": 1})


def sha(image: str, v: int) -> str:
    return f"{image}{v}".ljust(64, "0")


def test_a_host_holding_an_image_pulls_its_newly_published_version() -> None:
    catalogue = [version("tiny", 1), version("tiny", 2), version("other", 1)]
    todo = plan(catalogue, cached={sha("tiny", 1)}, requests=[], host="h1")
    assert [r.name for r in todo.prefetch] == ["images/tiny/versions/2"]
    assert todo.superseded == {sha("tiny", 1)}


def test_unpublished_and_deprecated_versions_are_not_prefetched() -> None:
    catalogue = [version("tiny", 1), version("tiny", 2, "BUILDING"), version("tiny", 3, "DEPRECATED")]
    todo = plan(catalogue, cached={sha("tiny", 1)}, requests=[], host="h1")
    assert todo.prefetch == [] and todo.superseded == set()


def test_a_prefetch_request_addresses_only_the_hosts_it_names() -> None:
    catalogue = [version("debian12", 4)]
    request = [PrefetchRecord(image="debian12", hosts=["h2"])]
    assert plan(catalogue, set(), request, "h1").prefetch == []
    assert [r.version for r in plan(catalogue, set(), request, "h2").prefetch] == [4]
    everyone = [PrefetchRecord(image="debian12")]
    assert [r.version for r in plan(catalogue, set(), everyone, "h1").prefetch] == [4]


def test_a_blob_shared_with_the_current_version_is_not_superseded() -> None:
    old, new = version("tiny", 1), version("tiny", 2)
    new.kernel = {"sha256": "k".ljust(64, "0"), "size_bytes": 1}
    old.kernel = dict(new.kernel)
    todo = plan([old, new], cached={sha("tiny", 1), "k".ljust(64, "0")}, requests=[], host="h1")
    assert todo.superseded == {sha("tiny", 1)}
