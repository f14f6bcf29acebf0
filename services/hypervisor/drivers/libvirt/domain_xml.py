"""DomainSpec -> libvirt domain XML. Pure: no libvirt, no I/O, no policy beyond the XML's shape.

The shape, and why:

- ``type='kvm'`` with ``host-passthrough`` on hardware virtualisation; ``type='qemu'`` (TCG) with a
  plain ``qemu64`` CPU otherwise: under TCG a small CPU model boots faster than ``maximum``
  (fewer features for the kernel to probe and patch in; measured in bench/boot_baseline.py).
- ``<features><acpi/></features>``: without ACPI ``poweroff`` in the guest halts instead of ending
  the domain.
- Direct kernel boot (the uncompressed ``vmlinux`` boots through its PVH entry), on_poweroff,
  on_reboot and on_crash all ``destroy``: a guest that ends or panics (``panic=-1``) stops.
- The root disk is the VM's own qcow2 overlay on virtio-blk as ``vda``, ``cache='unsafe'``: the
  overlay is thrown away with the VM, so flushes buy nothing.
- The serial console goes to a log file; three virtio-serial channels (control, stdout, stderr)
  are unix sockets libvirt/QEMU listen on, for the host end to connect to.
- No network interface unless ``spec.networks`` asks for one, and then always a named bridge:
  libvirt's ``default`` NAT network is never used. No USB, no balloon, no graphics.
- ``spec.user_network`` (interactive access) is a virtio NIC on QEMU's user-mode network with
  host forwards, passed to QEMU through ``<qemu:commandline>``: libvirt 9.0 cannot express
  ``hostfwd`` for ``type='user'`` with slirp (only with passt, not installed here), and
  ``restrict=on`` keeps the guest from reaching anything but its forwards.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from services.hypervisor.drivers.base import DomainSpec, NetworkSpec, UserNetworkSpec, VolumeSpec

METADATA_NAMESPACE = "https://wnodes.infn.it/xmlns/libvirt-domain/1"
QEMU_NAMESPACE = "http://libvirt.org/schemas/domain/qemu/1.0"
USER_NETDEV_ID = "wnodes-user0"
# libvirt does not know about a device passed through <qemu:commandline>, and QEMU may create it
# before libvirt's own devices take their slots (from 0x2 up): it gets the bus's last slot, which
# libvirt would use only for its 30th device.
USER_NIC_PCI_SLOT = "0x1f"

CONTROL_CHANNEL = "org.wnodes.control"
STDOUT_CHANNEL = "org.wnodes.stdout"
STDERR_CHANNEL = "org.wnodes.stderr"


@dataclass(frozen=True)
class ChannelPaths:
    """The unix sockets of a guest's three virtio-serial channels."""

    control: Path
    stdout: Path
    stderr: Path

    @classmethod
    def in_dir(cls, directory: Path) -> ChannelPaths:
        return cls(
            control=directory / "control.sock",
            stdout=directory / "stdout.sock",
            stderr=directory / "stderr.sock",
        )

    def by_name(self) -> dict[str, Path]:
        return {
            CONTROL_CHANNEL: self.control,
            STDOUT_CHANNEL: self.stdout,
            STDERR_CHANNEL: self.stderr,
        }


@dataclass(frozen=True)
class DomainXmlOptions:
    """Per-host settings of the XML, the same for every domain of a driver."""

    # "kvm" (hardware) or "qemu" (TCG emulation).
    virtualization: str
    # QEMU machine type.
    machine: str = "pc"
    # CPU model under TCG ("qemu64", or "maximum" for every feature TCG emulates).
    tcg_cpu_model: str = "qemu64"
    # Disk cache mode of the root overlay.
    disk_cache: str = "unsafe"
    # A static DAC label ("+0:+0" runs QEMU as root, no relabelling) or None for libvirt's own
    # user with dynamic ownership (files and all their parent directories must then be reachable
    # by libvirt's QEMU user).
    dac_label: str | None = None


