"""The hypervisor agent's control loop: make this host run what the registry says it should.

Level-triggered: on start, on every change under ``placements/<host>/`` and every few seconds,
it compares the VMs placed here with the domains the driver reports and converges. The lease,
the watch and the periodic pass belong to the process's ``HostGroup`` (host_group.py), which
one agent process shares between all the hosts it serves (one real host, or thousands of
simulated ones); this module is what happens on one host. After a crash
it adopts running domains that are still wanted (reconnecting their guest channels) and destroys
the rest, so nothing leaks. Each VM is handled by one task at a time.

Power actions arrive the same way: the nameserver writes the power state the owner wants (and a
new generation) in the VM record and touches its placement key; power.py carries them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate

from services.common import records, telemetry
from services.common.errors import (
    FailedPrecondition,
    Unavailable,
    WnodesError,
    error_to_dict,
)
from services.common.group_commit import GroupCommit
from services.common.keys import Keys
from services.common.records import HypervisorRecord, ImageRecord, VmRecord, VmState
from services.common.store import Entry, Store
from services.hypervisor.drivers.base import (
    DomainInfo,
    DomainSpec,
    DriverError,
    GuestChannel,
    HostForwardUnavailable,
    HypervisorDriver,
    PortForward,
    UserNetworkSpec,
)
from services.hypervisor.drivers.qemu_img import create_overlay
from services.hypervisor.guest_tasks import contextualise, sync_guest
from services.hypervisor.image_cache import CachedImage, ImageCache
from services.hypervisor.imagestore_client import ImagestoreClient
from services.hypervisor.power import PowerActions
from services.hypervisor.saving import DiskSaver, SaveRequest
from services.hypervisor.ssh_access import SSH_GUEST_PORT, SshPorts, port_of
from services.hypervisor.tracking import NO_DOMAIN, RUNNING, VmTracker, condition_of, find_domain
from services.hypervisor.vm_records import VmRecords
from services.hypervisor.volumes import VolumeAttacher
from services.hypervisor.volumes import pending as volumes_pending

LOG = logging.getLogger(__name__)
# The value the nameserver writes on a placement key when the VM is to be deleted.
DELETE_MARK = b"delete"
TRACER = telemetry.tracer(__name__)


@dataclass(frozen=True)
class AgentConfig:
    host: str
    """This hypervisor's name in the registry."""
    endpoint: str
    """Where the gateway reaches this agent's gRPC API."""
    run_dir: Path
    """Per-VM files (overlays, sockets, console logs) live in run_dir/<vm id>/."""
    volume_dir: Path
    """The data of the volumes pinned to this host: volume_dir/<volume id>.qcow2."""
    ready_timeout: float = 180.0
    """Seconds a guest has to signal readiness before the VM is FAILED."""
    cpu_allocation_ratio: float = 1.0
    """Virtual CPUs offered per physical CPU (Nova's cpu_allocation_ratio). 1.0 suits batch
    nodes whose cores the LRMS accounts; cloud and test hosts overcommit."""
    sync_timeout: float = 30.0
    """Seconds a guest has to sync its file systems before it is stopped (then it is stopped
    anyway: a hung guest must not block its owner's stop)."""
    ssh_ports: tuple[int, int] = (22000, 22999)
    """Host ports (on 127.0.0.1) forwarded to the SSH servers of this host's VMs."""
    contextualise_timeout: float = 60.0
    """Seconds the guest has to install the owner's keys and user data and start sshd."""
    save_compress: bool = True
    """Saved disks are compressed qcow2 (smaller in the imagestore and in every host's cache)."""


async def _nothing() -> None:
    return None
def _with_endpoint(endpoint: str) -> Callable[[VmRecord], bool]:
    def mutate(rec: VmRecord) -> bool:
        rec.ssh_endpoint = endpoint
        return True

    return mutate


