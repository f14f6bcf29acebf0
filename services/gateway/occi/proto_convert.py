"""wnodes.v1 protobuf -> CloudBackend data: the only OCCI module where protos meet the domain.

OCCI metadata that the VM proto has no field for (title, summary, the size template) rides in
the VM's labels under ``occi.*``; labels are the one mutable part of a VM, so PUT/POST can
change them with UpdateVirtualMachine.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from services.gateway.occi.backend import Compute, ComputeState, Network, NetworkInterface, NetworkState, Storage, StorageState
from wnodes.v1 import virtual_machine_pb2

TITLE_LABEL = "occi.title"
SUMMARY_LABEL = "occi.summary"
RESOURCE_TPL_LABEL = "occi.resource_tpl"

_COMPUTE_STATES: dict[str, tuple[ComputeState, str]] = {
    "ACTIVE": ("active", "running"),
    "STOPPED": ("inactive", "stopped"),
    "SUSPENDED": ("suspended", "suspended"),
    "FAILED": ("error", "failed"),
    "UNKNOWN": ("error", "its hypervisor stopped reporting"),
    "PENDING": ("inactive", "starting: waiting for a hypervisor"),
    "SCHEDULED": ("inactive", "starting: placed on a hypervisor"),
    "STARTING": ("inactive", "starting: booting"),
}


def enum_name(message: Message, field: str) -> str:
    """The enum value's name, read through the descriptor (works for values added later)."""
    fd = message.DESCRIPTOR.fields_by_name[field]
    if fd.enum_type is None:  # a plain string state
        return str(getattr(message, field)).upper() or "STATE_UNSPECIFIED"
    value = fd.enum_type.values_by_number.get(getattr(message, field))
    return value.name if value is not None else "STATE_UNSPECIFIED"


def short_id(name: str) -> str:
    """'virtualMachines/vm-1' -> 'vm-1'."""
    return name.rsplit("/", 1)[-1]


def compute_from_vm(vm: virtual_machine_pb2.VirtualMachine) -> Compute:
    proto_state = enum_name(vm, "state")
    state, message = _COMPUTE_STATES.get(proto_state, ("error", proto_state.lower()))
    if vm.state_message and state != "active":
        message = f"{message} ({vm.state_message})"
    # ssh_endpoint arrives with branch `cloud`; getattr keeps this working on protos without it.
    ssh = str(getattr(vm, "ssh_endpoint", "") or "")
    if ssh and state == "active":
        message = f"running; SSH at {ssh}"
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
        ssh_endpoint=ssh,
    )


def is_deleting(vm: virtual_machine_pb2.VirtualMachine) -> bool:
    return enum_name(vm, "state") == "DELETING"


def storage_from_volume(volume: Any) -> Storage:
    state: StorageState = {"ONLINE": "online", "OFFLINE": "offline"}.get(enum_name(volume, "state"), "error")  # type: ignore[assignment]
    return Storage(short_id(volume.name), float(volume.size_gib), state, volume.state_message, volume.title)


def network_from_proto(network: Any) -> Network:
    state: NetworkState = {"ACTIVE": "active", "INACTIVE": "inactive"}.get(enum_name(network, "state"), "error")  # type: ignore[assignment]
    return Network(
        short_id(network.name), state, "", network.title, vlan=int(network.vlan) if network.vlan else None,
        address=network.cidr, gateway=network.gateway,
        allocation="static" if enum_name(network, "allocation") == "STATIC" else "dynamic",
    )


def interface_from_proto(nic: Any, index: int) -> NetworkInterface:
    state = enum_name(nic, "state")
    return NetworkInterface(
        short_id(nic.name), short_id(nic.vm), short_id(nic.network), f"eth{index}", nic.mac,
        "active" if state in ("ACTIVE", "STATE_UNSPECIFIED") else "inactive" if state == "INACTIVE" else "error",
        nic.address,
    )
