#!/bin/busybox sh
# /init of the WNoDeS initramfs: loads the kernel modules the guest needs (Debian builds virtio
# and ext4 as modules), mounts the root disk and hands over to the guest agent.
#
# Kernel command line: root=DEV (default /dev/vda), rootfstype=TYPE (default ext4),
# rootflags=OPTS (default rw), wnodes.init=PATH (default /sbin/wnodes-init).
# Any failure is printed on the console and the guest powers off, so the domain ends.
B=/bin/busybox

fail() {
    echo "wnodes initramfs: $*; powering off"
    $B sync
    $B poweroff -f
}

$B mount -t devtmpfs -o mode=0755 devtmpfs /dev
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
debug=
case " $($B cat /proc/cmdline) " in *" wnodes.debug "*) debug=1 ;; esac
stage() {
    [ -n "$debug" ] && echo "wnodes initramfs: $($B cut -d' ' -f1 /proc/uptime) $*"
}
stage "started"

# @MODULES@ is replaced by the build with the module names, dependencies first.
for m in @MODULES@; do
    $B insmod "/lib/modules/$m.ko" || echo "wnodes initramfs: insmod $m failed"
    stage "loaded $m"
done
stage "modules loaded"
# virtio-net only when the guest has a virtio network device (PCI 1af4:1000 or 1af4:1041).
for d in /sys/bus/pci/devices/*; do
    read -r vendor <"$d/vendor" 2>/dev/null || continue
    read -r device <"$d/device" 2>/dev/null || continue
    if [ "$vendor" = 0x1af4 ] && { [ "$device" = 0x1000 ] || [ "$device" = 0x1041 ]; }; then
        for m in @NET_MODULES@; do
            $B insmod "/lib/modules/$m.ko" || echo "wnodes initramfs: insmod $m failed"
        done
        break
    fi
done

root=/dev/vda rootfstype=ext4 rootflags=rw init=/sbin/wnodes-init
read -r cmdline </proc/cmdline
set -f
for arg in $cmdline; do
    case "$arg" in
        root=?*) root=${arg#root=} ;;
        rootfstype=?*) rootfstype=${arg#rootfstype=} ;;
        rootflags=?*) rootflags=${arg#rootflags=} ;;
        wnodes.init=?*) init=${arg#wnodes.init=} ;;
    esac
done
set +f

tries=0
while [ ! -b "$root" ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 1000 ] && fail "root device $root did not appear"
    $B usleep 10000
done
$B mount -t "$rootfstype" -o "$rootflags" "$root" /newroot || fail "cannot mount $root"
[ -x "/newroot$init" ] || fail "$init is missing on the root disk"
stage "root mounted"

# Hand the mounted /dev, /proc and /sys over to the new root (fewer programs to run than
# unmounting here and mounting again there: each exec costs ~20 ms under TCG).
for fs in /dev /proc /sys; do
    if [ -d "/newroot$fs" ]; then
        $B mount --move "$fs" "/newroot$fs"
    else
        $B umount "$fs"
    fi
done
exec $B switch_root /newroot "$init"
