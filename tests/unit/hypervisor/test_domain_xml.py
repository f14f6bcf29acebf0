"""domain_xml: DomainSpec -> libvirt XML (parsed and checked, plus one golden file)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from services.hypervisor.drivers.base import DomainSpec, NetworkSpec, VolumeSpec
from services.hypervisor.drivers.libvirt.domain_xml import (
    METADATA_NAMESPACE,
    ChannelPaths,
    DomainXmlOptions,
    domain_xml,
)

GOLDEN = Path(__file__).parent / "golden" / "domain_tiny_tcg.xml"
RUN = Path("/run/wnodes/vm-1")

SPEC = DomainSpec(
    vm_id="vm-1",
    vcpu_count=2,
    memory_mib=192,
    disk_path=Path("/var/lib/wnodes/vm-1/disk.qcow2"),
    hostname="wn-001.example.org",
    mac_address="52:54:00:12:34:56",
    kernel_path=Path("/var/lib/wnodes/images/tiny/vmlinux"),
    initrd_path=Path("/var/lib/wnodes/images/tiny/initrd.img"),
    cmdline="console=ttyS0 root=/dev/vda rw wnodes.hostname=wn-001.example.org",
)


def render(spec: DomainSpec = SPEC, **options: object) -> ET.Element:
    opts = DomainXmlOptions(**{"virtualization": "qemu", **options})  # type: ignore[arg-type]
    text = domain_xml(spec, name="wnodes-vm-1", options=opts, channels=ChannelPaths.in_dir(RUN), console_log=RUN / "console.log")
    return ET.fromstring(text)


def test_tcg_domain() -> None:
    # Execute
    root = render()

    # Assert
    assert root.tag == "domain" and root.get("type") == "qemu"
    assert root.findtext("name") == "wnodes-vm-1"
    assert root.find("memory").get("unit") == "MiB" and root.findtext("memory") == "192"  # type: ignore[union-attr]
    assert root.findtext("vcpu") == "2"
    assert root.find("features/acpi") is not None
    cpu = root.find("cpu")
    assert cpu is not None and cpu.get("mode") == "custom" and cpu.findtext("model") == "qemu64"
    assert root.find("os/type").get("machine") == "pc"  # type: ignore[union-attr]
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        assert root.findtext(event) == "destroy"


def test_direct_kernel_boot() -> None:
    os_ = render().find("os")
    assert os_ is not None
    assert os_.findtext("kernel") == str(SPEC.kernel_path)
    assert os_.findtext("initrd") == str(SPEC.initrd_path)
    assert os_.findtext("cmdline") == SPEC.cmdline
    assert os_.find("boot") is None


def test_disk_boot_without_kernel() -> None:
    os_ = render(replace(SPEC, kernel_path=None, initrd_path=None, cmdline="")).find("os")
    assert os_ is not None and os_.find("kernel") is None
    assert os_.find("boot").get("dev") == "hd"  # type: ignore[union-attr]


def test_root_disk_is_the_overlay_on_virtio() -> None:
    disks = render().findall("devices/disk")
    assert len(disks) == 1
    assert disks[0].find("source").get("file") == str(SPEC.disk_path)  # type: ignore[union-attr]
    assert disks[0].find("target").attrib == {"dev": "vda", "bus": "virtio"}  # type: ignore[union-attr]
    assert disks[0].find("driver").get("type") == "qcow2"  # type: ignore[union-attr]


def test_three_virtio_serial_channels_on_unix_sockets() -> None:
    channels = render().findall("devices/channel")
    found = {
        c.find("target").get("name"): (c.get("type"), c.find("source").get("mode"), c.find("source").get("path"))  # type: ignore[union-attr]
        for c in channels
    }
    assert found == {
        "org.wnodes.control": ("unix", "bind", str(RUN / "control.sock")),
        "org.wnodes.stdout": ("unix", "bind", str(RUN / "stdout.sock")),
        "org.wnodes.stderr": ("unix", "bind", str(RUN / "stderr.sock")),
    }
    assert all(c.find("target").get("type") == "virtio" for c in channels)  # type: ignore[union-attr]


def test_serial_console_to_log_file() -> None:
    serial = render().find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    assert serial.find("source").get("path") == str(RUN / "console.log")  # type: ignore[union-attr]


def test_no_network_interface_without_networks() -> None:
    root = render()
    assert root.findall("devices/interface") == []
    assert "network" not in ET.tostring(root, encoding="unicode").replace("networks", "")


def test_bridge_interface_when_asked() -> None:
    # Prepare
    spec = replace(SPEC, networks=(NetworkSpec(mac_address="52:54:00:aa:bb:cc", bridge="br-vo1", vlan=12, bandwidth_mbps=80),))

    # Execute
    interfaces = render(spec).findall("devices/interface")

    # Assert
    assert len(interfaces) == 1
    nic = interfaces[0]
    assert nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == "br-vo1"  # type: ignore[union-attr]
    assert nic.find("mac").get("address") == "52:54:00:aa:bb:cc"  # type: ignore[union-attr]
    assert nic.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    assert nic.find("vlan/tag").get("id") == "12"  # type: ignore[union-attr]
    assert nic.find("bandwidth/inbound").get("average") == "10000"  # type: ignore[union-attr]


def test_network_without_bridge_is_refused() -> None:
    with pytest.raises(ValueError, match="default network"):
        render(replace(SPEC, networks=(NetworkSpec(mac_address="52:54:00:aa:bb:cc"),)))


def test_volumes() -> None:
    spec = replace(SPEC, volumes=(VolumeSpec(path=Path("/data/scratch.qcow2"), device="vdb", read_only=True),))
    disks = render(spec).findall("devices/disk")
    assert [d.find("target").get("dev") for d in disks] == ["vda", "vdb"]  # type: ignore[union-attr]
    assert disks[1].find("readonly") is not None


def test_kvm_uses_host_passthrough() -> None:
    root = render(virtualization="kvm")
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]
    assert root.find("features/acpi") is not None


def test_tcg_maximum_cpu() -> None:
    assert render(tcg_cpu_model="maximum").find("cpu").get("mode") == "maximum"  # type: ignore[union-attr]


def test_no_extra_devices() -> None:
    devices = render().find("devices")
    assert devices is not None
    assert devices.find("memballoon").get("model") == "none"  # type: ignore[union-attr]
    assert devices.find("controller[@type='usb']").get("model") == "none"  # type: ignore[union-attr]
    assert devices.find("graphics") is None and devices.find("video") is None


def test_dac_label() -> None:
    assert render().find("seclabel") is None
    seclabel = render(dac_label="+0:+0").find("seclabel")
    assert seclabel is not None and seclabel.get("relabel") == "no" and seclabel.findtext("label") == "+0:+0"


def test_metadata_names_the_vm() -> None:
    root = render()
    ns = {"w": METADATA_NAMESPACE}
    assert root.findtext("metadata/w:domain/w:vm-id", namespaces=ns) == "vm-1"
    assert root.findtext("metadata/w:domain/w:hostname", namespaces=ns) == "wn-001.example.org"


def test_bad_virtualization() -> None:
    with pytest.raises(ValueError):
        render(virtualization="xen")


def test_golden() -> None:
    # Prepare
    text = domain_xml(
        SPEC,
        name="wnodes-vm-1",
        options=DomainXmlOptions(virtualization="qemu"),
        channels=ChannelPaths.in_dir(RUN),
        console_log=RUN / "console.log",
    )
    if os.environ.get("WNODES_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)

    # Assert
    assert text == GOLDEN.read_text(), "XML changed: review it, then WNODES_UPDATE_GOLDEN=1 to rewrite"


def test_user_network_goes_to_qemu_with_a_loopback_forward_and_no_outside_access() -> None:
    # Prepare
    from services.hypervisor.drivers.base import PortForward, UserNetworkSpec
    from services.hypervisor.drivers.libvirt.domain_xml import QEMU_NAMESPACE

    spec = replace(SPEC, user_network=UserNetworkSpec("52:54:00:12:34:56", (PortForward(22007, 22),)))

    # Execute
    root = render(spec)

    # Assert
    args = [a.get("value") for a in root.findall(f"{{{QEMU_NAMESPACE}}}commandline/{{{QEMU_NAMESPACE}}}arg")]
    assert args[0] == "-netdev" and args[2] == "-device"
    assert args[1] == "user,id=wnodes-user0,restrict=on,hostfwd=tcp:127.0.0.1:22007-:22"
    assert args[3] == "virtio-net-pci,netdev=wnodes-user0,mac=52:54:00:12:34:56,bus=pci.0,addr=0x1f"
    assert root.findall("devices/interface") == [], "no libvirt network: never its default NAT"


def test_no_user_network_no_qemu_passthrough() -> None:
    text = domain_xml(SPEC, name="n", options=DomainXmlOptions("qemu"), channels=ChannelPaths.in_dir(RUN), console_log=None)
    assert "qemu:commandline" not in text and "xmlns:qemu" not in text