class Agent:
    def __init__(
        self, cfg: AgentConfig, store: Store, keys: Keys, driver: HypervisorDriver, cache: ImageCache | None,
        imagestore: ImagestoreClient | None = None, commits: GroupCommit | None = None,
    ) -> None:
        self.cfg = cfg
        self._store = store
        self._keys = keys
        self.driver = driver
        self._cache = cache
        self._vms = VmTracker(cfg.host)
        # Reads and writes of VM records go through group commit (shared by the process's hosts).
        self._commits = commits or GroupCommit(store)
        self._record: HypervisorRecord | None = None
        self._recheck = False
        self._background: set[asyncio.Task[None]] = set()
        self._images: dict[str, ImageRecord] = {}
        self._ssh_ports = SshPorts(*cfg.ssh_ports)
        self._saver = DiskSaver(driver, imagestore, compress=cfg.save_compress)
        self._records = VmRecords(store, keys, cfg.host, self._commits)
        self._volumes = VolumeAttacher(store, keys, driver, cfg.volume_dir)
        self._power = PowerActions(
            cfg.host, driver, self._records, self._vms, sync_timeout=cfg.sync_timeout,
            start=self._start, fail=self._fail, request_pass=lambda: self.request_pass(),
        )
        # Set by the HostGroup: ask for a convergence pass of this host; publish its record.
        self.request_pass: Callable[[], None] = lambda: None
        self.publish: Callable[[], Awaitable[None]] = _nothing

    # --- registration ---------------------------------------------------------------------

    async def prepare(self) -> HypervisorRecord:
        """This host's record, from what the driver reports (the HostGroup registers it)."""
        res = await self.driver.host_resources()
        schedulable = int(res.vcpu_count * self.cfg.cpu_allocation_ratio)
        LOG.debug(
            "hypervisor %s: %d vCPUs (%d schedulable at allocation ratio %.1f), %d MiB, virtualization %s",
            self.cfg.host, res.vcpu_count, schedulable, self.cfg.cpu_allocation_ratio, res.memory_mib, res.virtualization,
        )
        self._record = HypervisorRecord(
            name=self.cfg.host,
            endpoint=self.cfg.endpoint,
            vcpu_count=schedulable,
            memory_mib=res.memory_mib,
            virtualization=res.virtualization,
        )
        return self._record

    async def stop(self) -> None:
        for tracked in self._vms.all():
            if tracked.task:
                tracked.task.cancel()
        for t in [tr.task for tr in self._vms.all() if tr.task] + list(self._background):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # --- the loop -------------------------------------------------------------------------

    def on_placement(self, vm_id: str, placement: bytes) -> None:
        """A placement key of this host was written (the HostGroup's watch saw it)."""
        task = asyncio.create_task(self._on_change(vm_id, placement))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def lease_lost(self) -> None:
        """Our lease expired (the host was cut off, or paused) and was granted again: meanwhile
        the reconciler marked our VMs UNKNOWN, so every VM is checked again, settled or not."""
        self._recheck = True  # the HostGroup's full pass, which follows, checks them

    async def converge(self, wanted: dict[str, bytes]) -> None:
        """One full pass over what the registry places here (vm id -> placement value, read
        by the HostGroup): wanted VMs get handled, unwanted domains get destroyed."""
        recheck, self._recheck = self._recheck, False
        domains = await self.driver.list()
        observed = {d.vm_id: condition_of(d) for d in domains}
        for vm_id, placement in wanted.items():
            if not recheck and placement != DELETE_MARK and self._vms.settled(vm_id, placement, observed.get(vm_id, NO_DOMAIN)):
                continue  # settled: nothing asked of it since it reached its state, and its domain is still so
            self._ensure(vm_id, placement)
        for dom in domains:
            if dom.vm_id not in wanted and dom.vm_id not in self._vms:
                LOG.warning("hypervisor %s: destroying %s, which the registry does not place here", self.cfg.host, dom.vm_id)
                await self._teardown_files(dom.vm_id)
        for leftover in self._orphan_dirs(wanted):
            LOG.warning("hypervisor %s: removing leftover files of %s", self.cfg.host, leftover)
            await self._teardown_files(leftover)
        await self._volumes.collect_garbage()

    def _orphan_dirs(self, wanted: dict[str, bytes]) -> list[str]:
        if not self.cfg.run_dir.exists():
            return []
        return [p.name for p in self.cfg.run_dir.iterdir() if p.is_dir() and p.name.startswith("vm-") and p.name not in wanted and p.name not in self._vms]

    def _ensure(self, vm_id: str, placement: bytes | None = None) -> None:
        tracked = self._vms.entry(vm_id)
        if placement is not None:
            tracked.placement = placement
        if tracked.task is None or tracked.task.done():
            tracked.dirty = False
            tracked.task = asyncio.create_task(self._handle_logged(vm_id))
            tracked.task.add_done_callback(lambda _t: self._after(vm_id))
        else:
            tracked.dirty = True

    def _after(self, vm_id: str) -> None:
        tracked = self._vms.get(vm_id)
        if tracked is not None and tracked.dirty:
            self._ensure(vm_id)

    async def _on_change(self, vm_id: str, placement: bytes) -> None:
        """A deletion must not wait for a boot in progress: cancel it, then tear down. The
        nameserver marks a placement DELETE_MARK when the VM is to go (no read needed here)."""
        tracked = self._vms.get(vm_id)
        if placement == DELETE_MARK and tracked is not None and tracked.task is not None and not tracked.task.done():
            tracked.task.cancel()
        self._ensure(vm_id, placement)

    async def _handle_logged(self, vm_id: str) -> None:
        try:
            await self._handle(vm_id)
        except WnodesError as exc:  # etcd unavailable or slow: the next pass tries again
            LOG.warning("hypervisor %s: handling virtualMachines/%s failed (%s); the next pass retries", self.cfg.host, vm_id, exc.message)
            tracked = self._vms.get(vm_id)
            if tracked is not None:
                tracked.steady = None

    async def _handle(self, vm_id: str) -> None:
        """Brings one VM to what its record asks for."""
        tracked = self._vms.get(vm_id)
        if tracked is not None:
            tracked.handling = tracked.placement
        entry = await self._commits.get(self._keys.vm(vm_id))
        if entry is None:
            await self._forget(vm_id, None)
            return
        vm = records.load(VmRecord, entry.value)
        if vm.ssh_endpoint:
            self._ssh_ports.note(vm.id, vm.ssh_endpoint)
        if vm.state == VmState.DELETING:
            await self._forget(vm_id, vm)
            return
        if vm.state == VmState.FAILED:
            await self._release(vm_id, vm, delete_record=False)
            return
        if vm.state in (VmState.SCHEDULED, VmState.STARTING):
            await self._start(vm, entry)
        elif vm.power_pending:
            await self._power.apply(vm, entry)
        elif vm.state in (VmState.ACTIVE, VmState.UNKNOWN):
            await self._adopt(vm)
        elif vm.state == VmState.SUSPENDED:
            await self._power.keep_suspended(vm)
        elif vm.state == VmState.STOPPED:
            await self._power.keep_stopped(vm)
        if vm.pending_save or volumes_pending(vm):
            await self._settled_work(vm_id)

    async def _domain(self, vm_id: str) -> DomainInfo | None:
        return await find_domain(self.driver, vm_id)

    # --- start ----------------------------------------------------------------------------

    async def _start(self, vm: VmRecord, entry: Entry) -> None:
        parent = propagate.extract(vm.trace_context)
        token = otel_context.attach(parent)
        started = time.monotonic()
        try:
            with TRACER.start_as_current_span("hypervisor.start_vm", attributes={"vm": vm.name, "host": self.cfg.host}):
                # A start or restart asked for (a power generation not yet applied) boots the disk
                # afresh; otherwise a domain found here is one a previous agent started.
                fresh_boot = vm.power_pending
                if fresh_boot:
                    self._vms.unsteady(vm.id)
                    await sync_guest(self.driver, vm, await self._domain(vm.id), self.cfg.sync_timeout)  # a restart keeps what the guest wrote
                    await self.driver.stop(vm.id)
                elif vm.state == VmState.STARTING and await self._domain(vm.id) is not None:
                    await self._adopt(vm)  # the previous agent got this far before it died
                    return
                endpoint = self._ssh_ports.assign(vm.id, vm.ssh_endpoint) if vm.ssh_public_keys else ""
                starting = await self._records.transition(
                    vm.id, VmState.STARTING, "preparing image and domain", expect={VmState.SCHEDULED, VmState.STARTING},
                    mutate=_with_endpoint(endpoint), known=entry,
                )
                if starting is None:
                    return
                with TRACER.start_as_current_span("image_cache.ensure"):
                    image = await self._image(vm)
                with TRACER.start_as_current_span("driver.define_and_start"):
                    endpoint = await self._define_and_start(vm, image, endpoint)
                with TRACER.start_as_current_span("guest.wait_ready"):
                    ready = await self.driver.guest(vm.id).wait_ready(self.cfg.ready_timeout)
                if vm.ssh_public_keys or vm.user_data:
                    with TRACER.start_as_current_span("guest.contextualise"):
                        await contextualise(self.driver, vm, self.cfg.contextualise_timeout)
                boot = time.monotonic() - started
                # Work waiting for this guest (an Exec) may start now; the registry follows.
                self._vms.steady(vm.id, RUNNING)
                virtualization = self._record.virtualization if self._record else ""

                def activate(rec: VmRecord) -> bool:
                    rec.boot_seconds, rec.virtualization = boot, virtualization
                    rec.state_message = f"guest ready ({ready.kernel_release})" + (f"; ssh on {endpoint}" if endpoint else "")
                    rec.power_applied = max(rec.power_applied, vm.power_generation)
                    return True

                if await self._records.transition(vm.id, VmState.ACTIVE, "", expect={VmState.STARTING}, mutate=activate, known=starting):
                    LOG.info("%s ACTIVE on %s in %.2fs (%s)", vm.name, self.cfg.host, boot, virtualization)
                else:
                    self.request_pass()  # deleted or failed meanwhile: the next pass cleans up
        except asyncio.CancelledError:
            raise
        except Unavailable as exc:
            # etcd or the imagestore did not answer (a member died, a batch timed out, a blob
            # transfer broke): nothing is wrong with the VM. Its record still says SCHEDULED or
            # STARTING, so the next pass picks it up again (adopting the domain if it got that
            # far, resuming the transfer from what was written) instead of failing it.
            LOG.warning("%s: a service did not answer while starting it on %s (%s); the next pass retries", vm.name, self.cfg.host, exc.message)
            self._vms.unsteady(vm.id)
        except Exception as exc:
            await self._fail(vm, exc)
        finally:
            otel_context.detach(token)

    async def _image_record(self, image_version: str) -> ImageRecord:
        image = self._images.get(image_version)
        if image is None:  # a version's blobs and boot parameters never change: read it once
            name, version = image_version.removeprefix("images/").split("/versions/")
            entry = await self._store.get(self._keys.image_version(name, int(version)))
            if entry is None:
                raise FailedPrecondition(f"{image_version} vanished from the catalogue", reason="IMAGE_NOT_FOUND")
            image = self._images[image_version] = records.load(ImageRecord, entry.value)
        return image

    async def _image(self, vm: VmRecord) -> CachedImage | None:
        image = await self._image_record(vm.image_version)
        cached = await self._cache.ensure(image, holder=vm.id) if self._cache else None
        await self.note_cached(vm.image_version)
        return cached

    async def note_cached(self, image_version: str) -> None:
        """Advertises that this host's cache holds the version (placement prefers such hosts)."""
        if self._record is not None and image_version not in self._record.cached_images:
            self._record.cached_images = sorted({*self._record.cached_images, image_version})
            try:
                await self.publish()
            except WnodesError as exc:  # only a scheduling hint: the VM boots anyway
                LOG.warning("hypervisor %s: publishing its cached images failed: %s", self.cfg.host, exc.message)

    async def _define_and_start(self, vm: VmRecord, image: CachedImage | None, endpoint: str) -> str:
        """Starts the domain; returns the SSH endpoint it got. A forward port that something
        else took since it was chosen (QEMU cannot bind it) is chosen again, once."""
        try:
            await self.driver.define_and_start(await self._domain_spec(vm, image, endpoint))
            return endpoint
        except HostForwardUnavailable:
            if not endpoint:
                raise
            LOG.warning("%s: SSH port %s was taken; choosing another", vm.name, endpoint)
            endpoint = self._ssh_ports.assign(vm.id)
            if await self._records.transition(vm.id, VmState.STARTING, "", expect={VmState.STARTING}, mutate=_with_endpoint(endpoint)) is None:
                raise
            await self.driver.define_and_start(await self._domain_spec(vm, image, endpoint))
            return endpoint

    async def _domain_spec(self, vm: VmRecord, image: CachedImage | None, ssh_endpoint: str = "") -> DomainSpec:
        vm_dir = self.cfg.run_dir / vm.id
        vm_dir.mkdir(parents=True, exist_ok=True)
        disk = vm_dir / "disk.qcow2"
        if image is not None and not disk.exists():  # a stopped VM boots the disk it had
            await create_overlay(image.disk, disk)
        cmdline = f"{image.cmdline} wnodes.hostname={vm.hostname}".strip() if image else ""
        return DomainSpec(
            vm_id=vm.id,
            vcpu_count=vm.vcpu_count,
            memory_mib=vm.memory_mib,
            disk_path=disk,
            hostname=vm.hostname,
            mac_address=vm.mac_address,
            kernel_path=image.kernel if image else None,
            initrd_path=image.initrd if image else None,
            cmdline=cmdline,
            volumes=self._volumes.boot_specs(vm),
            user_network=UserNetworkSpec(vm.mac_address, (PortForward(port_of(ssh_endpoint), SSH_GUEST_PORT),)) if ssh_endpoint else None,
        )

    async def _fail(self, vm: VmRecord, exc: BaseException) -> None:
        err = exc if isinstance(exc, WnodesError) else FailedPrecondition(f"{type(exc).__name__}: {exc}", reason="VM_START_FAILED")
        if isinstance(exc, DriverError):
            err = FailedPrecondition(str(exc), reason="VM_START_FAILED")
        LOG.error("%s FAILED on %s: %s", vm.name, self.cfg.host, err.message)
        with contextlib.suppress(Exception):
            await self.driver.destroy(vm.id)

        def record_error(rec: VmRecord) -> bool:
            rec.error = error_to_dict(err)
            return True

        await self._records.transition(
            vm.id, VmState.FAILED, err.message, mutate=record_error,
            expect={VmState.SCHEDULED, VmState.STARTING, VmState.ACTIVE, VmState.UNKNOWN, VmState.STOPPED, VmState.SUSPENDED},
        )
        tracked = self._vms.get(vm.id)
        if tracked:
            tracked.failed = err.message
        self.request_pass()

    # --- save -----------------------------------------------------------------------------

    async def _settled_work(self, vm_id: str) -> None:
        """Work on a VM that stays where it is: volumes to attach or detach, a save."""
        entry = await self._commits.get(self._keys.vm(vm_id))
        vm = records.load(VmRecord, entry.value) if entry else None
        if vm is None or vm.power_pending or vm.state not in (VmState.ACTIVE, VmState.SUSPENDED, VmState.STOPPED):
            return
        tracked = self._vms.get(vm_id)
        steady = tracked.steady if tracked else None
        if tracked:
            tracked.steady = None  # a periodic pass handles the VM again until the work is recorded
        if volumes_pending(vm):
            await self._volumes.converge(vm, live=vm.state != VmState.STOPPED)
        if vm.pending_save and not await self._save(vm):
            return
        if tracked:
            tracked.steady = steady

    async def _save(self, vm: VmRecord) -> bool:
        """Carries out the save the record asks for and writes its outcome into its operation;
        whether that was recorded."""
        op_id, image = str(vm.pending_save.get("operation", "")), str(vm.pending_save.get("image", ""))
        outcome: dict[str, Any]
        try:
            with TRACER.start_as_current_span("hypervisor.save_vm", attributes={"vm": vm.name, "image": image}):
                if vm.state == VmState.ACTIVE:
                    await sync_guest(self.driver, vm, await self._domain(vm.id), self.cfg.sync_timeout)
                vm_dir = self.cfg.run_dir / vm.id
                request = SaveRequest(vm, image, await self._image_record(vm.image_version), vm_dir / "disk.qcow2", vm_dir, op_id)
                outcome = {"result": {"image_version": await self._saver.save(request)}}
        except (DriverError, WnodesError) as exc:
            err = exc if isinstance(exc, WnodesError) else FailedPrecondition(str(exc), reason="SAVE_FAILED")
            LOG.error("%s: saving to images/%s failed: %s", vm.name, image, err.message)
            outcome = {"error": error_to_dict(err)}
        return await self._records.finish_save(vm.id, op_id, outcome)

    # --- adopt ----------------------------------------------------------------------------

    async def _adopt(self, vm: VmRecord) -> None:
        """A VM that should run here: check its domain is there and its guest answers."""
        if self._cache and vm.image_version:  # its disk is backed by a cached blob: never evict it
            self._cache.hold(vm.id, await self._image_record(vm.image_version))
        domain = await self._domain(vm.id)
        if domain is not None and domain.paused:
            # Left paused by an agent that died while it held the VM still (suspend, save).
            await self.driver.resume(vm.id)
        elif domain is None or not domain.running:
            await self._fail(vm, DriverError(f"the domain of {vm.name} is gone (it crashed or the host restarted)"))
            return
        message = "guest ready (adopted again after an agent restart or a lost link to the control plane)"
        try:
            await self.driver.guest(vm.id).wait_ready(min(self.cfg.ready_timeout, 30.0))
        except DriverError as exc:
            if not vm.boot_seconds:  # it never booted: a boot that failed
                await self._fail(vm, exc)
                return
            # It was ready before: its guest agent answers nothing while it runs a command (a
            # job started before the agent restart). Keep it; never kill a VM that should live.
            message = "adopted after an agent restart; the guest is busy with an earlier command"
            LOG.warning("%s: %s", vm.name, message)
        if vm.state != VmState.ACTIVE:
            await self._records.transition(vm.id, VmState.ACTIVE, message, expect={VmState.STARTING, VmState.UNKNOWN, VmState.SCHEDULED})
            LOG.info("%s adopted on %s", vm.name, self.cfg.host)
        self._vms.steady(vm.id, RUNNING)

    # --- delete ---------------------------------------------------------------------------

    async def _forget(self, vm_id: str, vm: VmRecord | None) -> None:
        await self._teardown_files(vm_id)
        if vm is not None:
            await self._volumes.release(vm)
        await self._release(vm_id, vm, delete_record=True)
        self._vms.forget(vm_id)
        if self._cache:
            self._cache.release(vm_id)  # its image may now be evicted
        self._ssh_ports.release(vm_id)
        LOG.info("virtualMachines/%s removed from %s", vm_id, self.cfg.host)

    async def _teardown_files(self, vm_id: str) -> None:
        await self.driver.destroy(vm_id)
        shutil.rmtree(self.cfg.run_dir / vm_id, ignore_errors=True)

    async def _release(self, vm_id: str, vm: VmRecord | None, *, delete_record: bool) -> None:
        """Frees the VM's share of the host (and its record and leases with delete_record; a
        FAILED VM keeps its record, to show why)."""
        if not delete_record:
            await self._teardown_files(vm_id)
        await self._records.release(vm_id, vm, delete_record=delete_record)

    # --- the guest, for Exec --------------------------------------------------------------

    def owns(self, vm_id: str) -> bool:
        return vm_id in self._vms

    async def ready_guest(self, vm_id: str, timeout: float) -> GuestChannel:
        """The guest channel of a VM of this host, once its guest is ready."""
        await self._vms.wait_ready(vm_id, timeout)
        return self.driver.guest(vm_id)
