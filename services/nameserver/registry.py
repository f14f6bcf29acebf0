"""The registry: VMs, their placement, hostname and MAC leases, and what their owners ask of
them (delete, power actions, save, labels, commands). How far an operation has got is
``operation_views``'s to say; volumes and networks have registries of their own.

Stateless: everything lives in etcd, so any replica serves any call. Placement is one etcd
transaction that writes the VM, its placement, its leases, the operation and the request id
together, guarded by the host's usage revision and by the request id's absence. Two replicas
placing at once cannot both win on one host, and a retried request finds its first operation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field

from services.common import records
from services.common.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    WnodesError,
)
from services.common.group_commit import GroupCommit
from services.common.identity import Principal
from services.common.image_catalog import ImageCatalog
from services.common.keys import Keys
from services.common.names import VM, new_id, parse_image
from services.common.pagination import decode_key_token, encode_key_token, page_size_of
from services.common.records import (
    HostUsage,
    HypervisorRecord,
    NameserverRecord,
    OperationRecord,
    VmRecord,
    VmState,
)
from services.common.store import Compare, Delete, Entry, Put, Store, TxnItem
from services.nameserver import power, validation
from services.nameserver.access import load_vm, may_see
from services.nameserver.addressing import SubnetPool
from services.nameserver.exec_target import ExecTarget, exec_target
from services.nameserver.host_cache import HostCache
from services.nameserver.networks import NetworkRegistry
from services.nameserver.operation_views import OperationViews
from services.nameserver.operations import CREATE_OPERATION, OperationView, create_operation, new_operation
from services.nameserver.scheduling.host_state import PlacementRequest
from services.nameserver.scheduling.scheduler import Scheduler
from services.nameserver.volumes import VolumeRegistry, parse_volume_name

LOG = logging.getLogger(__name__)

PLACEMENT_ATTEMPTS = 8
# Records a user's list examines per call at most (it skips others' VMs without decoding them).
LIST_SCAN_BUDGET = 5000


@dataclass
class VmSpec:
    """What a caller asks for."""

    image: str
    vcpu_count: int
    memory_mib: int
    labels: dict[str, str] = field(default_factory=dict)
    user_data: bytes = b""
    bandwidth_mbps: int = 0
    pinned_hypervisor: str = ""
    ssh_public_keys: list[str] = field(default_factory=list)
    # "volumes/{id}" names: the VM is pinned to the host holding their data (they are attached
    # by AttachVolume once it runs).
    volumes: list[str] = field(default_factory=list)


# States from which a VM can be saved or have power actions: it is settled on its host.
SETTLED = (VmState.ACTIVE, VmState.SUSPENDED, VmState.STOPPED)


@dataclass
class HypervisorView:
    record: HypervisorRecord | None
    name: str
    usage: HostUsage
    up: bool


class Registry:
    def __init__(
        self, store: Store, keys: Keys, scheduler: Scheduler, hosts: HostCache, subnet_pool: SubnetPool | None = None
    ) -> None:
        self._store = store
        self._keys = keys
        self._scheduler = scheduler
        self._hosts = hosts
        self._images = ImageCatalog(store, keys, cache_seconds=1.0)
        self.operations = OperationViews(store, keys)
        self.volumes = VolumeRegistry(store, keys, self.operations)
        self.networks = NetworkRegistry(store, keys, subnet_pool)
        self._commits = GroupCommit(store)
        # Hosts this replica is placing a VM on right now: others are preferred meanwhile.
        self._in_flight: dict[str, int] = {}

    # --- create ---------------------------------------------------------------------------

    async def create_vm(
        self, spec: VmSpec, principal: Principal, request_id: str, trace_context: dict[str, str]
    ) -> OperationView:
        """Places a new VM; returns its create operation (the first one, for a retried request)."""
        validation.check_request_id(request_id)
        image, version = parse_image(spec.image)
        validation.check_size(spec.vcpu_count, spec.memory_mib)
        validation.check_labels(spec.labels)
        validation.check_user_data(spec.user_data)
        ssh_keys = validation.check_ssh_public_keys(spec.ssh_public_keys)
        volume_ids = [parse_volume_name(v) for v in spec.volumes]
        request_id = request_id or uuid.uuid4().hex
        pinned = spec.pinned_hypervisor.removeprefix("hypervisors/")
        # No read of the request id first: the placement transaction compares its absence, and
        # only a create that cannot go ahead (a retry, or a refusal) looks for an earlier one.
        try:
            image_record = await self._images.resolve(image, version, principal)
            if volume_ids:
                pinned = await self.volumes.pin_for(volume_ids, pinned, principal)
        except WnodesError as exc:
            return await self._earlier_or_raise(exc, request_id, principal)
        vm_id = new_id(VM)
        vm = VmRecord(
            id=vm_id,
            image=f"images/{image}",
            image_version=image_record.name,
            vcpu_count=spec.vcpu_count,
            memory_mib=spec.memory_mib,
            owner_user=principal.user,
            owner_vo=principal.vo,
            hostname=f"vwn-{vm_id[3:]}",
            mac_address=_random_mac(),
            labels=dict(spec.labels),
            user_data=base64.b64encode(spec.user_data).decode(),
            ssh_public_keys=ssh_keys,
            bandwidth_mbps=spec.bandwidth_mbps,
            pinned_hypervisor=pinned,
            request_id=request_id,
            trace_context=trace_context,
        )
        op = create_operation(vm_id)
        try:
            placed = await self._place(vm, op)
        except WnodesError as exc:
            return await self._earlier_or_raise(exc, request_id, principal)
        if placed is not None:  # a retry, or another replica won with the same request id
            return await self.operations.get(placed.name, principal)
        LOG.info("placed %s (%s, %d vCPU, %d MiB) on %s", vm.name, vm.image_version, vm.vcpu_count, vm.memory_mib, vm.hypervisor)
        return OperationView(op, done=False, vm=vm)

    async def _earlier_or_raise(self, exc: WnodesError, request_id: str, principal: Principal) -> OperationView:
        """A create that cannot go ahead may be the retry of one that did: answer with its
        operation. Not when etcd is unavailable (the look-up would only wait as long again)."""
        if not isinstance(exc, Unavailable) and (existing := await self._existing_request(request_id)):
            return await self.operations.get(existing.name, principal)
        raise exc

    async def _existing_request(self, request_id: str) -> OperationRecord | None:
        entry = await self._store.get(self._keys.request(request_id))
        return None if entry is None else await self._operation_of(entry)

    async def _place(self, vm: VmRecord, op: OperationRecord) -> OperationRecord | None:
        """Places the VM in one transaction (sent with others through group commit); returns
        the operation of an earlier request with the same id instead, if there is one."""
        req = PlacementRequest(vm.vcpu_count, vm.memory_mib, vm.image_version, vm.pinned_hypervisor)
        for _attempt in range(PLACEMENT_ATTEMPTS):
            ranked = self._scheduler.select(self._hosts.index, req, avoid=self._in_flight.keys())
            for host in ranked[:3]:
                usage, entry = self._hosts.usage.get(host.name, (HostUsage(), None))
                # The cache may have moved on since select(): the fit must hold for exactly the
                # usage revision the transaction compares, or a host could be overbooked.
                if not self._scheduler.fits(host.with_usage(usage.vcpus_used, usage.memory_mib_used), req):
                    continue
                usage = HostUsage(usage.vcpus_used, usage.memory_mib_used, dict(usage.vms))
                usage.add(vm.id, vm.vcpu_count, vm.memory_mib)
                vm.hypervisor, vm.state = host.name, VmState.SCHEDULED
                vm.state_message = f"placed on {host.name}"
                vm.update_time = time.time()
                usage_key, request_key, mac_key = self._keys.usage(host.name), self._keys.request(vm.request_id), self._keys.mac_lease(vm.mac_address)
                self._in_flight[host.name] = self._in_flight.get(host.name, 0) + 1
                try:
                    outcome = await self._commits.txn(TxnItem(
                        [
                            Compare.unchanged(entry, usage_key),
                            Compare(request_key, 0),
                            Compare(mac_key, 0),
                            Compare(self._keys.hostname_lease(vm.hostname), 0),
                        ],
                        [
                            Put(usage_key, records.dump(usage)),
                            Put(self._keys.vm(vm.id), records.dump(vm)),
                            Put(self._keys.placement(host.name, vm.id), vm.id.encode()),
                            Put(request_key, op.id.encode()),
                            Put(mac_key, vm.id.encode()),
                            Put(self._keys.hostname_lease(vm.hostname), vm.id.encode()),
                        ],
                        # why it failed, read in the same round trip
                        reads_on_failure=[request_key, usage_key, mac_key, self._keys.hostname_lease(vm.hostname)],
                    ))
                finally:
                    left = self._in_flight.pop(host.name) - 1
                    if left:
                        self._in_flight[host.name] = left
                if outcome.succeeded:
                    self._hosts.note_usage(host.name, usage, Entry(usage_key, b"", outcome.revision, 0))
                    return None
                request, fresh, mac, hostname = outcome.reads
                if request is not None:
                    return await self._operation_of(request)
                if fresh is not None:
                    self._hosts.note_usage(host.name, records.load(HostUsage, fresh.value), fresh)
                if mac is not None:
                    vm.mac_address = _random_mac()
                if hostname is not None:  # another VM has this id (40 random bits): take another
                    vm.id = new_id(VM)
                    vm.hostname = f"vwn-{vm.id[3:]}"
                    op.id, op.vm_id = CREATE_OPERATION + vm.id, vm.id
            await asyncio.sleep(0.005 * (1 + secrets.randbelow(10)))
        raise Unavailable("placement kept conflicting with concurrent requests; retry with the same request_id")

    async def _operation_of(self, request: Entry) -> OperationRecord:
        op = await self.operations.load(request.value.decode())
        if op is None:
            raise FailedPrecondition(f"request_id {request.key.rsplit('/', 1)[-1]} was used by an operation that has expired")
        return op

    # --- delete ---------------------------------------------------------------------------

    async def delete_vm(self, vm_id: str, principal: Principal, request_id: str) -> OperationRecord:
        validation.check_request_id(request_id)
        while True:
            entry, vm = await self._load_vm(vm_id, principal)
            if vm.networks:  # its interfaces go first, freeing their leases; then read it again
                await self.networks.release_vm(vm)
                continue
            op = new_operation("delete", vm_id, principal)
            if not vm.hypervisor:  # never placed: nothing runs, drop it here
                ok, _ = await self._store.txn(
                    [Compare(entry.key, entry.mod_revision)],
                    [Delete(entry.key), Put(self._keys.operation(op.id), records.dump(op)), *self._lease_deletes(vm)],
                )
            elif vm.state == VmState.DELETING:
                return await self._existing_delete_op(vm) or op
            else:
                vm.state, vm.state_message, vm.update_time = VmState.DELETING, "deletion requested", time.time()
                vm.labels["wnodes.delete_operation"] = op.id
                ok, _ = await self._store.txn(
                    [Compare(entry.key, entry.mod_revision)],
                    [
                        Put(entry.key, records.dump(vm)),
                        Put(self._keys.operation(op.id), records.dump(op)),
                        # tells the agent's watch, without a read, to stop any boot and tear down
                        Put(self._keys.placement(vm.hypervisor, vm.id), b"delete"),
                    ],
                )
            if ok:
                LOG.info("deletion of %s requested (%s)", vm.name, op.name)
                return op

    async def _existing_delete_op(self, vm: VmRecord) -> OperationRecord | None:
        return await self.operations.load(vm.labels.get("wnodes.delete_operation", ""))

    def _lease_deletes(self, vm: VmRecord) -> list[Put | Delete]:
        return [Delete(self._keys.mac_lease(vm.mac_address)), Delete(self._keys.hostname_lease(vm.hostname))]

    # --- power actions --------------------------------------------------------------------

    async def power_action(self, vm_id: str, principal: Principal, action: power.PowerAction) -> OperationView:
        """Records the power state the owner wants and wakes the VM's agent, which carries it out.

        One action at a time per VM: asking again for the action in flight returns its operation
        (a retry is harmless); asking for another one fails until it is done."""
        while True:
            entry, vm = await self._load_vm(vm_id, principal)
            if vm.pending_save:
                raise FailedPrecondition(
                    f"cannot {action} {vm.name}: a save is in progress (operations/{vm.pending_save['operation']}); "
                    "ask again once it is done",
                    reason="SAVE_IN_PROGRESS",
                )
            if vm.power_pending:
                in_flight = await self.operations.load(vm.power_operation)
                if in_flight is not None and in_flight.kind == action:
                    return await self.operations.get(in_flight.name, principal)
                doing = in_flight.kind if in_flight else "power action"
                raise FailedPrecondition(
                    f"cannot {action} {vm.name}: a {doing} is in progress (operations/{vm.power_operation}); "
                    "ask again once it is done",
                    reason="POWER_ACTION_IN_PROGRESS",
                )
            plan = power.plan(vm, action)
            if plan.noop:
                op = new_operation(action, vm_id, principal, generation=vm.power_applied)
                await self._store.put(self._keys.operation(op.id), records.dump(op))
                return OperationView(op, done=True, vm=vm)
            op = new_operation(action, vm_id, principal, generation=vm.power_generation + 1)
            vm.power, vm.power_generation, vm.power_operation = plan.target, op.generation, op.id
            vm.state_message, vm.update_time = f"{action} requested", time.time()
            ok, revision = await self._store.txn(
                [Compare(entry.key, entry.mod_revision)],
                [
                    Put(entry.key, records.dump(vm)),
                    Put(self._keys.operation(op.id), records.dump(op)),
                    # a new value on the placement key wakes the agent's watch
                    Put(self._keys.placement(vm.hypervisor, vm.id), f"power {op.generation}".encode()),
                ],
            )
            if ok:
                vm.revision = revision
                LOG.info("%s of %s requested (%s)", action, vm.name, op.name)
                return OperationView(op, done=False, vm=vm)

    # --- save -----------------------------------------------------------------------------

    async def save_vm(self, vm_id: str, principal: Principal, image_name: str) -> OperationView:
        """Asks the VM's agent to save its disk as a new version of image_name (an image of the
        VM owner's VO, or a new one). Asking again while that save runs returns its operation."""
        image, version = parse_image(image_name)
        if version is not None:
            raise InvalidArgument(f"image_name {image_name!r} names a version; give the image (e.g. 'images/{image}')", reason="INVALID_IMAGE_NAME")
        while True:
            entry, vm = await self._load_vm(vm_id, principal)
            if vm.pending_save:
                in_flight = await self.operations.load(vm.pending_save.get("operation", ""))
                if in_flight is not None and in_flight.target == image:
                    return await self.operations.get(in_flight.name, principal)
                raise FailedPrecondition(
                    f"cannot save {vm.name}: another save is in progress (operations/{vm.pending_save.get('operation')})",
                    reason="SAVE_IN_PROGRESS",
                )
            if vm.power_pending:
                raise FailedPrecondition(
                    f"cannot save {vm.name}: a power action is in progress (operations/{vm.power_operation}); ask again once it is done",
                    reason="POWER_ACTION_IN_PROGRESS",
                )
            if vm.state not in SETTLED:
                raise FailedPrecondition(
                    f"cannot save {vm.name}: it is {vm.state}; only ACTIVE, SUSPENDED or STOPPED VMs can be saved",
                    reason="INVALID_VM_STATE",
                )
            foreign = [r for r in await self._images.versions(image) if r.owner_vo != vm.owner_vo]
            if foreign:
                raise PermissionDenied(
                    f"images/{image} belongs to another VO: save under a new name or one of VO {vm.owner_vo!r}'s images",
                    reason="IMAGE_NOT_OWNED",
                )
            op = new_operation("save", vm_id, principal, target=image)
            vm.pending_save = {"operation": op.id, "image": image}
            vm.state_message, vm.update_time = f"saving to images/{image}", time.time()
            ok, revision = await self._store.txn(
                [Compare(entry.key, entry.mod_revision)],
                [
                    Put(entry.key, records.dump(vm)),
                    Put(self._keys.operation(op.id), records.dump(op)),
                    Put(self._keys.placement(vm.hypervisor, vm.id), f"save {op.id}".encode()),
                ],
            )
            if ok:
                vm.revision = revision
                LOG.info("save of %s to images/%s requested (%s)", vm.name, image, op.name)
                return OperationView(op, done=False, vm=vm)

    # --- read -----------------------------------------------------------------------------

    async def _load_vm(self, vm_id: str, principal: Principal) -> tuple[Entry, VmRecord]:
        return await load_vm(self._store, self._keys, vm_id, principal)

    async def get_vm(self, vm_id: str, principal: Principal) -> VmRecord:
        return (await self._load_vm(vm_id, principal))[1]

    async def resolve_exec_target(self, vm_id: str, principal: Principal) -> ExecTarget:
        """The agent that runs commands in the VM, after the farm's checks (see exec_target)."""
        _, vm = await self._load_vm(vm_id, principal)
        # read from etcd, not the cache: a host that just went down must not be sent commands
        entry = await self._store.get(self._keys.hypervisor(vm.hypervisor)) if vm.hypervisor else None
        return exec_target(vm, records.load(HypervisorRecord, entry.value) if entry else None)

    async def update_vm_labels(self, vm_id: str, principal: Principal, labels: dict[str, str], etag: str) -> VmRecord:
        """Replaces the VM's labels; with an etag, only if the VM has not changed since."""
        validation.check_labels(labels)
        reserved = [k for k in labels if k.startswith("wnodes.")]
        if reserved:
            raise InvalidArgument(f"labels starting with 'wnodes.' are reserved: {', '.join(reserved)}", reason="RESERVED_LABEL")
        entry, vm = await self._load_vm(vm_id, principal)
        if etag and etag != str(entry.mod_revision):
            raise Aborted(f"{vm.name} changed since it was read (etag {etag}, now {entry.mod_revision}); read it again")
        vm.labels = {**{k: v for k, v in vm.labels.items() if k.startswith("wnodes.")}, **labels}
        vm.update_time = time.time()
        value = records.dump(vm)
        ok, revision = await self._store.txn([Compare(entry.key, entry.mod_revision)], [Put(entry.key, value)])
        if not ok:
            raise Aborted(f"{vm.name} changed while it was being updated; read it again")
        vm.revision = revision
        return vm

    async def list_vms(
        self, principal: Principal, page_size: int, page_token: str, hypervisor: str = ""
    ) -> tuple[list[VmRecord], str]:
        """One page of the VMs the caller may see, in key order. Every call does bounded work:
        a page of an admin's list is one range read; a user's list skips others' VMs without
        decoding them and stops after LIST_SCAN_BUDGET records with a token to go on (the
        page may then be short, even empty: AIP-158 allows it); the VMs of one hypervisor are
        read through its placement keys."""
        page_size = page_size_of(page_size)
        start_after = decode_key_token(page_token)
        host = hypervisor.removeprefix("hypervisors/")
        if host:
            return await self._list_vms_on(host, principal, page_size, start_after)
        prefix = self._keys.vm()
        _check_token(start_after, prefix)
        needle = None if principal.is_admin else _owner_needle(principal)
        # etcd 3.4 walks its whole index range even for a limited read: read the VM key space
        # a slice at a time (ids are random hex), slices sized to hold about a page.
        depth = _slice_depth(self._hosts.vm_count(), page_size if needle is None else 1000)
        out: list[VmRecord] = []
        examined = 0
        start_at = last = ""
        while True:
            limit = page_size - len(out) if needle is None else min(1000, LIST_SCAN_BUDGET - examined)
            end = _slice_end(prefix, start_after or start_at, depth)
            entries, _ = await self._store.get_prefix(prefix, start_after=start_after, start_at=start_at, end=end, limit=limit)
            for e in entries:
                examined += 1
                start_after = last = e.key
                if needle is not None and needle not in e.value:
                    continue
                vm = records.load(VmRecord, e.value)
                vm.revision = e.mod_revision
                if may_see(vm.owner_user, vm.owner_vo, principal):
                    out.append(vm)
                    if len(out) == page_size:
                        return out, encode_key_token(last)
            if len(entries) < limit:
                if not end:
                    return out, ""
                start_at, start_after = end, ""  # on to the next slice
            if examined >= LIST_SCAN_BUDGET:
                return out, encode_key_token(last)

    async def _list_vms_on(self, host: str, principal: Principal, page_size: int, start_after: str) -> tuple[list[VmRecord], str]:
        prefix = self._keys.placements(host)
        _check_token(start_after, prefix)
        out: list[VmRecord] = []
        while True:
            limit = page_size - len(out)
            entries, _ = await self._store.get_prefix(prefix, start_after=start_after, limit=limit, keys_only=True)
            found = await self._store.get_many([self._keys.vm(e.key.rsplit("/", 1)[-1]) for e in entries])
            for e, vm_entry in zip(entries, found, strict=True):
                start_after = e.key
                if vm_entry is None:
                    continue
                vm = records.load(VmRecord, vm_entry.value)
                vm.revision = vm_entry.mod_revision
                if may_see(vm.owner_user, vm.owner_vo, principal):
                    out.append(vm)
            if len(entries) < limit:
                return out, ""
            if len(out) == page_size:
                return out, encode_key_token(start_after)

    # --- hosts and replicas ---------------------------------------------------------------

    async def list_hypervisors(self) -> list[HypervisorView]:
        """Every host this replica's watch-fed cache knows (up, or down with VMs still placed),
        by name: no etcd read per call (10,000 hosts were 20,000 records decoded per call)."""
        hypervisors, usage = self._hosts.hypervisors, self._hosts.usage
        names = sorted(set(hypervisors) | set(usage))
        return [
            HypervisorView(hypervisors.get(n), n, usage[n][0] if n in usage else HostUsage(), n in hypervisors)
            for n in names
        ]

    async def get_hypervisor(self, name: str) -> HypervisorView:
        """One host, read from etcd (exact: a caller may have just placed a VM there)."""
        host = name.removeprefix("hypervisors/")
        record, usage = await self._store.get_many([self._keys.hypervisor(host), self._keys.usage(host)])
        if record is None and usage is None:
            raise NotFound(f"hypervisors/{host} does not exist", reason="HYPERVISOR_NOT_FOUND")
        return HypervisorView(
            records.load(HypervisorRecord, record.value) if record else None, host,
            records.load(HostUsage, usage.value) if usage else HostUsage(), record is not None,
        )

    async def list_nameservers(self) -> list[tuple[NameserverRecord, list[str]]]:
        entries, _ = await self._store.get_prefix(self._keys.nameserver())
        elections, _ = await self._store.get_prefix(self._keys.root + "/elections/")
        leaders: dict[str, tuple[int, str]] = {}
        for e in elections:
            duty, member = e.key.split("/")[-2:]
            if duty not in leaders or e.create_revision < leaders[duty][0]:
                leaders[duty] = (e.create_revision, member)
        out = []
        for e in entries:
            rec = records.load(NameserverRecord, e.value)
            out.append((rec, sorted(d for d, (_, m) in leaders.items() if m == rec.id)))
        return out


