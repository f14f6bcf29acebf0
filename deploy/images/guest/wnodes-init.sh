#!/bin/sh
# wnodes-init: PID 1 and guest agent of a WNoDeS guest. POSIX sh: runs under busybox sh and dash.
#
# Boot: mounts proc, sys, dev (devtmpfs), tmp, run; sets the hostname from the kernel command line
# (wnodes.hostname=NAME); brings up lo; finds the virtio-serial ports named org.wnodes.control,
# org.wnodes.stdout and org.wnodes.stderr; writes "READY <kernel release>\n" to the control port.
#
# Control protocol (one line per message, fields separated by one space):
#   host -> guest  PING                         guest answers  READY <kernel release>
#   host -> guest  EXEC <nonce> <uid> <base64>  runs `sh -c "<decoded command>"` as uid, stdin
#                                               /dev/null, stdout to org.wnodes.stdout, stderr to
#                                               org.wnodes.stderr, unbuffered. The nonce bytes (no
#                                               newline, nothing around them) are written to both
#                                               ports before the command starts (start markers: the
#                                               host drops whatever came before, e.g. the tail of
#                                               a command whose host end crashed) and again after
#                                               it ended (end markers); then EXIT <nonce> <code>
#                                               goes to control
#   host -> guest  POWEROFF                     powers the guest off at once
#   anything else                               guest answers  ERROR <message>
# The guest may also send READY on its own: at boot, and whenever the host end reconnects (a read
# from a virtio-serial port gives end-of-file while the host end is closed; a write blocks until it
# opens again). The host must skip READY lines it did not ask for.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOME=/root
export PATH HOME
umask 022

log() {
    echo "wnodes-init: $*" >/dev/console 2>/dev/null
}

# wnodes.debug on the kernel command line: progress lines with the uptime on the console.
DEBUG=
debug() {
    if [ -n "$DEBUG" ]; then
        read -r _up _idle </proc/uptime
        log "$_up $*"
    fi
}

is_mounted() {
    # $1: mount point
    [ -r /proc/mounts ] || return 1
    while read -r _dev _mnt _rest; do
        [ "$_mnt" = "$1" ] && return 0
    done </proc/mounts
    return 1
}

mount_fs() {
    # $1: type, $2: mount point, $3: options
    [ -d "$2" ] || mkdir -p "$2" 2>/dev/null
    is_mounted "$2" || mount -t "$1" -o "$3" "$1" "$2" || log "cannot mount $1 on $2"
}

power_off() {
    sync
    if command -v busybox >/dev/null 2>&1; then
        busybox poweroff -f
    fi
    echo o >/proc/sysrq-trigger
    sleep 10
}

mount_fs proc /proc nosuid,nodev,noexec
read -r CMDLINE </proc/cmdline
case " $CMDLINE " in *" wnodes.debug "*) DEBUG=1 ;; esac
debug "started"
mount_fs sysfs /sys nosuid,nodev,noexec
mount_fs devtmpfs /dev nosuid,mode=0755
mount_fs tmpfs /tmp nosuid,nodev,mode=1777
mount_fs tmpfs /run nosuid,nodev,mode=0755
mount_fs tmpfs /dev/shm nosuid,nodev,mode=1777

set -f
for arg in $CMDLINE; do
    case "$arg" in
        wnodes.hostname=?*) echo "${arg#wnodes.hostname=}" >/proc/sys/kernel/hostname ;;
    esac
done
set +f
debug "file systems mounted, hostname set"
if command -v ip >/dev/null 2>&1; then
    ip link set lo up 2>/dev/null
fi

read -r KREL </proc/sys/kernel/osrelease
debug "loopback up"

# The port names arrive from the host a little after the ports appear: poll (30 s at most).
CTL= OUT= ERR=
find_ports() {
    for _d in /sys/class/virtio-ports/vport*; do
        [ -r "$_d/name" ] || continue
        read -r _n <"$_d/name" || continue
        case "$_n" in
            org.wnodes.control) CTL=/dev/${_d##*/} ;;
            org.wnodes.stdout) OUT=/dev/${_d##*/} ;;
            org.wnodes.stderr) ERR=/dev/${_d##*/} ;;
        esac
    done
    [ -c "$CTL" ] && [ -c "$OUT" ] && [ -c "$ERR" ]
}
_tries=0
until find_ports; do
    _tries=$((_tries + 1))
    if [ "$_tries" -gt 3000 ]; then
        log "virtio-serial ports org.wnodes.{control,stdout,stderr} not found; powering off"
        power_off
    fi
    sleep 0.01
done

exec 3<>"$CTL" 4>"$OUT" 5>"$ERR"
debug "ports found after $_tries polls"

# How to drop privileges: util-linux setpriv where it exists, else su (busybox, root needs no
# password). Decided at the first command that needs it.
DROP=

run_as() {
    # $1: uid, $2: command; stdio already redirected by the caller
    if [ "$1" = 0 ]; then
        (cd /root 2>/dev/null || cd /; exec sh -c "$2")
        return
    fi
    _ent=
    while IFS=: read -r _name _pw _uid _gid _gecos _home _shell; do
        if [ "$_uid" = "$1" ]; then
            _ent=$_name
            break
        fi
    done </etc/passwd
    if [ -z "$_ent" ]; then
        _name= _gid=$1 _home=/
    fi
    if [ -z "$DROP" ]; then
        if setpriv --help 2>&1 | grep -q -- --reuid; then
            DROP=setpriv
        else
            DROP=su
        fi
    fi
    if [ "$DROP" = setpriv ]; then
        (cd "$_home" 2>/dev/null || cd /
         HOME=$_home USER=$_name LOGNAME=$_name
         export HOME USER LOGNAME
         exec setpriv --reuid="$1" --regid="$_gid" --clear-groups sh -c "$2")
    elif [ -n "$_name" ]; then
        (cd "$_home" 2>/dev/null || cd /; exec su -s /bin/sh "$_name" -c "$2")
    else
        echo "wnodes-init: uid $1 has no /etc/passwd entry and setpriv is missing" >&2
        return 126
    fi
}

run_exec() {
    # $1: nonce, $2: uid, $3: base64 of the command
    _code=0
    printf '%s' "$1" >&4
    printf '%s' "$1" >&5
    case "$2" in
        '' | *[!0-9]*)
            echo "wnodes-init: bad uid '$2'" >&5
            _code=125
            ;;
        *)
            if _cmd=$(printf '%s' "$3" | base64 -d 2>/dev/null); then
                run_as "$2" "$_cmd" </dev/null >&4 2>&5 3>&- 4>&- 5>&-
                _code=$?
            else
                echo "wnodes-init: command is not valid base64" >&5
                _code=125
            fi
            ;;
    esac
    printf '%s' "$1" >&4
    printf '%s' "$1" >&5
    printf 'EXIT %s %s\n' "$1" "$_code" >&3
}

printf 'READY %s\n' "$KREL" >&3
debug "READY written"
while :; do
    if ! read -r verb a1 a2 a3 <&3; then
        # End of file: the host end is not connected. This write blocks until it connects again.
        printf 'READY %s\n' "$KREL" >&3
        continue
    fi
    case "$verb" in
        PING) printf 'READY %s\n' "$KREL" >&3 ;;
        EXEC) run_exec "$a1" "$a2" "$a3" ;;
        POWEROFF) power_off ;;
        '') ;;
        *) printf 'ERROR unknown command %s\n' "$verb" >&3 ;;
    esac
done
