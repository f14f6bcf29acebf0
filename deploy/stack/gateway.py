"""The few calls a stack makes to its own gateway, as the operator wnodes-admin: register the
built images, wait for the hosts, size Slurm's node, delete every VM before it stops.

Over the public API's generated stubs (wnodes.v1), not the SDK (clients/wnodes_client): the
dependency between deploy/ and clients/ is one way, the admin CLI's ``stack`` verbs calling this
deployment code (tests/unit/deploy/test_import_graph.py keeps it so). Failed calls raise
``GatewayError``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

from services.common.digests import sha256_file
from wnodes.v1 import (
    hypervisor_pb2,
    hypervisor_service_pb2,
    hypervisor_service_pb2_grpc,
    image_pb2,
    image_service_pb2,
    image_service_pb2_grpc,
    virtual_machine_service_pb2,
    virtual_machine_service_pb2_grpc,
)

UPLOAD_CHUNK = 1 << 20
RETRIES = 5
T = TypeVar("T")


class GatewayError(RuntimeError):
    def __init__(self, method: str, code: grpc.StatusCode | None, details: str) -> None:
        super().__init__(f"gateway {method}: {code.name if code else 'UNKNOWN'}: {details}")
        self.code = code


class StackGateway:
    """An admin's channel to the stack's gateway (the development stack trusts the identity
    metadata, as the SDK sends it)."""

    def __init__(self, target: str) -> None:
        self._metadata = (("wnodes-user", "wnodes-admin"), ("wnodes-vo", "wnodes"), ("wnodes-roles", "admin"))
        self._channel = grpc.insecure_channel(target)
        self._images = image_service_pb2_grpc.ImageServiceStub(self._channel)
        self._hosts = hypervisor_service_pb2_grpc.HypervisorServiceStub(self._channel)
        self._vms = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(self._channel)
        self._ops = operations_pb2_grpc.OperationsStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> StackGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, fn: Callable[..., T], request: Any, timeout: float = 60.0) -> T:
        """A unary call; UNAVAILABLE is retried with backoff, as the SDK does (a gateway that
        answers its health check may still be connecting to its nameservers)."""
        delay = 0.1
        for attempt in range(RETRIES):
            try:
                return fn(request, metadata=self._metadata, timeout=timeout)
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                if code == grpc.StatusCode.UNAVAILABLE and attempt < RETRIES - 1:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                raise _error(method, err) from None
        raise AssertionError("unreachable")

    # --- images -----------------------------------------------------------------------------

    def image_names(self) -> set[str]:
        """The images the catalogue holds a version of."""
        names: set[str] = set()
        token = ""
        while True:
            page = self._call("ListImageVersions", self._images.ListImageVersions, image_service_pb2.ListImageVersionsRequest(page_token=token))
            names.update(v.image.removeprefix("images/") for v in page.image_versions)
            token = page.next_page_token
            if not token:
                return names

    def upload_image(
        self, image: str, disk: Path, *, kernel: Path | None = None, initrd: Path | None = None, cmdline: str = "",
        description: str = "",
    ) -> image_pb2.ImageVersion:
        """A new PUBLIC, AVAILABLE version of image from the files; the imagestore checks the
        sha256 computed here."""
        parts = {"disk": disk} | ({"kernel": kernel} if kernel else {}) | ({"initrd": initrd} if initrd else {})
        blobs = {p: image_pb2.Blob(sha256=sha256_file(f), size_bytes=f.stat().st_size) for p, f in parts.items()}
        header = image_pb2.ImageVersion(
            image=image, visibility=image_pb2.ImageVersion.PUBLIC, format="qcow2", architecture="x86_64",
            disk=blobs["disk"], description=description, state=image_pb2.ImageVersion.AVAILABLE,
        )
        if kernel:
            header.direct_boot.CopyFrom(image_pb2.DirectBoot(kernel=blobs["kernel"], initrd=blobs.get("initrd"), cmdline=cmdline))

        def messages() -> Iterator[image_service_pb2.UploadImageVersionRequest]:
            yield image_service_pb2.UploadImageVersionRequest(header=header)
            for part, path in parts.items():
                with path.open("rb") as f:
                    for chunk in iter(lambda: f.read(UPLOAD_CHUNK), b""):
                        chunk_msg = image_service_pb2.UploadImageVersionRequest.Chunk(part=part, data=chunk)
                        yield image_service_pb2.UploadImageVersionRequest(chunk=chunk_msg)

        try:
            version: image_pb2.ImageVersion = self._images.UploadImageVersion(messages(), metadata=self._metadata, timeout=3600)
        except grpc.RpcError as err:
            raise _error("UploadImageVersion", err) from None
        return version

    # --- hosts and VMs ----------------------------------------------------------------------

    def hypervisors(self) -> list[hypervisor_pb2.Hypervisor]:
        out: list[hypervisor_pb2.Hypervisor] = []
        token = ""
        while True:
            page = self._call("ListHypervisors", self._hosts.ListHypervisors, hypervisor_service_pb2.ListHypervisorsRequest(page_token=token))
            out.extend(page.hypervisors)
            token = page.next_page_token
            if not token:
                return out

    def hypervisor(self, name: str) -> hypervisor_pb2.Hypervisor:
        request = hypervisor_service_pb2.GetHypervisorRequest(name=f"hypervisors/{name.removeprefix('hypervisors/')}")
        return self._call("GetHypervisor", self._hosts.GetHypervisor, request)

    def delete_every_vm(self, timeout: float) -> None:
        """Deletes every VM and waits (up to timeout in all) until each deletion is done."""
        names: list[str] = []
        token = ""
        while True:
            request = virtual_machine_service_pb2.ListVirtualMachinesRequest(page_size=200, page_token=token)
            page = self._call("ListVirtualMachines", self._vms.ListVirtualMachines, request)
            names.extend(vm.name for vm in page.virtual_machines)
            token = page.next_page_token
            if not token:
                break
        ops = [self._call("DeleteVirtualMachine", self._vms.DeleteVirtualMachine,
                          virtual_machine_service_pb2.DeleteVirtualMachineRequest(name=name, request_id=uuid.uuid4().hex))
               for name in names]  # fmt: skip
        deadline = time.monotonic() + timeout
        for op in ops:
            until = max(deadline, time.monotonic() + 1.0)  # each at least a second, as late as it comes
            while not op.done:
                left = until - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{op.name} did not finish within {timeout:.0f}s")
                wait = duration_pb2.Duration(seconds=int(max(1, min(left, 5.0))))
                op = self._call("WaitOperation", self._ops.WaitOperation, operations_pb2.WaitOperationRequest(name=op.name, timeout=wait),
                                timeout=wait.seconds + 15)  # fmt: skip
            if op.HasField("error"):
                raise GatewayError("DeleteVirtualMachine", None, f"{op.name}: {op.error.message}")


def _error(method: str, err: grpc.RpcError) -> GatewayError:
    if isinstance(err, grpc.Call):
        return GatewayError(method, err.code(), err.details() or "")
    return GatewayError(method, None, str(err))