def _random_mac() -> str:
    # 52:54:00 is QEMU's prefix; the rest random and leased in etcd, so unique across the farm.
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def _owner_needle(principal: Principal) -> bytes:
    """The bytes every record of this owner's VMs contains (records.dump writes owner_user
    then owner_vo, compact JSON), so that others' VMs are skipped without being decoded."""
    return f'"owner_user":{json.dumps(principal.user)},"owner_vo":{json.dumps(principal.vo)}'.encode()


def _slice_depth(count: int, page: int) -> int:
    """Hex digits of a VM id that name a slice holding about a page or more (0: no slicing)."""
    depth = 0
    while depth < 4 and count >= page * 16 ** (depth + 1):
        depth += 1
    return depth


def _slice_end(prefix: str, key: str, depth: int) -> str:
    """The end (exclusive) of the slice of VM keys that key falls in; "" for the last one."""
    if depth == 0:
        return ""
    digits = key[len(prefix) + 3 : len(prefix) + 3 + depth] if key.startswith(prefix + "vm-") else ""
    try:
        n = int(digits.ljust(depth, "0"), 16) + 1 if digits else 1
    except ValueError:
        return ""  # not a hex id: read on to the end
    return "" if n >= 16**depth else f"{prefix}vm-{n:0{depth}x}"


def _check_token(start_after: str, prefix: str) -> None:
    if start_after and not start_after.startswith(prefix):
        raise InvalidArgument("page_token belongs to another listing (another filter)", reason="INVALID_PAGE_TOKEN")
