"""detect_virtualization: KVM only with VT-x/AMD-V flags and a usable /dev/kvm, else TCG."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.hypervisor.drivers.kvm import cpu_flags, detect_host_virtualization, detect_virtualization

INTEL_VMX = """\
processor	: 0
vendor_id	: GenuineIntel
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep vmx ssse3 sse4_1
processor	: 1
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep vmx ssse3 sse4_1
"""
AMD_SVM = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 svm npt lbrv\n"
# A cloud VM whose /dev/kvm is PVM-backed: no hardware virtualisation flag.
NO_VIRT = "processor\t: 0\nflags\t\t: fpu sse2 hypervisor ssse3 sse4_2 avx2\n"
# "svm" must match as a whole flag, not inside another word.
LOOKALIKE = "processor\t: 0\nflags\t\t: fpu svm_lock vmx_ept_ad npt\n"


@pytest.mark.parametrize(
    ("cpuinfo", "kvm_usable", "expected"),
    [
        (INTEL_VMX, True, "kvm"),
        (AMD_SVM, True, "kvm"),
        (INTEL_VMX, False, "qemu"),
        (NO_VIRT, True, "qemu"),
        (NO_VIRT, False, "qemu"),
        (LOOKALIKE, True, "qemu"),
        ("", True, "qemu"),
    ],
)
def test_choice(cpuinfo: str, kvm_usable: bool, expected: str) -> None:
    # Execute
    choice, reason = detect_virtualization(cpuinfo, kvm_usable)

    # Assert
    assert choice == expected
    assert reason


def test_reasons_say_why() -> None:
    assert "vmx" in detect_virtualization(INTEL_VMX, True)[1]
    assert "/dev/kvm" in detect_virtualization(INTEL_VMX, False)[1]
    assert "no vmx/svm" in detect_virtualization(NO_VIRT, True)[1]


def test_cpu_flags_union_of_all_processors() -> None:
    assert {"vmx", "sse4_1", "fpu"} <= cpu_flags(INTEL_VMX)
    assert "svm_lock" in cpu_flags(LOOKALIKE) and "svm" not in cpu_flags(LOOKALIKE)


def test_host_detection_with_files(tmp_path: Path) -> None:
    # Prepare: a cpuinfo with vmx and a /dev/kvm stand-in that opens, then one that does not.
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(INTEL_VMX)
    kvm = tmp_path / "kvm"
    kvm.write_bytes(b"")

    # Execute / Assert
    assert detect_host_virtualization(cpuinfo, kvm)[0] == "kvm"
    assert detect_host_virtualization(cpuinfo, tmp_path / "missing")[0] == "qemu"
    assert detect_host_virtualization(tmp_path / "no-cpuinfo", kvm)[0] == "qemu"
