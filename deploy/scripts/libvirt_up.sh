#!/bin/sh
# Starts libvirt by hand on a machine without systemd; idempotent.
#
# - gives /dev/kvm to group kvm, mode 660 (no udev here): without it libvirt re-probes QEMU on
#   every call (createXML takes 44 s instead of 0.3 s);
# - disables and undefines libvirt's "default" NAT network WITHOUT ever starting it;
# - starts virtlogd and libvirtd (no --listen) unless they run;
# - waits until `virsh -c qemu:///system uri` answers (first start probes QEMU for ~13 s).
set -eu

URI=qemu:///system
TIMEOUT=${LIBVIRT_UP_TIMEOUT:-120}

if [ -e /dev/kvm ]; then
    chgrp kvm /dev/kvm
    chmod 660 /dev/kvm
fi

# Never let libvirtd autostart the default network: drop the autostart link before it starts.
rm -f /etc/libvirt/qemu/networks/autostart/default.xml

mkdir -p /run/libvirt

is_running() {
    # $1: pid file; true if it names a live process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

if ! is_running /run/virtlogd.pid; then
    virtlogd -d
fi
if ! is_running /run/libvirtd.pid; then
    libvirtd -d
fi

deadline=$(( $(date +%s) + TIMEOUT ))
until virsh -q -c "$URI" uri >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "libvirt_up: libvirtd did not answer on $URI within ${TIMEOUT}s" >&2
        exit 1
    fi
    sleep 0.2
done

# Undefine the default network if it is defined; it is never started here.
if virsh -q -c "$URI" net-info default >/dev/null 2>&1; then
    if virsh -q -c "$URI" net-info default | grep -q '^Active: *yes'; then
        echo "libvirt_up: WARNING: the default network is active; destroying it" >&2
        virsh -q -c "$URI" net-destroy default >/dev/null
    fi
    virsh -q -c "$URI" net-autostart default --disable >/dev/null 2>&1 || true
    virsh -q -c "$URI" net-undefine default >/dev/null
fi
echo "libvirt_up: libvirtd answers on $URI"
