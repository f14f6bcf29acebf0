"""wnodes.v1 protobuf -> CloudBackend data: the only OCCI module where protos meet the domain.

OCCI metadata that the VM proto has no field for (title, summary, the size template) rides in
the VM's labels under ``occi.*``; labels are the one mutable part of a VM, so PUT/POST can
change them with UpdateVirtualMachine.

States (GFD.224 has fewer than the API; the API's state goes into the state message):

    VirtualMachine  ACTIVE -> active; STOPPED, PENDING, SCHEDULED, STARTING -> inactive;
                    SUSPENDED -> suspended; FAILED, UNKNOWN -> error
    Volume          ONLINE -> online; OFFLINE -> offline; ERROR -> error
    Attachment      ATTACHED -> active; ATTACHING -> inactive; DETACHING -> no link (deleted)
    Network         ACTIVE -> active; INACTIVE -> inactive
    NetworkInterface ACTIVE -> active; INACTIVE -> inactive (its network is down)
"""

from __future__ import annotations

from services.gateway.occi.cloud_backend import (
    Compute,
    ComputeState,
    LinkState,
    Network,
    NetworkInterface,
    NetworkState,
    Storage,
    StorageLink,
    StorageState,
    storage_link_id,
)
from wnodes.v1 import network_pb2, virtual_machine_pb2, volume_pb2

TITLE_LABEL = "occi.title"
SUMMARY_LABEL = "occi.summary"
RESOURCE_TPL_LABEL = "occi.resource_tpl"

VM = virtual_machine_pb2.VirtualMachine
Volume = volume_pb2.Volume
Attachment = volume_pb2.Volume.Attachment

_COMPUTE_STATES: dict[VM.State.ValueType, tuple[ComputeState, str]] = {
    VM.State.ACTIVE: ("active", "running"),
    VM.State.STOPPED: ("inactive", "stopped"),
    VM.State.SUSPENDED: ("suspended", "suspended"),
    VM.State.FAILED: ("error", "failed"),
    VM.State.UNKNOWN: ("error", "its hypervisor stopped reporting"),
    VM.State.PENDING: ("inactive", "starting: waiting for a hypervisor"),
    VM.State.SCHEDULED: ("inactive", "starting: placed on a hypervisor"),
    VM.State.STARTING: ("inactive", "starting: booting"),
}
SETTLING = frozenset({VM.State.PENDING, VM.State.SCHEDULED, VM.State.STARTING})
"""A VM on its way to its first ACTIVE (or back to it after a start or restart)."""
_STORAGE_STATES: dict[Volume.State.ValueType, StorageState] = {
    Volume.State.ONLINE: "online", Volume.State.OFFLINE: "offline", Volume.State.ERROR: "error",
}
_ATTACHMENT_STATES: dict[Attachment.State.ValueType, tuple[LinkState, str]] = {
    Attachment.State.ATTACHED: ("active", ""),
    Attachment.State.ATTACHING: ("inactive", "attaching: the disk is being plugged in"),  # no ';' or ',' (see views.storage_link)
}
_NETWORK_STATES: dict[network_pb2.Network.State.ValueType, NetworkState] = {
    network_pb2.Network.State.ACTIVE: "active", network_pb2.Network.State.INACTIVE: "inactive",
}
_INTERFACE_STATES: dict[network_pb2.NetworkInterface.State.ValueType, LinkState] = {
    network_pb2.NetworkInterface.State.ACTIVE: "active", network_pb2.NetworkInterface.State.INACTIVE: "inactive",
}


def short_id(name: str) -> str:
    """'virtualMachines/vm-1' -> 'vm-1'."""
    return name.rsplit("/", 1)[-1]


def compute_from_vm(vm: virtual_machine_pb2.VirtualMachine) -> Compute:
    state, message = _COMPUTE_STATES.get(vm.state, ("error", VM.State.Name(vm.state).lower()))
    if vm.state_message and state != "active" and vm.state_message.lower() not in message:
        message = f"{message} ({vm.state_message})"
    if vm.ssh_endpoint and state == "active":
        message = f"running; SSH at {vm.ssh_endpoint}"
    return Compute(
        id=short_id(vm.name),
        image=vm.image.removeprefix("images/").split("/versions/")[0],
        cores=vm.vcpu_count,
        memory_mib=vm.memory_mib,
        state=state,
        state_message=message,
        title=vm.labels.get(TITLE_LABEL, ""),
        summary=vm.labels.get(SUMMARY_LABEL, ""),
        resource_tpl=vm.labels.get(RESOURCE_TPL_LABEL, ""),
        hostname=vm.hostname,
        ssh_endpoint=vm.ssh_endpoint,
    )


def is_deleting(vm: virtual_machine_pb2.VirtualMachine) -> bool:
    return vm.state == VM.State.DELETING


def storage_from_volume(volume: volume_pb2.Volume) -> Storage:
    return Storage(short_id(volume.name), volume.size_gib, _STORAGE_STATES.get(volume.state, "error"), volume.state_message, volume.title)


def storage_links_of(volume: volume_pb2.Volume) -> list[StorageLink]:
    """A volume's attachments as links; one being detached is gone already."""
    links = []
    storage_id = short_id(volume.name)
    for attachment in volume.attachments:
        if attachment.state not in _ATTACHMENT_STATES:
            continue
        state, message = _ATTACHMENT_STATES[attachment.state]
        compute_id = short_id(attachment.virtual_machine)
        links.append(StorageLink(storage_link_id(compute_id, storage_id), compute_id, storage_id, f"/dev/{attachment.device}",
                                 serial=storage_id, state=state, state_message=message))
    return links


def network_from_proto(network: network_pb2.Network) -> Network:
    return Network(
        short_id(network.name), _NETWORK_STATES.get(network.state, "error"), title=network.title, vlan=network.vlan or None,
        address=network.cidr, gateway=network.gateway,
        allocation="static" if network.allocation == network_pb2.Network.Allocation.STATIC else "dynamic",
    )


def interface_from_proto(nic: network_pb2.NetworkInterface, index: int, network: Network | None) -> NetworkInterface:
    """``index``: its place among its VM's interfaces (eth0, eth1, ... in creation order)."""
    return NetworkInterface(
        short_id(nic.name), short_id(nic.virtual_machine), short_id(nic.network), f"eth{index}", nic.mac_address,
        _INTERFACE_STATES.get(nic.state, "error"), nic.ip_address,
        network.gateway if network is not None else "", network.allocation if network is not None else "dynamic",
    )