def domain_xml(
    spec: DomainSpec,
    *,
    name: str,
    options: DomainXmlOptions,
    channels: ChannelPaths,
    console_log: Path | None,
) -> str:
    """The libvirt domain XML for spec, named name."""
    if options.virtualization not in ("kvm", "qemu"):
        raise ValueError(f"virtualization must be 'kvm' or 'qemu', not {options.virtualization!r}")
    domain = ET.Element("domain", type=options.virtualization)
    _text(domain, "name", name)
    metadata = ET.SubElement(domain, "metadata")
    ns = f"{{{METADATA_NAMESPACE}}}"
    wnodes = ET.SubElement(metadata, f"{ns}domain")
    _text(wnodes, f"{ns}vm-id", spec.vm_id)
    _text(wnodes, f"{ns}hostname", spec.hostname)
    _text(domain, "memory", str(spec.memory_mib), unit="MiB")
    _text(domain, "vcpu", str(spec.vcpu_count), placement="static")

    os_ = ET.SubElement(domain, "os")
    _text(os_, "type", "hvm", arch="x86_64", machine=options.machine)
    if spec.kernel_path is not None:
        _text(os_, "kernel", str(spec.kernel_path))
        if spec.initrd_path is not None:
            _text(os_, "initrd", str(spec.initrd_path))
        if spec.cmdline:
            _text(os_, "cmdline", spec.cmdline)
    else:
        ET.SubElement(os_, "boot", dev="hd")

    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    if options.virtualization == "kvm":
        ET.SubElement(features, "apic")
        ET.SubElement(domain, "cpu", mode="host-passthrough", check="none", migratable="off")
    elif options.tcg_cpu_model == "maximum":
        ET.SubElement(domain, "cpu", mode="maximum", check="none", migratable="off")
    else:
        cpu = ET.SubElement(domain, "cpu", mode="custom", match="exact", check="none")
        _text(cpu, "model", options.tcg_cpu_model, fallback="forbid")
    ET.SubElement(domain, "clock", offset="utc")
    _text(domain, "on_poweroff", "destroy")
    _text(domain, "on_reboot", "destroy")
    _text(domain, "on_crash", "destroy")

    devices = ET.SubElement(domain, "devices")
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2", cache=options.disk_cache)
    ET.SubElement(disk, "source", file=str(spec.disk_path))
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    for volume in spec.volumes:
        _volume(devices, volume)
    for network in spec.networks:
        _interface(devices, network)
    ET.SubElement(devices, "controller", type="usb", model="none")
    if console_log is not None:
        serial = ET.SubElement(devices, "serial", type="file")
        ET.SubElement(serial, "source", path=str(console_log), append="off")
        ET.SubElement(serial, "target", port="0")
    else:
        serial = ET.SubElement(devices, "serial", type="null")
        ET.SubElement(serial, "target", port="0")
    for channel_name, path in channels.by_name().items():
        channel = ET.SubElement(devices, "channel", type="unix")
        ET.SubElement(channel, "source", mode="bind", path=str(path))
        ET.SubElement(channel, "target", type="virtio", name=channel_name)
    ET.SubElement(devices, "memballoon", model="none")

    if options.dac_label is not None:
        seclabel = ET.SubElement(domain, "seclabel", type="static", model="dac", relabel="no")
        _text(seclabel, "label", options.dac_label)
    if spec.user_network is not None:
        _user_network(domain, spec.user_network)

    ET.register_namespace("wnodes", METADATA_NAMESPACE)
    ET.register_namespace("qemu", QEMU_NAMESPACE)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"


def _text(parent: ET.Element, tag: str, text: str, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    element.text = text
    return element


def _volume(devices: ET.Element, volume: VolumeSpec) -> ET.Element:
    is_block = volume.path.is_block_device() if volume.path.is_absolute() else False
    disk = ET.SubElement(devices, "disk", type="block" if is_block else "file", device="disk")
    fmt = "qcow2" if volume.path.suffix == ".qcow2" else "raw"
    ET.SubElement(disk, "driver", name="qemu", type=fmt)
    ET.SubElement(disk, "source", {"dev" if is_block else "file": str(volume.path)})
    # virtio-blk: hot-plugged through ACPI PCI hotplug, which the guest kernel has built in, and
    # driven by virtio_blk, which every guest loads for its root disk (virtio-scsi would need a
    # controller and three more modules at every boot).
    ET.SubElement(disk, "target", dev=volume.device, bus="virtio")
    if volume.serial:
        _text(disk, "serial", volume.serial)
    if volume.read_only:
        ET.SubElement(disk, "readonly")
    return disk


def volume_xml(volume: VolumeSpec) -> str:
    """The <disk> element of a volume on its own, for hot-plugging it."""
    holder = ET.Element("devices")
    return ET.tostring(_volume(holder, volume), encoding="unicode")


def _interface(devices: ET.Element, network: NetworkSpec) -> None:
    if not network.bridge:
        raise ValueError(f"network {network.mac_address} names no bridge; libvirt's default network is never used")
    interface = ET.SubElement(devices, "interface", type="bridge")
    ET.SubElement(interface, "source", bridge=network.bridge)
    ET.SubElement(interface, "mac", address=network.mac_address)
    ET.SubElement(interface, "model", type="virtio")
    if network.vlan:
        # Honoured by Open vSwitch bridges; plain Linux bridges need a per-VLAN bridge instead.
        vlan = ET.SubElement(interface, "vlan")
        ET.SubElement(vlan, "tag", id=str(network.vlan))
    if network.bandwidth_mbps:
        kbytes_per_s = str(network.bandwidth_mbps * 125)  # libvirt counts kilobytes per second
        bandwidth = ET.SubElement(interface, "bandwidth")
        ET.SubElement(bandwidth, "inbound", average=kbytes_per_s)
        ET.SubElement(bandwidth, "outbound", average=kbytes_per_s)


def user_network_args(net: UserNetworkSpec) -> list[str]:
    """QEMU arguments of a user-mode NIC with its host forwards."""
    netdev = f"user,id={USER_NETDEV_ID},restrict=on"
    for fwd in net.forwards:
        if not (0 < fwd.host_port < 65536 and 0 < fwd.guest_port < 65536):
            raise ValueError(f"port forward {fwd.host_port}->{fwd.guest_port}: ports are 1-65535")
        netdev += f",hostfwd=tcp:{fwd.host_address}:{fwd.host_port}-:{fwd.guest_port}"
    nic = f"virtio-net-pci,netdev={USER_NETDEV_ID},mac={net.mac_address},bus=pci.0,addr={USER_NIC_PCI_SLOT}"
    return ["-netdev", netdev, "-device", nic]


def _user_network(domain: ET.Element, net: UserNetworkSpec) -> None:
    commandline = ET.SubElement(domain, f"{{{QEMU_NAMESPACE}}}commandline")
    for arg in user_network_args(net):
        ET.SubElement(commandline, f"{{{QEMU_NAMESPACE}}}arg", value=arg)
