"""The WNoDeS Python SDK: one Client over the gateway's public API (wnodes.v1)."""

from __future__ import annotations

import getpass
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2, field_mask_pb2

from clients.wnodes_client._errors import WnodesRpcError
from clients.wnodes_client._operations import OperationHandle
from wnodes.v1 import (
    hypervisor_pb2,
    hypervisor_service_pb2,
    hypervisor_service_pb2_grpc,
    image_pb2,
    image_service_pb2,
    image_service_pb2_grpc,
    network_pb2,
    network_service_pb2,
    network_service_pb2_grpc,
    virtual_machine_pb2,
    virtual_machine_service_pb2,
    virtual_machine_service_pb2_grpc,
    volume_pb2,
    volume_service_pb2,
    volume_service_pb2_grpc,
)

DEFAULT_TARGET = "127.0.0.1:8443"
UPLOAD_CHUNK = 1 << 20
RETRIES = 5


@dataclass
class RunResult:
    vm: virtual_machine_pb2.VirtualMachine
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    seconds_to_first_output: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


class Client:
    """Talks to a WNoDeS gateway.

    ``target`` defaults to $WNODES_GATEWAY; the identity to $WNODES_USER / $WNODES_VO (the
    development stack trusts them; a site gateway authenticates with certificates instead).
    """

    def __init__(
        self,
        target: str | None = None,
        user: str | None = None,
        vo: str | None = None,
        roles: Sequence[str] = (),
    ) -> None:
        self.target = target or os.environ.get("WNODES_GATEWAY", DEFAULT_TARGET)
        self._metadata: tuple[tuple[str, str | bytes], ...] = (
            ("wnodes-user", user or os.environ.get("WNODES_USER") or getpass.getuser()),
            ("wnodes-vo", vo or os.environ.get("WNODES_VO", "wnodes")),
            ("wnodes-roles", ",".join(roles) or os.environ.get("WNODES_ROLES", "")),
        )
        self._channel = grpc.insecure_channel(
            self.target, options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)]
        )
        self._vms = virtual_machine_service_pb2_grpc.VirtualMachineServiceStub(self._channel)
        self._images = image_service_pb2_grpc.ImageServiceStub(self._channel)
        self._hosts = hypervisor_service_pb2_grpc.HypervisorServiceStub(self._channel)
        self._ops = operations_pb2_grpc.OperationsStub(self._channel)
        self._volumes = volume_service_pb2_grpc.VolumeServiceStub(self._channel)
        self._networks = network_service_pb2_grpc.NetworkServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], request: Any, timeout: float = 60.0, retry: bool = True) -> Any:
        delay = 0.1
        for attempt in range(RETRIES if retry else 1):
            try:
                return fn(request, metadata=self._metadata, timeout=timeout)
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                if code == grpc.StatusCode.UNAVAILABLE and retry and attempt < RETRIES - 1:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                raise WnodesRpcError.from_call(err) from None
        raise AssertionError("unreachable")

    def _wait(self, request: operations_pb2.WaitOperationRequest) -> operations_pb2.Operation:
        return self._call(self._ops.WaitOperation, request, timeout=request.timeout.seconds + 15)

    # --- virtual machines -----------------------------------------------------------------

    def create_vm(
        self,
        image: str,
        vcpu_count: int = 1,
        memory_mib: int = 256,
        *,
        labels: dict[str, str] | None = None,
        pinned_hypervisor: str = "",
        user_data: bytes = b"",
        ssh_public_keys: Sequence[str] = (),
        request_id: str | None = None,
    ) -> OperationHandle[virtual_machine_pb2.VirtualMachine]:
        """Starts creating a VM; the handle's result() is the ACTIVE VM. Retries reuse one
        request_id, so a VM is never created twice.

        With ssh_public_keys (OpenSSH public key lines) the VM gets an SSH endpoint
        (``vm.ssh_endpoint``, "127.0.0.1:PORT" on its hypervisor) that lets those keys in as
        root and as the user wnodes once it is ACTIVE. user_data is stored in the guest and run
        once if it is a script ("#!...")."""
        vm = virtual_machine_pb2.VirtualMachine(
            image=image, vcpu_count=vcpu_count, memory_mib=memory_mib, labels=labels or {},
            pinned_hypervisor=pinned_hypervisor,
        )
        request = virtual_machine_service_pb2.CreateVirtualMachineRequest(
            virtual_machine=vm, request_id=request_id or uuid.uuid4().hex, ssh_public_keys=list(ssh_public_keys),
            user_data=user_data,
        )
        op = self._call(self._vms.CreateVirtualMachine, request)
        return OperationHandle(op, self._wait, virtual_machine_pb2.VirtualMachine, virtual_machine_pb2.VirtualMachine)

    def delete_vm(self, name: str) -> OperationHandle[empty_pb2.Empty]:
        request = virtual_machine_service_pb2.DeleteVirtualMachineRequest(name=_vm_name(name), request_id=uuid.uuid4().hex)
        op = self._call(self._vms.DeleteVirtualMachine, request)
        return OperationHandle(op, self._wait, empty_pb2.Empty, virtual_machine_pb2.VirtualMachine)

    def save_vm(self, name: str, image_name: str) -> OperationHandle[image_pb2.ImageVersion]:
        """Saves the VM's disk as a new version of image_name (of your VO); the handle's
        result() is that ImageVersion. A running VM is paused for the copy and goes on."""
        request = virtual_machine_service_pb2.SaveVirtualMachineRequest(name=_vm_name(name), image_name=image_name)
        op = self._call(self._vms.SaveVirtualMachine, request)
        return OperationHandle(op, self._wait, image_pb2.ImageVersion, virtual_machine_pb2.VirtualMachine)

    # Power actions: each returns a handle whose result() is the VM once the action is done.

    def stop_vm(self, name: str) -> OperationHandle[virtual_machine_pb2.VirtualMachine]:
        """Stops the VM (STOPPED): the guest syncs, the domain goes, the disk stays."""
        return self._power(self._vms.StopVirtualMachine, virtual_machine_service_pb2.StopVirtualMachineRequest(name=_vm_name(name)))

    def start_vm(self, name: str) -> OperationHandle[virtual_machine_pb2.VirtualMachine]:
        """Boots a STOPPED VM again on its disk (or resumes a SUSPENDED one): ACTIVE."""
        return self._power(self._vms.StartVirtualMachine, virtual_machine_service_pb2.StartVirtualMachineRequest(name=_vm_name(name)))

    def restart_vm(self, name: str) -> OperationHandle[virtual_machine_pb2.VirtualMachine]:
        """Stops an ACTIVE VM's domain and boots its disk again: ACTIVE."""
        return self._power(self._vms.RestartVirtualMachine, virtual_machine_service_pb2.RestartVirtualMachineRequest(name=_vm_name(name)))

    def suspend_vm(self, name: str) -> OperationHandle[virtual_machine_pb2.VirtualMachine]:
        """Pauses an ACTIVE VM in memory: SUSPENDED."""
        return self._power(self._vms.SuspendVirtualMachine, virtual_machine_service_pb2.SuspendVirtualMachineRequest(name=_vm_name(name)))

    def resume_vm(self, name: str) -> OperationHandle[virtual_machine_pb2.VirtualMachine]:
        """Continues a SUSPENDED VM where it was paused: ACTIVE."""
        return self._power(self._vms.ResumeVirtualMachine, virtual_machine_service_pb2.ResumeVirtualMachineRequest(name=_vm_name(name)))

    def _power(self, method: Callable[..., Any], request: Any) -> OperationHandle[virtual_machine_pb2.VirtualMachine]:
        op = self._call(method, request)
        return OperationHandle(op, self._wait, virtual_machine_pb2.VirtualMachine, virtual_machine_pb2.VirtualMachine)

    def get_vm(self, name: str) -> virtual_machine_pb2.VirtualMachine:
        vm: virtual_machine_pb2.VirtualMachine = self._call(
            self._vms.GetVirtualMachine, virtual_machine_service_pb2.GetVirtualMachineRequest(name=_vm_name(name))
        )
        return vm

    def update_labels(self, name: str, labels: dict[str, str], etag: str = "") -> virtual_machine_pb2.VirtualMachine:
        """Replaces the VM's labels. With the etag of a VM read earlier, fails with ABORTED if
        the VM changed since (so two callers cannot both claim it)."""
        vm = virtual_machine_pb2.VirtualMachine(name=_vm_name(name), labels=labels, etag=etag)
        request = virtual_machine_service_pb2.UpdateVirtualMachineRequest(
            virtual_machine=vm, update_mask=field_mask_pb2.FieldMask(paths=["labels"])
        )
        updated: virtual_machine_pb2.VirtualMachine = self._call(self._vms.UpdateVirtualMachine, request, retry=False)
        return updated

    def list_vms(self, hypervisor: str = "", page_size: int = 200) -> Iterator[virtual_machine_pb2.VirtualMachine]:
        token = ""
        while True:
            request = virtual_machine_service_pb2.ListVirtualMachinesRequest(page_size=page_size, page_token=token, hypervisor=hypervisor)
            page = self._call(self._vms.ListVirtualMachines, request)
            yield from page.virtual_machines
            token = page.next_page_token
            if not token:
                return

    def exec(
        self, name: str, command: Sequence[str], ready_timeout: float = 0.0, uid: int = 0, reattach_for: float = 60.0
    ) -> Iterator[virtual_machine_service_pb2.ExecVirtualMachineResponse]:
        """Streams the command's stdout/stderr chunks, then one message with its exit_code.
        The command runs as uid in the guest (0: root).

        If the stream breaks (the gateway restarts, say), the call attaches again to the same
        execution for up to reattach_for seconds, resuming where it stopped: no output is lost
        or repeated, and the command does not run twice."""
        request = virtual_machine_service_pb2.ExecVirtualMachineRequest(
            name=_vm_name(name), command=list(command), ready_timeout_seconds=ready_timeout, uid=uid, exec_id=uuid.uuid4().hex
        )
        deadline = None
        while True:
            try:
                for msg in self._vms.ExecVirtualMachine(request, metadata=self._metadata, wait_for_ready=deadline is not None):
                    kind = msg.WhichOneof("payload")
                    if kind == "stdout":
                        request.stdout_offset += len(msg.stdout)
                    elif kind == "stderr":
                        request.stderr_offset += len(msg.stderr)
                    deadline = None
                    yield msg
                return
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                if code != grpc.StatusCode.UNAVAILABLE:
                    raise WnodesRpcError.from_call(err) from None
                deadline = deadline or time.monotonic() + reattach_for
                if time.monotonic() > deadline:
                    raise WnodesRpcError.from_call(err) from None
                time.sleep(0.2)

    def run(
        self,
        image: str,
        command: Sequence[str],
        vcpu_count: int = 1,
        memory_mib: int = 256,
        *,
        labels: dict[str, str] | None = None,
        on_output: Callable[[str, bytes], None] | None = None,
        keep: bool = False,
    ) -> RunResult:
        """Runs a command in a fresh VM and removes the VM afterwards (even on errors).

        The command is sent as soon as the VM is placed; the agent hands it to the guest the
        moment the guest is ready, so no polling sits between boot and output."""
        start = time.monotonic()
        op = self.create_vm(image, vcpu_count, memory_mib, labels=labels)
        vm_name = op.metadata.name if op.metadata is not None else ""  # type: ignore[attr-defined]
        result = RunResult(vm=virtual_machine_pb2.VirtualMachine(name=vm_name), exit_code=-1)
        result.timings["create_rpc"] = time.monotonic() - start
        try:
            if op.done:
                op.result()  # raises if placement failed
            out, err = bytearray(), bytearray()
            for msg in self.exec(vm_name, command):
                kind = msg.WhichOneof("payload")
                if kind in ("stdout", "stderr"):
                    data = getattr(msg, kind)
                    if result.seconds_to_first_output is None:
                        result.seconds_to_first_output = time.monotonic() - start
                    (out if kind == "stdout" else err).extend(data)
                    if on_output:
                        on_output(kind, data)
                elif kind == "exit_code":
                    result.exit_code = msg.exit_code
            result.stdout, result.stderr = bytes(out), bytes(err)
            result.vm = self.get_vm(vm_name)
            result.timings["total"] = time.monotonic() - start
            return result
        finally:
            if vm_name and not keep:
                self.delete_vm(vm_name).result(timeout=120)

    # --- volumes --------------------------------------------------------------------------

    def create_volume(self, size_gib: float, title: str = "", request_id: str | None = None) -> volume_pb2.Volume:
        """A new, detached volume (its data is made on the host of the first VM it joins)."""
        request = volume_service_pb2.CreateVolumeRequest(
            volume=volume_pb2.Volume(title=title, size_gib=size_gib), request_id=request_id or uuid.uuid4().hex
        )
        volume: volume_pb2.Volume = self._call(self._volumes.CreateVolume, request)
        return volume

    def get_volume(self, name: str) -> volume_pb2.Volume:
        volume: volume_pb2.Volume = self._call(self._volumes.GetVolume, volume_service_pb2.GetVolumeRequest(name=_volume_name(name)))
        return volume

    def list_volumes(self, page_size: int = 200) -> Iterator[volume_pb2.Volume]:
        token = ""
        while True:
            page = self._call(self._volumes.ListVolumes, volume_service_pb2.ListVolumesRequest(page_size=page_size, page_token=token))
            yield from page.volumes
            token = page.next_page_token
            if not token:
                return

    def delete_volume(self, name: str) -> None:
        """Deletes a detached volume; its data is freed on its host."""
        self._call(self._volumes.DeleteVolume, volume_service_pb2.DeleteVolumeRequest(name=_volume_name(name)))

    def online_volume(self, name: str) -> volume_pb2.Volume:
        volume: volume_pb2.Volume = self._call(self._volumes.OnlineVolume, volume_service_pb2.OnlineVolumeRequest(name=_volume_name(name)))
        return volume

    def offline_volume(self, name: str) -> volume_pb2.Volume:
        volume: volume_pb2.Volume = self._call(self._volumes.OfflineVolume, volume_service_pb2.OfflineVolumeRequest(name=_volume_name(name)))
        return volume

    def attach_volume(self, volume: str, vm: str, device: str = "") -> OperationHandle[volume_pb2.Volume]:
        """Attaches the volume to the VM (hot-plugged if it runs); result() is the Volume."""
        request = volume_service_pb2.AttachVolumeRequest(volume=_volume_name(volume), virtual_machine=_vm_name(vm), device=device)
        op = self._call(self._volumes.AttachVolume, request)
        return OperationHandle(op, self._wait, volume_pb2.Volume, volume_pb2.Volume)

    def detach_volume(self, volume: str, vm: str = "") -> OperationHandle[volume_pb2.Volume]:
        """Detaches the volume from its VM (vm, if given, must be that VM); its data stays."""
        request = volume_service_pb2.DetachVolumeRequest(volume=_volume_name(volume), virtual_machine=_vm_name(vm) if vm else "")
        op = self._call(self._volumes.DetachVolume, request)
        return OperationHandle(op, self._wait, volume_pb2.Volume, volume_pb2.Volume)

    # --- networks -------------------------------------------------------------------------

    def create_network(
        self, cidr: str = "", *, title: str = "", vlan: int = 0, gateway: str = "", allocation: str = "DYNAMIC",
        request_id: str | None = None,
    ) -> network_pb2.Network:
        """A network on cidr (IPv4, e.g. "10.20.0.0/24"; empty: a free subnet of the site's
        pool) with its own VLAN (0: one is chosen); allocation DYNAMIC (addresses chosen) or
        STATIC (given per interface)."""
        network = network_pb2.Network(
            title=title, vlan=vlan, cidr=cidr, gateway=gateway, allocation=network_pb2.Network.Allocation.Value(allocation)
        )
        request = network_service_pb2.CreateNetworkRequest(network=network, request_id=request_id or uuid.uuid4().hex)
        created: network_pb2.Network = self._call(self._networks.CreateNetwork, request)
        return created

    def get_network(self, name: str) -> network_pb2.Network:
        network: network_pb2.Network = self._call(self._networks.GetNetwork, network_service_pb2.GetNetworkRequest(name=_network_name(name)))
        return network

    def list_networks(self, page_size: int = 200) -> Iterator[network_pb2.Network]:
        token = ""
        while True:
            page = self._call(self._networks.ListNetworks, network_service_pb2.ListNetworksRequest(page_size=page_size, page_token=token))
            yield from page.networks
            token = page.next_page_token
            if not token:
                return

    def delete_network(self, name: str) -> None:
        """Deletes a network without interfaces and frees its VLAN."""
        self._call(self._networks.DeleteNetwork, network_service_pb2.DeleteNetworkRequest(name=_network_name(name)))

    def up_network(self, name: str) -> network_pb2.Network:
        network: network_pb2.Network = self._call(self._networks.UpNetwork, network_service_pb2.UpNetworkRequest(name=_network_name(name)))
        return network

    def down_network(self, name: str) -> network_pb2.Network:
        network: network_pb2.Network = self._call(self._networks.DownNetwork, network_service_pb2.DownNetworkRequest(name=_network_name(name)))
        return network

    def create_network_interface(
        self, vm: str, network: str, ip_address: str = "", request_id: str | None = None
    ) -> network_pb2.NetworkInterface:
        """Gives the VM an interface on the network, with a leased MAC and address (ip_address:
        the one wanted; required on a STATIC network)."""
        interface = network_pb2.NetworkInterface(virtual_machine=_vm_name(vm), network=_network_name(network), ip_address=ip_address)
        request = network_service_pb2.CreateNetworkInterfaceRequest(network_interface=interface, request_id=request_id or uuid.uuid4().hex)
        created: network_pb2.NetworkInterface = self._call(self._networks.CreateNetworkInterface, request)
        return created

    def get_network_interface(self, name: str) -> network_pb2.NetworkInterface:
        request = network_service_pb2.GetNetworkInterfaceRequest(name=_interface_name(name))
        interface: network_pb2.NetworkInterface = self._call(self._networks.GetNetworkInterface, request)
        return interface

    def list_network_interfaces(self, network: str = "", vm: str = "", page_size: int = 200) -> Iterator[network_pb2.NetworkInterface]:
        token = ""
        while True:
            request = network_service_pb2.ListNetworkInterfacesRequest(
                page_size=page_size, page_token=token, network=_network_name(network) if network else "", virtual_machine=_vm_name(vm) if vm else ""
            )
            page = self._call(self._networks.ListNetworkInterfaces, request)
            yield from page.network_interfaces
            token = page.next_page_token
            if not token:
                return

    def delete_network_interface(self, name: str) -> None:
        self._call(self._networks.DeleteNetworkInterface, network_service_pb2.DeleteNetworkInterfaceRequest(name=_interface_name(name)))

    # --- images ---------------------------------------------------------------------------

    def list_images(self, image: str = "") -> list[image_pb2.ImageVersion]:
        out: list[image_pb2.ImageVersion] = []
        token = ""
        while True:
            request = image_service_pb2.ListImageVersionsRequest(parent=f"images/{image}" if image else "", page_token=token)
            page = self._call(self._images.ListImageVersions, request)
            out.extend(page.image_versions)
            token = page.next_page_token
            if not token:
                return out

    def get_image(self, name: str) -> image_pb2.ImageVersion:
        version: image_pb2.ImageVersion = self._call(self._images.GetImageVersion, image_service_pb2.GetImageVersionRequest(name=name))
        return version

    def publish_image(self, name: str) -> image_pb2.ImageVersion:
        """Makes images/NAME/versions/N AVAILABLE: new VMs of NAME use it."""
        request = image_service_pb2.PublishImageVersionRequest(name=_image_version_name(name))
        version: image_pb2.ImageVersion = self._call(self._images.PublishImageVersion, request)
        return version

    def deprecate_image(self, name: str) -> image_pb2.ImageVersion:
        """Stops new VMs from using the version; running VMs keep it."""
        request = image_service_pb2.DeprecateImageVersionRequest(name=_image_version_name(name))
        version: image_pb2.ImageVersion = self._call(self._images.DeprecateImageVersion, request)
        return version

    def delete_image(self, name: str) -> image_pb2.ImageVersion:
        """Marks the version DELETED (its number is never reused)."""
        request = image_service_pb2.DeleteImageVersionRequest(name=_image_version_name(name))
        version: image_pb2.ImageVersion = self._call(self._images.DeleteImageVersion, request)
        return version

    def prefetch_image(self, image: str, hosts: Sequence[str] = ()) -> image_service_pb2.PrefetchImageResponse:
        """Asks hosts (every host if none are named) to cache the image's newest version and to
        follow it as new versions are published. Admins only."""
        request = image_service_pb2.PrefetchImageRequest(name=_image_version_name(image), hosts=list(hosts))
        response: image_service_pb2.PrefetchImageResponse = self._call(self._images.PrefetchImage, request)
        return response

    def customize_image(
        self,
        source: str,
        image: str,
        *,
        files: dict[str, bytes] | None = None,
        syslog_to_hypervisor: bool = False,
        kernel_modules: Sequence[str] = (),
        authorized_keys: Sequence[str] = (),
        script: str = "",
        visibility: str = "",
        description: str = "",
        on_progress: Callable[[str, int], None] | None = None,
    ) -> image_pb2.ImageVersion:
        """Makes a new version of image from a customised copy of source (images/NAME or
        images/NAME/versions/N) with libguestfs: files (guest path -> content), syslog relayed to
        the hypervisor, kernel modules loaded at boot, root's SSH keys, a site script. The source
        is never modified. on_progress(step, percent) follows it; returns the new version."""
        request = image_service_pb2.CustomizeImageVersionRequest(
            source=_image_version_name(source), image=image.removeprefix("images/"),
            files=[image_service_pb2.CustomizeImageVersionRequest.File(path=p, content=c) for p, c in (files or {}).items()],
            syslog_to_hypervisor=syslog_to_hypervisor, kernel_modules=list(kernel_modules),
            authorized_keys=list(authorized_keys), script=script, description=description,
            visibility=image_pb2.ImageVersion.Visibility.Value(visibility or "VISIBILITY_UNSPECIFIED"),
        )
        try:
            for step in self._images.CustomizeImageVersion(request, metadata=self._metadata, timeout=3600):
                if on_progress:
                    on_progress(step.step, step.percent)
                if step.HasField("image_version"):
                    version: image_pb2.ImageVersion = step.image_version
                    return version
        except grpc.RpcError as err:
            raise WnodesRpcError.from_call(err) from None
        raise WnodesRpcError(grpc.StatusCode.INTERNAL, "the customisation stream ended without a new version")

    def upload_image(
        self,
        image: str,
        disk: Path,
        *,
        kernel: Path | None = None,
        initrd: Path | None = None,
        cmdline: str = "",
        visibility: str = "PUBLIC",
        description: str = "",
        publish: bool = True,
        sha256: dict[str, str] | None = None,
        owner_vo: str = "",
        customizations: Sequence[str] = (),
        on_progress: Callable[[int, int], None] | None = None,
    ) -> image_pb2.ImageVersion:
        """Uploads files as a new version of image; checksums are computed here and verified by
        the imagestore, so a corrupted or cut transfer is refused. publish=False registers the
        version BUILDING (publish it with publish_image). sha256 declares a part's checksum
        instead of computing it (a caller that knows it already). owner_vo (admins only; default
        the caller's VO) owns a new image; customizations records how the files were made (a
        recipe build), one line each."""
        parts = {"disk": disk} | ({"kernel": kernel} if kernel else {}) | ({"initrd": initrd} if initrd else {})
        declared = sha256 or {}
        blobs = {p: image_pb2.Blob(sha256=declared.get(p) or _sha256(f), size_bytes=f.stat().st_size) for p, f in parts.items()}
        header = image_pb2.ImageVersion(
            image=image, visibility=image_pb2.ImageVersion.Visibility.Value(visibility), format="qcow2",
            architecture="x86_64", disk=blobs["disk"], description=description, owner_vo=owner_vo,
            customizations=list(customizations),
            state=image_pb2.ImageVersion.AVAILABLE if publish else image_pb2.ImageVersion.BUILDING,
        )
        if kernel:
            header.direct_boot.CopyFrom(image_pb2.DirectBoot(kernel=blobs["kernel"], initrd=blobs.get("initrd"), cmdline=cmdline))
        total = sum(b.size_bytes for b in blobs.values())

        def messages() -> Iterator[image_service_pb2.UploadImageVersionRequest]:
            yield image_service_pb2.UploadImageVersionRequest(header=header)
            sent = 0
            for part, path in parts.items():
                with path.open("rb") as f:
                    for chunk in iter(lambda: f.read(UPLOAD_CHUNK), b""):
                        sent += len(chunk)
                        if on_progress:
                            on_progress(sent, total)
                        yield image_service_pb2.UploadImageVersionRequest(
                            chunk=image_service_pb2.UploadImageVersionRequest.Chunk(part=part, data=chunk)
                        )

        try:
            return self._images.UploadImageVersion(messages(), metadata=self._metadata, timeout=3600)
        except grpc.RpcError as err:
            raise WnodesRpcError.from_call(err) from None

    # --- farm -----------------------------------------------------------------------------

    def list_hypervisors(self) -> list[hypervisor_pb2.Hypervisor]:
        out: list[hypervisor_pb2.Hypervisor] = []
        token = ""
        while True:
            page = self._call(self._hosts.ListHypervisors, hypervisor_service_pb2.ListHypervisorsRequest(page_token=token))
            out.extend(page.hypervisors)
            token = page.next_page_token
            if not token:
                return out

    def get_hypervisor(self, name: str) -> hypervisor_pb2.Hypervisor:
        name = name if name.startswith("hypervisors/") else f"hypervisors/{name}"
        host: hypervisor_pb2.Hypervisor = self._call(self._hosts.GetHypervisor, hypervisor_service_pb2.GetHypervisorRequest(name=name))
        return host

    def list_nameservers(self) -> list[hypervisor_pb2.Nameserver]:
        return list(self._call(self._hosts.ListNameservers, hypervisor_service_pb2.ListNameserversRequest()).nameservers)


def _vm_name(name: str) -> str:
    return name if name.startswith("virtualMachines/") else f"virtualMachines/{name}"


def _network_name(name: str) -> str:
    return name if name.startswith("networks/") else f"networks/{name}"


def _interface_name(name: str) -> str:
    return name if name.startswith("networkInterfaces/") else f"networkInterfaces/{name}"


def _image_version_name(name: str) -> str:
    return name if name.startswith("images/") else f"images/{name}"


def _volume_name(name: str) -> str:
    return name if name.startswith("volumes/") else f"volumes/{name}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
