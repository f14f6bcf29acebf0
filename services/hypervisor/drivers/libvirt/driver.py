"""HypervisorDriver over libvirt (QEMU/KVM, or QEMU's TCG where the host has no VT-x/AMD-V).

Domains are persistent (defined, then started) and named ``<domain_prefix><vm_id>``; the prefix
is how a driver knows its own domains, so a new driver instance (after the agent crashed) finds
them with ``list()`` and reconnects to their channels with ``guest(vm_id)``. Per-VM files live in
``run_dir/<vm_id>/``: the channel sockets (created by libvirt/QEMU) and ``console.log`` (the serial
console, written by virtlogd). ``destroy`` removes that directory.

Blocking libvirt calls run in worker threads (``asyncio.to_thread``); one libvirt connection is
shared and reopened if it dies.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import libvirt
from opentelemetry import trace

from services.common import names
from services.hypervisor.drivers.base import (
    DomainInfo,
    DomainNotFound,
    DomainSpec,
    DriverError,
    HostForwardUnavailable,
    HostResources,
    VolumeSpec,
)
from services.hypervisor.drivers.kvm import TCG_KERNEL_ARGS, detect_host_virtualization
from services.hypervisor.drivers.libvirt.domain_xml import ChannelPaths, DomainXmlOptions, domain_xml, volume_xml
from services.hypervisor.drivers.libvirt.guest_channel import VirtioSerialChannel
from services.hypervisor.drivers.qemu_img import flatten

LOG = logging.getLogger(__name__)
_TRACER = trace.get_tracer(__name__)

_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with its NUL

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


def _silence_libvirt(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; they are raised as exceptions anyway."""


libvirt.registerErrorHandler(_silence_libvirt, None)


def _is_no_domain(exc: libvirt.libvirtError) -> bool:
    return bool(exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN)


def _disk_with_source(domain: Any, path: Path) -> str | None:
    """The live XML of the domain's disk whose file is path, or None."""
    for disk in ET.fromstring(domain.XMLDesc(0)).iterfind("devices/disk"):
        source = disk.find("source")
        if source is not None and source.get("file") == str(path):
            return ET.tostring(disk, encoding="unicode")
    return None


def start_failed(name: str, exc: libvirt.libvirtError) -> DriverError:
    """The error for a domain that did not start. QEMU refusing a forward's host port says so
    only in its message ("Could not set up host forwarding rule 'tcp:127.0.0.1:22000-:22'"):
    it is told apart here, so callers catch a type."""
    text = str(exc)
    kind = HostForwardUnavailable if "hostfwd" in text or "host forwarding" in text else DriverError
    return kind(f"starting domain {name} failed: {exc}")


