"""Which virtualisation a host can offer guests: hardware (KVM) or emulation (QEMU's TCG).

A /dev/kvm is not proof of hardware virtualisation: on some cloud machines it is backed by PVM
(``kvm_pvm``), which runs only PVM-built guest kernels and hangs a stock one after the
decompressor. KVM is chosen only when the CPU flags show VT-x (``vmx``) or AMD-V (``svm``) *and*
/dev/kvm can be opened; otherwise TCG.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

Virtualization = Literal["kvm", "qemu"]

# Kernel arguments that only pay off under TCG, appended by the driver there (measured with the
# Debian 6.1 kernel, guest uptime at /init 1.20 s -> 0.95 s):
# - nolapic_timer: skips the 100 ms local APIC timer calibration (TCG offers no TSC-deadline
#   timer); ticks come from the HPET instead. Under KVM the TSC-deadline timer needs no
#   calibration and is the better clock event device, so not there.
# - rodata=off: skips marking kernel text/rodata read-only and the W+X page-table walk
#   (~150 ms under emulation). Trades guest-kernel hardening for boot time: leave it out where
#   that matters more.
TCG_KERNEL_ARGS = "nolapic_timer rodata=off"


def cpu_flags(cpuinfo_text: str) -> set[str]:
    """The union of the ``flags`` lines of /proc/cpuinfo."""
    flags: set[str] = set()
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            flags.update(value.split())
    return flags


def detect_virtualization(cpuinfo_text: str, kvm_usable: bool) -> tuple[Virtualization, str]:
    """("kvm" or "qemu", the reason) from /proc/cpuinfo's text and whether /dev/kvm opens."""
    flags = cpu_flags(cpuinfo_text)
    hardware = sorted(flags & {"vmx", "svm"})
    if hardware and kvm_usable:
        return "kvm", f"CPU has {'/'.join(hardware)} and /dev/kvm is usable"
    if hardware:
        return "qemu", f"CPU has {'/'.join(hardware)} but /dev/kvm is missing or not usable: TCG"
    if kvm_usable:
        return "qemu", "/dev/kvm exists but the CPU has no vmx/svm (PVM or nested-less KVM): TCG"
    return "qemu", "no vmx/svm CPU flag and no usable /dev/kvm: TCG"


def kvm_device_usable(path: Path = Path("/dev/kvm")) -> bool:
    """Whether /dev/kvm exists and can be opened read-write."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def detect_host_virtualization(cpuinfo: Path = Path("/proc/cpuinfo"), kvm: Path = Path("/dev/kvm")) -> tuple[Virtualization, str]:
    """detect_virtualization for this host."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    return detect_virtualization(text, kvm_device_usable(kvm))
