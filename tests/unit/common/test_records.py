from __future__ import annotations

from services.common import records
from services.common.records import HostUsage, VmRecord, VmState


def test_vm_record_round_trip_ignores_unknown_fields() -> None:
    vm = VmRecord(id="vm-1", image="images/tiny", image_version="images/tiny/versions/1", vcpu_count=1, memory_mib=256,
                  owner_user="alice", owner_vo="atlas", state=VmState.ACTIVE)
    raw = records.dump(vm)[:-1] + b',"a_field_from_a_newer_version":1}'
    back = records.load(VmRecord, raw)
    assert back == vm and back.state is VmState.ACTIVE


def test_usage_add_remove_is_idempotent() -> None:
    usage = HostUsage()
    usage.add("vm-1", 2, 512)
    usage.add("vm-1", 2, 512)
    assert (usage.vcpus_used, usage.memory_mib_used) == (2, 512)
    usage.remove("vm-1")
    usage.remove("vm-1")
    assert (usage.vcpus_used, usage.memory_mib_used, usage.vms) == (0, 0, {})


def test_vm_records_leave_out_empty_optional_fields_and_load_them_back() -> None:
    vm = VmRecord(id="vm-1", image="images/tiny", image_version="images/tiny/versions/1", vcpu_count=1, memory_mib=256,
                  owner_user="alice", owner_vo="atlas", hypervisor="h1", labels={"a": "b"})
    raw = records.dump(vm)
    assert b'"user_data"' not in raw and b'"pending_save"' not in raw and b'"ssh_public_keys"' not in raw
    assert b'"labels":{"a":"b"}' in raw and b'"hypervisor":"h1"' in raw and b'"power_generation":0' in raw
    assert records.load(VmRecord, raw) == vm
    assert records.load(HostUsage, records.dump(HostUsage())) == HostUsage()
    assert b'"vms":{}' in records.dump(HostUsage()), "usage records keep every field"