class LibvirtDriver:
    """HypervisorDriver on libvirt. See the module docstring."""

    def __init__(
        self,
        uri: str = "qemu:///system",
        domain_prefix: str = "wnodes-",
        *,
        run_dir: Path,
        virtualization: str | None = None,
        tcg_cpu_model: str = "qemu64",
        tcg_kernel_args: str = TCG_KERNEL_ARGS,
        dac_label: str | None = None,
        guest_connect_timeout: float = 60.0,
        detach_timeout: float = 15.0,
    ) -> None:
        """
        uri: libvirt connection URI.
        domain_prefix: names of this driver's domains start with it; other domains are ignored.
        run_dir: per-VM channel sockets and console logs go to run_dir/<vm_id>/.
        virtualization: "kvm" or "qemu" to force one; None detects it (vmx/svm and a usable
            /dev/kvm mean "kvm", anything else TCG), and the choice and its reason are logged.
        tcg_cpu_model: CPU model under TCG ("qemu64" boots fastest; "maximum" has more features).
        tcg_kernel_args: appended to a direct-boot kernel command line under TCG only (see
            kvm.TCG_KERNEL_ARGS); "" appends nothing.
        dac_label: a static DAC label for QEMU, e.g. "+0:+0" to run it as root without
            relabelling; None uses libvirt's QEMU user, which must be able to reach the image
            files, the overlays and run_dir (every parent directory traversable).
        guest_connect_timeout: how long exec waits for a guest channel it has to connect first.
        detach_timeout: how long a hot-unplug waits for the guest to release the disk.
        """
        self._uri = uri
        self._prefix = domain_prefix
        self._run_dir = Path(run_dir)
        self._forced_virtualization = virtualization
        self._tcg_cpu_model = tcg_cpu_model
        self._tcg_kernel_args = tcg_kernel_args
        self._dac_label = dac_label
        self._guest_connect_timeout = guest_connect_timeout
        self._detach_timeout = detach_timeout
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._virtualization: str | None = None
        self._guests: dict[str, VirtioSerialChannel] = {}
        self._starting: set[str] = set()

    # -- HypervisorDriver ---------------------------------------------------------------------

    async def host_resources(self) -> HostResources:
        def call() -> HostResources:
            conn = self._connection()
            info = conn.getInfo()  # [model, memory MiB, cpus, MHz, nodes, sockets, cores, threads]
            # getInfo's memory is NUMA node memory, which can be less than the host's (memory
            # outside the nodes); the all-cells total is /proc/meminfo's MemTotal.
            try:
                memory_mib = int(conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)["total"]) // 1024
            except (libvirt.libvirtError, KeyError):
                memory_mib = int(info[1])
            return HostResources(
                vcpu_count=int(info[2]),
                memory_mib=memory_mib,
                virtualization=self._detect_virtualization(conn),
            )

        return await asyncio.to_thread(call)

    async def define_and_start(self, spec: DomainSpec) -> None:
        self._check_vm_id(spec.vm_id)
        name = self._domain_name(spec.vm_id)
        vm_dir = self._run_dir / spec.vm_id
        channels = ChannelPaths.in_dir(vm_dir)
        for path in channels.by_name().values():
            if len(str(path)) > _MAX_SOCKET_PATH:
                raise DriverError(f"socket path {path} is longer than {_MAX_SOCKET_PATH} bytes")
        if spec.vm_id in self._starting:
            raise DriverError(f"domain {name} is already being started")

        def call() -> None:
            conn = self._connection()
            try:
                existing = self._lookup(conn, name)
                if existing is not None:
                    if existing.isActive():
                        raise DriverError(f"domain {name} is already running")
                    LOG.info("undefining leftover inactive domain %s", name)
                    existing.undefine()
            except libvirt.libvirtError as exc:
                raise DriverError(f"preparing domain {name} failed: {exc}") from exc
            options = DomainXmlOptions(
                virtualization=self._detect_virtualization(conn),
                tcg_cpu_model=self._tcg_cpu_model,
                dac_label=self._dac_label,
            )
            domain_spec = spec
            if options.virtualization == "qemu" and spec.kernel_path is not None and self._tcg_kernel_args:
                domain_spec = replace(spec, cmdline=f"{spec.cmdline} {self._tcg_kernel_args}".strip())
            try:
                xml = domain_xml(domain_spec, name=name, options=options, channels=channels, console_log=vm_dir / "console.log")
                vm_dir.mkdir(parents=True, exist_ok=True)
                vm_dir.chmod(0o755)  # libvirt's QEMU user may need to reach it
                for path in channels.by_name().values():
                    path.unlink(missing_ok=True)
            except (ValueError, OSError) as exc:
                raise DriverError(f"preparing domain {name} failed: {exc}") from exc
            domain = None
            try:
                domain = conn.defineXML(xml)
                domain.create()
            except libvirt.libvirtError as exc:
                self._cleanup_failed(domain, name)
                shutil.rmtree(vm_dir, ignore_errors=True)
                raise start_failed(name, exc) from exc
            LOG.info("started domain %s (%s, %d vCPU, %d MiB)", name, options.virtualization, spec.vcpu_count, spec.memory_mib)

        self._starting.add(spec.vm_id)
        try:
            with _TRACER.start_as_current_span("libvirt.define_domain", attributes={"wnodes.vm_id": spec.vm_id}):
                await asyncio.to_thread(call)
        finally:
            self._starting.discard(spec.vm_id)

    async def destroy(self, vm_id: str) -> None:
        await self._end(vm_id, remove_files=True)

    async def stop(self, vm_id: str) -> None:
        await self._end(vm_id, remove_files=False)

    async def _end(self, vm_id: str, *, remove_files: bool) -> None:
        self._check_vm_id(vm_id)
        name = self._domain_name(vm_id)
        channel = self._guests.pop(vm_id, None)
        if channel is not None:
            await channel.close()

        def call() -> None:
            conn = self._connection()
            domain = self._lookup(conn, name)
            if domain is not None:
                try:
                    domain.destroy()
                except libvirt.libvirtError as exc:
                    # Not running (any more) is fine: stopped by itself or by a concurrent destroy.
                    if not _is_no_domain(exc) and self._is_active(domain):
                        raise DriverError(f"stopping domain {name} failed: {exc}") from exc
                try:
                    domain.undefine()
                except libvirt.libvirtError as exc:
                    if not _is_no_domain(exc):
                        raise DriverError(f"undefining domain {name} failed: {exc}") from exc
                LOG.info("%s domain %s", "destroyed" if remove_files else "stopped", name)
            if remove_files:
                shutil.rmtree(self._run_dir / vm_id, ignore_errors=True)

        span = "libvirt.destroy_domain" if remove_files else "libvirt.stop_domain"
        with _TRACER.start_as_current_span(span, attributes={"wnodes.vm_id": vm_id}):
            await asyncio.to_thread(call)

    async def suspend(self, vm_id: str) -> None:
        await self._pause_or_continue(vm_id, pause=True)

    async def resume(self, vm_id: str) -> None:
        await self._pause_or_continue(vm_id, pause=False)

    async def _pause_or_continue(self, vm_id: str, *, pause: bool) -> None:
        self._check_vm_id(vm_id)
        name = self._domain_name(vm_id)

        def call() -> None:
            domain = self._lookup(self._connection(), name)
            if domain is None:
                raise DomainNotFound(f"no domain {name}")
            try:
                state, _reason = domain.state()
                if pause and state != libvirt.VIR_DOMAIN_PAUSED:
                    # QEMU drains and flushes its block layer when it pauses: the disk files are
                    # consistent while the domain is paused.
                    domain.suspend()
                elif not pause and state == libvirt.VIR_DOMAIN_PAUSED:
                    domain.resume()
            except libvirt.libvirtError as exc:
                if _is_no_domain(exc):
                    raise DomainNotFound(f"no domain {name}") from exc
                raise DriverError(f"{'suspending' if pause else 'resuming'} domain {name} failed: {exc}") from exc
            LOG.info("%s domain %s", "suspended" if pause else "resumed", name)

        with _TRACER.start_as_current_span("libvirt.suspend_domain" if pause else "libvirt.resume_domain", attributes={"wnodes.vm_id": vm_id}):
            await asyncio.to_thread(call)

    async def attach_volume(self, vm_id: str, volume: VolumeSpec) -> None:
        self._check_vm_id(vm_id)
        name = self._domain_name(vm_id)

        def call() -> None:
            domain = self._lookup(self._connection(), name)
            if domain is None:
                raise DomainNotFound(f"no domain {name}")
            try:
                if _disk_with_source(domain, volume.path) is not None:
                    return  # attached before (an agent that died before it recorded so)
                domain.attachDeviceFlags(volume_xml(volume), libvirt.VIR_DOMAIN_AFFECT_LIVE)
            except libvirt.libvirtError as exc:
                raise DriverError(f"attaching {volume.path.name} to {name} as {volume.device} failed: {exc}") from exc
            LOG.info("attached %s to %s as %s", volume.path.name, name, volume.device)

        with _TRACER.start_as_current_span("libvirt.attach_volume", attributes={"wnodes.vm_id": vm_id}):
            await asyncio.to_thread(call)

    async def detach_volume(self, vm_id: str, volume: VolumeSpec) -> None:
        self._check_vm_id(vm_id)
        name = self._domain_name(vm_id)

        def still_attached(request: bool) -> bool:
            domain = self._lookup(self._connection(), name)
            disk = None if domain is None else _disk_with_source(domain, volume.path)
            if disk is not None and request:
                # Asks the guest to let go (ACPI eject); the disk leaves once it did.
                domain.detachDeviceFlags(disk, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            return disk is not None

        with _TRACER.start_as_current_span("libvirt.detach_volume", attributes={"wnodes.vm_id": vm_id}):
            try:
                if not await asyncio.to_thread(still_attached, True):
                    return
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self._detach_timeout
                while await asyncio.to_thread(still_attached, False):
                    if loop.time() > deadline:
                        raise DriverError(f"the guest of {name} did not release {volume.device} within {self._detach_timeout:.0f} s")
                    await asyncio.sleep(0.1)
            except libvirt.libvirtError as exc:
                raise DriverError(f"detaching {volume.path.name} from {name} failed: {exc}") from exc
        LOG.info("detached %s from %s", volume.path.name, name)

    async def export_disk(self, vm_id: str, disk: Path, out: Path, *, compress: bool = False) -> None:
        self._check_vm_id(vm_id)
        name = self._domain_name(vm_id)

        def pause_if_running() -> bool:
            domain = self._lookup(self._connection(), name)
            if domain is None or domain.state()[0] not in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
                return False
            # QEMU drains and flushes its block layer when it pauses: the files are consistent.
            domain.suspend()
            return True

        def resume() -> None:
            domain = self._lookup(self._connection(), name)
            if domain is not None:
                domain.resume()

        with _TRACER.start_as_current_span("libvirt.export_disk", attributes={"wnodes.vm_id": vm_id}):
            try:
                paused = await asyncio.to_thread(pause_if_running)
            except libvirt.libvirtError as exc:
                raise DriverError(f"pausing domain {name} for the copy failed: {exc}") from exc
            try:
                await flatten(disk, out, compress=compress)
            finally:
                if paused:
                    try:
                        await asyncio.to_thread(resume)
                    except libvirt.libvirtError as exc:
                        raise DriverError(f"resuming domain {name} after the copy failed: {exc}") from exc
            LOG.info("exported the disk of %s (%d bytes%s)", name, out.stat().st_size, ", compressed" if compress else "")

    async def list(self) -> list[DomainInfo]:
        def call() -> list[DomainInfo]:
            conn = self._connection()
            infos = []
            for domain in conn.listAllDomains(0):
                name = domain.name()
                if not name.startswith(self._prefix):
                    continue
                info = self._domain_info(name[len(self._prefix) :], domain)
                if info is not None:
                    infos.append(info)
            return sorted(infos, key=lambda i: i.vm_id)

        return await asyncio.to_thread(call)

    async def info(self, vm_id: str) -> DomainInfo:
        """The state of one domain; raises DomainNotFound."""
        self._check_vm_id(vm_id)

        def call() -> DomainInfo:
            domain = self._lookup(self._connection(), self._domain_name(vm_id))
            info = None if domain is None else self._domain_info(vm_id, domain)
            if info is None:
                raise DomainNotFound(f"no domain {self._domain_name(vm_id)}")
            return info

        return await asyncio.to_thread(call)

    def guest(self, vm_id: str) -> VirtioSerialChannel:
        self._check_vm_id(vm_id)
        channel = self._guests.get(vm_id)
        if channel is None:
            channel = VirtioSerialChannel(
                ChannelPaths.in_dir(self._run_dir / vm_id),
                name=self._domain_name(vm_id),
                connect_timeout=self._guest_connect_timeout,
            )
            self._guests[vm_id] = channel
        return channel

    async def close(self) -> None:
        guests, self._guests = self._guests, {}
        for channel in guests.values():
            await channel.close()

        def call() -> None:
            with self._conn_lock:
                conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except libvirt.libvirtError as exc:
                    LOG.debug("closing %s: %s", self._uri, exc)

        await asyncio.to_thread(call)

    # -- helpers (run in worker threads) ------------------------------------------------------

    def _connection(self) -> Any:
        with self._conn_lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                LOG.warning("libvirt connection to %s lost; reconnecting", self._uri)
            try:
                self._conn = libvirt.open(self._uri)
            except libvirt.libvirtError as exc:
                raise DriverError(f"cannot connect to libvirt at {self._uri}: {exc}") from exc
            return self._conn

    def _detect_virtualization(self, conn: Any) -> str:
        if self._virtualization is not None:
            return self._virtualization
        if self._forced_virtualization is not None:
            choice, reason = self._forced_virtualization, "set in the configuration"
        else:
            choice, reason = detect_host_virtualization()
            if choice == "kvm" and "<domain type='kvm'" not in conn.getCapabilities():
                choice, reason = "qemu", f"{reason}, but libvirt offers no kvm domains: TCG"
        self._virtualization = choice
        LOG.info("virtualization %s for %s: %s", choice, self._uri, reason)
        return choice

    @staticmethod
    def _lookup(conn: Any, name: str) -> Any:
        try:
            return conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if _is_no_domain(exc):
                return None
            raise DriverError(f"looking up domain {name} failed: {exc}") from exc

    @staticmethod
    def _is_active(domain: Any) -> bool:
        try:
            return bool(domain.isActive())
        except libvirt.libvirtError:
            return False

    @staticmethod
    def _domain_info(vm_id: str, domain: Any) -> DomainInfo | None:
        try:
            state, _reason = domain.state()
        except libvirt.libvirtError as exc:
            if _is_no_domain(exc):
                return None  # gone between listing and asking
            raise DriverError(f"state of domain {domain.name()}: {exc}") from exc
        return DomainInfo(
            vm_id=vm_id,
            running=state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED),
            paused=state == libvirt.VIR_DOMAIN_PAUSED,
            detail=_STATES.get(state, f"state {state}"),
        )

    @staticmethod
    def _cleanup_failed(domain: Any, name: str) -> None:
        if domain is None:
            return
        for step in (lambda: domain.isActive() and domain.destroy(), domain.undefine):
            try:
                step()
            except libvirt.libvirtError as exc:
                if not _is_no_domain(exc):
                    LOG.warning("cleaning up failed domain %s: %s", name, exc)

    def _domain_name(self, vm_id: str) -> str:
        return f"{self._prefix}{vm_id}"

    @staticmethod
    def _check_vm_id(vm_id: str) -> None:
        # The id names the domain and its files: the nameserver's rule, which every minted id passes.
        if not names.is_resource_id(vm_id):
            raise DriverError(f"invalid vm_id {vm_id!r}: 1-63 characters of a-z, 0-9, '-'")
