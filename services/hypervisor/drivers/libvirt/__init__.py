"""The libvirt hypervisor driver: ``LibvirtDriver`` and its guest channel."""

from services.hypervisor.drivers.libvirt.driver import LibvirtDriver
from services.hypervisor.drivers.libvirt.guest_channel import VirtioSerialChannel

__all__ = ["LibvirtDriver", "VirtioSerialChannel"]
