"""The image catalogue and distribution on a real control plane (etcd x3, imagestore, gateway)
with one fake-driver host that still pulls images into its cache (--fake-image-cache), so
transfers can be counted: visibility per VO, refused uploads, deprecation, one transfer for
concurrent VMs, prefetch and automatic updates, a transfer that resumes after the imagestore
was SIGKILLed under it."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from clients.wnodes_client import Client, WnodesRpcError
from deploy.stack.stack import Stack
from tests import stacks
from wnodes.v1 import image_pb2, image_service_pb2

pytestmark = pytest.mark.integration
T = TypeVar("T")
HOST = "sim"
# Big enough that a transfer (a few hundred MiB/s here) is still running when the test sees it.
BIG_MIB = 384


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = stacks.start(tmp_path_factory.mktemp("images"), "fake", 1, agent_args=["--fake-image-cache", "--cache-retention-seconds", "0"])
    yield s
    s.down()


def connect(stack: Stack, user: str = "alice", vo: str = "atlas", admin: bool = False) -> Client:
    assert stack.state is not None
    return Client(stack.state.gateway, user=user, vo=vo, roles=["admin"] if admin else [])


def qcow2(tmp: Path, mib: int) -> Path:
    """A real qcow2 (the agent builds an overlay on it); its virtual size makes its sha256 unique."""
    path = tmp / f"disk-{mib}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{mib}M"], check=True)
    return path


def eventually(check: Callable[[], T | None], timeout: float = 20.0, every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(every)


def transfers_of(stack: Stack, sha: str) -> int:
    log = Path(stack.dir / "logs" / "hypervisor0.log").read_text()
    return log.count(f"cached blob {sha[:12]}")


def cached(stack: Stack, sha: str) -> bool:
    return (stack.dir / "hypervisor" / "cache" / "blobs" / sha).exists()


def test_a_vo_sees_only_what_it_may_use(stack: Stack, tmp_path: Path) -> None:
    with connect(stack) as alice, connect(stack, "bob", "atlas") as bob, connect(stack, "carol", "cms") as carol:
        alice.upload_image("atlas-worker", qcow2(tmp_path, 1), visibility="VO")
        alice.upload_image("alice-scratch", qcow2(tmp_path, 2), visibility="PRIVATE")
        assert {"images/atlas-worker", "images/alice-scratch"} <= {v.image for v in alice.list_images()}
        bob_sees = {v.image for v in bob.list_images()}
        assert "images/atlas-worker" in bob_sees and "images/alice-scratch" not in bob_sees
        assert not {"images/atlas-worker", "images/alice-scratch"} & {v.image for v in carol.list_images()}
        for ask in (lambda: carol.get_image("images/atlas-worker/versions/1"), lambda: carol.create_vm("atlas-worker"),
                    lambda: bob.get_image("alice-scratch")):
            with pytest.raises(WnodesRpcError) as info:
                ask()
            assert info.value.code == grpc.StatusCode.NOT_FOUND and info.value.reason == "IMAGE_NOT_FOUND"
            assert "PRIVATE" not in info.value.message and "owner" not in info.value.message and "sha256" not in info.value.message
        with pytest.raises(WnodesRpcError) as denied:
            carol.deprecate_image("images/atlas-worker/versions/1")
        assert denied.value.code == grpc.StatusCode.NOT_FOUND
        assert bob.deprecate_image("images/atlas-worker/versions/1").state == image_pb2.ImageVersion.DEPRECATED  # same VO


def _upload_raw(client: Client, header: image_pb2.ImageVersion, chunks: list[bytes]) -> image_pb2.ImageVersion:
    def messages() -> Iterator[image_service_pb2.UploadImageVersionRequest]:
        yield image_service_pb2.UploadImageVersionRequest(header=header)
        for data in chunks:
            yield image_service_pb2.UploadImageVersionRequest(chunk=image_service_pb2.UploadImageVersionRequest.Chunk(part="disk", data=data))

    try:
        result: image_pb2.ImageVersion = client._images.UploadImageVersion(messages(), metadata=client._metadata, timeout=30)
        return result
    except grpc.RpcError as err:
        raise WnodesRpcError.from_call(err) from None


def test_an_upload_that_does_not_match_its_sha256_or_is_cut_short_publishes_nothing(stack: Stack) -> None:
    data = b"disk bytes " * 100_000
    good = hashlib.sha256(data).hexdigest()
    with connect(stack) as alice:
        wrong = image_pb2.ImageVersion(image="broken", disk=image_pb2.Blob(sha256=hashlib.sha256(b"x").hexdigest(), size_bytes=len(data)))
        with pytest.raises(WnodesRpcError) as mismatch:
            _upload_raw(alice, wrong, [data])
        short = image_pb2.ImageVersion(image="broken", disk=image_pb2.Blob(sha256=good, size_bytes=len(data)))
        with pytest.raises(WnodesRpcError) as cut:
            _upload_raw(alice, short, [data[: len(data) // 2]])
        assert mismatch.value.reason == "BLOB_CHECKSUM_MISMATCH" and cut.value.reason == "BLOB_SIZE_MISMATCH"
        assert mismatch.value.code == cut.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v for v in alice.list_images() if v.image == "images/broken"] == []
    blobs = stack.dir / "imagestore" / "blobs"
    assert not (blobs / good).exists() and not list(blobs.glob(".upload-*"))


def test_a_deprecated_version_is_refused_to_new_vms_and_running_ones_keep_it(stack: Stack, tmp_path: Path) -> None:
    with connect(stack) as alice:
        v1 = alice.upload_image("rolling", qcow2(tmp_path, 3), visibility="VO")
        vm = alice.create_vm("rolling").result(timeout=60)
        assert vm.image_version == v1.name
        assert alice.deprecate_image(v1.name).state == image_pb2.ImageVersion.DEPRECATED

        def refused() -> WnodesRpcError | None:
            try:
                alice.delete_vm(alice.create_vm(v1.name).result(timeout=60).name).result(timeout=60)
                return None  # the nameserver's catalogue may lag by a second
            except WnodesRpcError as err:
                return err

        err = eventually(refused)
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.reason == "IMAGE_DEPRECATED"
        assert "deprecated" in err.message and "new VMs cannot use it" in err.message
        assert alice.get_vm(vm.name).image_version == v1.name  # the running VM keeps it
        alice.publish_image(v1.name)  # undo
        alice.delete_vm(vm.name).result(timeout=60)


def test_three_vms_of_one_image_on_a_cold_cache_share_one_transfer(stack: Stack, tmp_path: Path) -> None:
    with connect(stack) as alice:
        version = alice.upload_image("cold", qcow2(tmp_path, 4), visibility="VO")
        assert not cached(stack, version.disk.sha256)
        with ThreadPoolExecutor(3) as pool:
            ops = list(pool.map(lambda _i: alice.create_vm("cold"), range(3)))
            vms = [op.result(timeout=60) for op in ops]
        assert {v.image_version for v in vms} == {version.name}
        assert transfers_of(stack, version.disk.sha256) == 1
        assert cached(stack, version.disk.sha256)
        for vm in vms:
            alice.delete_vm(vm.name).result(timeout=60)


def test_prefetch_warms_the_cache_and_hosts_follow_new_versions(stack: Stack, tmp_path: Path) -> None:
    with connect(stack) as alice, connect(stack, "root", "wnodes", admin=True) as admin:
        v1 = alice.upload_image("follow", qcow2(tmp_path, 5), visibility="VO")
        # Execute: the admin CLI asks this host to warm its cache, and waits for it
        assert stack.state is not None
        out = subprocess.run(
            [stacks.REPO / ".venv/bin/wnodes-admin", "--gateway", stack.state.gateway, "-o", "json", "images", "prefetch", "follow",
             "--hosts", HOST, "--wait", "20"],
            capture_output=True, text=True, env={"WNODES_USER": "root", "WNODES_VO": "wnodes", "WNODES_ROLES": "admin", "PATH": "/usr/bin:/bin"},
        )
        assert out.returncode == 0, out.stderr
        assert v1.name in out.stdout and cached(stack, v1.disk.sha256)
        with pytest.raises(WnodesRpcError) as denied:
            alice.prefetch_image("follow")
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        vm = alice.create_vm("follow").result(timeout=60)
        assert transfers_of(stack, v1.disk.sha256) == 1  # the VM found it cached
        # A new version: the host pulls it before any VM asks; new VMs use it, the old VM keeps v1
        v2 = alice.upload_image("follow", qcow2(tmp_path, 6), visibility="VO")
        eventually(lambda: cached(stack, v2.disk.sha256))
        eventually(lambda: v2.name in admin.get_hypervisor(HOST).cached_images)
        new_vm = eventually(lambda: _vm_of(alice, v2.name))
        assert alice.get_vm(vm.name).image_version == v1.name and cached(stack, v1.disk.sha256)
        # v1 leaves the cache once unused (retention 0 here) and the catalogue moves on
        alice.delete_vm(vm.name).result(timeout=60)
        alice.delete_image(v1.name)
        eventually(lambda: not cached(stack, v1.disk.sha256))
        assert transfers_of(stack, v2.disk.sha256) == 1
        alice.delete_vm(new_vm).result(timeout=60)


def _vm_of(client: Client, version: str) -> str | None:
    vm = client.create_vm("follow").result(timeout=60)
    if vm.image_version == version:
        return vm.name
    client.delete_vm(vm.name).result(timeout=60)
    return None


def test_a_transfer_cut_by_killing_the_imagestore_resumes_and_verifies(stack: Stack, tmp_path: Path) -> None:
    # Prepare: an image big enough to be caught mid-transfer (random bytes: qcow2 keeps them all)
    raw = tmp_path / "big.raw"
    with raw.open("wb") as f:
        for i in range(BIG_MIB):
            f.write(hashlib.sha512(i.to_bytes(4, "big")).digest() * (1 << 14))  # 1 MiB, incompressible
    disk = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk)], check=True)
    raw.unlink()
    with connect(stack) as alice:
        version = alice.upload_image("big", disk, visibility="VO")
        sha, size = version.disk.sha256, version.disk.size_bytes
        part = stack.dir / "hypervisor" / "cache" / "blobs" / f"{sha}.part"

        # Execute: a VM needs the image; the imagestore is SIGKILLed once part of it has arrived
        op = alice.create_vm("big")
        written = eventually(lambda: part.exists() and 0 < part.stat().st_size < size and part.stat().st_size, timeout=60, every=0.005)
        stack.kill("imagestore")
        time.sleep(1.0)  # the agent sees the broken stream and keeps what it wrote
        kept = part.stat().st_size
        stack.restart("imagestore")
        vm = op.result(timeout=120)

        # Assert: the VM started once the imagestore was back, from a transfer that resumed where
        # it stopped (not from zero), and the cached blob is exactly the image
        assert vm.state == vm.State.ACTIVE and vm.image_version == version.name
        log = Path(stack.dir / "logs" / "hypervisor0.log").read_text()
        resumed = [ln for ln in log.splitlines() if f"resuming blob {sha[:12]} at" in ln]
        assert resumed, "the transfer started over instead of resuming"
        offset = int(resumed[0].split(" at ")[1].split()[0])
        print(f"written {written}, kept {kept}, resumed at {offset} of {size}")
        assert written <= offset == kept < size
        assert transfers_of(stack, sha) == 1
        blob = stack.dir / "hypervisor" / "cache" / "blobs" / sha
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == sha and not part.exists()
        alice.delete_vm(vm.name).result(timeout=60)
