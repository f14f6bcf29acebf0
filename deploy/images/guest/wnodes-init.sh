#!/bin/sh
# wnodes-init: PID 1 and guest agent of a WNoDeS guest. POSIX sh: runs under busybox sh and dash.
#
# Boot: mounts proc, sys, dev (devtmpfs), dev/pts, tmp, run; sets the hostname from the kernel
# command line (wnodes.hostname=NAME); brings up lo; if the VM has a network interface (it asked
# for SSH), configures it for QEMU's user-mode network and starts sshd, in the background; finds
# the virtio-serial ports named org.wnodes.control, org.wnodes.stdout and org.wnodes.stderr;
# writes "READY <kernel release>\n" to the control port.
#
# Control protocol (one line per message, fields separated by one space; a nonce is 32 hex digits):
#   host -> guest  PING                         guest answers  READY <kernel release>
#   host -> guest  EXEC <nonce> <uid> <base64>  starts `sh -c "<decoded command>"` as uid in the
#                                               background, stdin /dev/null, stdout and stderr to
#                                               log files in $EXEC_ROOT/<nonce>; the streamer sends
#                                               them as frames, then EXIT <nonce> <code> <stdout
#                                               bytes> <stderr bytes> goes to control
#   host -> guest  ATTACH <nonce> <out> <err>   sends that execution's output again from those
#                                               offsets (and its EXIT once it ended); a host end
#                                               that restarted uses it to get back what it lost.
#                                               Unknown nonce: LOST <nonce>
#   host -> guest  FORGET <nonce>               deletes an ended execution's logs
#   host -> guest  POWEROFF                     powers the guest off at once
#   anything else                               guest answers  ERROR <message>
#   guest -> host  LOG <text>                   a syslog line of the guest, sent unasked when the
#                                               image was customised with syslog to the hypervisor
#                                               (/etc/wnodes/syslog-to-hypervisor); hosts that do
#                                               not know LOG ignore it
# Output frames, on org.wnodes.stdout and org.wnodes.stderr: a line "WNF1 <nonce> <offset>
# <length>" and then exactly <length> bytes of the log from <offset>. Offsets make a frame
# self-describing: the host end keeps what continues what it has, drops repeats and asks again
# (ATTACH) after a gap, so no byte is lost or doubled when it reconnects mid-frame.
# Commands run concurrently; one streamer process writes all frames, so frames never interleave.
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
mount_fs devpts /dev/pts nosuid,noexec,gid=5,mode=0620,ptmxmode=0666

set -f
for arg in $CMDLINE; do
    case "$arg" in
        wnodes.hostname=?*) echo "${arg#wnodes.hostname=}" >/proc/sys/kernel/hostname ;;
    esac
done
set +f
debug "file systems mounted, hostname set"

# The agent's own static busybox, off the users' PATH (deploy/images/build.py installs it): it
# starts far faster than a dynamically linked tool under emulation (TCG), and it brings the
# tools a minimal Debian lacks (ip).
BB=
[ -x /usr/lib/wnodes/busybox ] && BB=/usr/lib/wnodes/busybox
IP=
if command -v ip >/dev/null 2>&1; then
    IP=ip
elif [ -n "$BB" ]; then
    IP="$BB ip"
fi
[ -n "$IP" ] && $IP link set lo up 2>/dev/null

read -r KREL </proc/sys/kernel/osrelease
debug "loopback up"

# Kernel modules the image's customisation asked for: one .ko path per line, dependencies first.
if [ -r /etc/wnodes/modules ]; then
    while read -r _m; do
        case "$_m" in '' | '#'*) continue ;; esac
        ${BB:+$BB }insmod "$_m" 2>/dev/null || log "insmod $_m failed"
    done </etc/wnodes/modules
    debug "modules loaded"
fi

# Syslog to the hypervisor: the customisation writes the flag file; the relay starts after READY.
SYSLOG=
[ -e /etc/wnodes/syslog-to-hypervisor ] && [ -n "$BB" ] && SYSLOG=1

# A VM that asked for SSH has one virtio NIC on QEMU's user-mode network (slirp), whose
# addresses never change: the guest is 10.0.2.15/24 behind the gateway 10.0.2.2. sshd gets an
# ed25519 host key made at the VM's first boot (the only kind made at boot: it is the fastest
# under emulation) and kept on its disk. In the background: READY does not wait for it; the
# agent's contextualisation does.
network_and_sshd() {
    _if=
    for _n in /sys/class/net/*; do
        [ -e "$_n/device" ] || continue # lo and other virtual devices have no device
        _if=${_n##*/}
        break
    done
    [ -n "$_if" ] && [ -n "$IP" ] || return 0
    if ! { $IP link set "$_if" up && $IP addr add 10.0.2.15/24 dev "$_if" && $IP route add default via 10.0.2.2; }; then
        log "cannot configure $_if"
        return 1
    fi
    debug "$_if up"
    [ -x /usr/sbin/sshd ] || return 0
    mkdir -p /run/sshd && chmod 755 /run/sshd
    if [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then
        rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub
        ssh-keygen -q -t ed25519 -N '' -C "root@$(cat /proc/sys/kernel/hostname)" -f /etc/ssh/ssh_host_ed25519_key ||
            log "ssh-keygen failed"
    fi
    /usr/sbin/sshd -E /var/log/sshd.log || log "sshd did not start (see /var/log/sshd.log)"
    debug "sshd started"
}
network_and_sshd </dev/null >/dev/null 2>&1 &

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

# Executions: $EXEC_ROOT/<nonce>/ holds out and err (the logs), code (once the command ended),
# sent (the offsets streamed so far), seek (offsets an ATTACH asked for) and active (still to be
# streamed). Root only: a job must not learn nonces and forge frames.
# The streamer's tools come from the agent's busybox ($BB, above): the streamer runs tools many
# times a second.
EXEC_ROOT=/run/wnodes/exec
$BB mkdir -p "$EXEC_ROOT" && chmod 700 /run/wnodes "$EXEC_ROOT"
STREAMER_LOCK=$EXEC_ROOT/.streamer

is_nonce() {
    case "$1" in '' | *[!0-9a-f]*) return 1 ;; esac
    [ "${#1}" = 32 ]
}

is_count() {
    case "$1" in '' | *[!0-9]*) return 1 ;; esac
}

send_frame() {
    # $1: log file, $2: nonce, $3: offset, $4: length; stdout is the port
    printf 'WNF1 %s %s %s\n' "$2" "$3" "$4"
    $BB dd if="$1" bs=65536 skip="$3" count="$4" iflag=skip_bytes,count_bytes 2>/dev/null
}

stream_one() {
    # $1: execution directory. Sends what is new, at most 1 MiB per stream; returns 0 if it sent
    # anything. Once the command ended and everything is sent: EXIT, and the directory is done.
    _d=$1 _n=${1##*/}
    # Nothing written since the last look (sent is rewritten at every look): skip the stat, a
    # fork. File times are coarse (a clock tick), so equal times count as maybe newer.
    if [ ! -e "$_d/seek" ] && [ ! -e "$_d/code" ] && [ "$_d/sent" -nt "$_d/out" ] && [ "$_d/sent" -nt "$_d/err" ]; then
        return 1
    fi
    if [ -e "$_d/seek" ]; then
        read -r _oo _eo <"$_d/seek"
        $BB rm -f "$_d/seek"
    else
        read -r _oo _eo <"$_d/sent"
    fi
    _ended=0
    [ -e "$_d/code" ] && _ended=1 # before the sizes: if it ended, they are final
    set -- $($BB stat -c %s "$_d/out" "$_d/err")
    _moved=0
    if [ "$1" -gt "$_oo" ]; then
        _len=$(($1 - _oo))
        [ "$_len" -gt 1048576 ] && _len=1048576
        send_frame "$_d/out" "$_n" "$_oo" "$_len" >&4
        _oo=$((_oo + _len)) _moved=1
    fi
    if [ "$2" -gt "$_eo" ]; then
        _len=$(($2 - _eo))
        [ "$_len" -gt 1048576 ] && _len=1048576
        send_frame "$_d/err" "$_n" "$_eo" "$_len" >&5
        _eo=$((_eo + _len)) _moved=1
    fi
    printf '%s %s\n' "$_oo" "$_eo" >"$_d/sent"
    if [ "$_ended" = 1 ] && [ "$_oo" = "$1" ] && [ "$_eo" = "$2" ]; then
        read -r _code <"$_d/code"
        printf 'EXIT %s %s %s %s\n' "$_n" "$_code" "$_oo" "$_eo" >&3
        $BB rm -f "$_d/active"
        # An ATTACH may have come between reading seek and removing active: it writes seek
        # before active, so looking again here cannot miss it.
        [ -e "$_d/seek" ] && : >"$_d/active"
    fi
    [ "$_moved" = 1 ]
}

streamer() {
    # The one process writing frames. Polls the logs: every 10 ms for the first 20 idle rounds
    # (most commands are short), then backing off to 250 ms. Leaves when nothing is active (see
    # wake_streamer).
    _nap=0.01 _idle=0
    while :; do
        _any=0 _busy=0
        for _d in "$EXEC_ROOT"/*/active; do
            [ -e "$_d" ] || continue
            _any=1
            stream_one "${_d%/active}" && _busy=1
        done
        if [ "$_any" = 0 ]; then
            $BB rmdir "$STREAMER_LOCK"
            # Work added after the scan above and before the rmdir found the lock taken and left
            # it to this process: look once more, and carry on if there is some.
            set -- "$EXEC_ROOT"/*/active
            [ -e "$1" ] && $BB mkdir "$STREAMER_LOCK" 2>/dev/null && continue
            return 0
        fi
        if [ "$_busy" = 1 ]; then
            _nap=0.01 _idle=0
        else
            $BB sleep "$_nap"
            _idle=$((_idle + 1))
            if [ "$_idle" -gt 20 ]; then
                case "$_nap" in
                    0.01) _nap=0.02 ;; 0.02) _nap=0.05 ;; 0.05) _nap=0.1 ;; *) _nap=0.25 ;;
                esac
            fi
        fi
    done
}

wake_streamer() {
    # Called after marking work active: starts the streamer unless one runs (the lock directory
    # is its token: exactly one holder at a time).
    if $BB mkdir "$STREAMER_LOCK" 2>/dev/null; then
        streamer &
    fi
}

start_exec() {
    # $1: nonce, $2: uid, $3: base64 of the command
    if ! is_nonce "$1"; then
        printf 'ERROR EXEC: bad nonce %s\n' "$1" >&3
        return
    fi
    _d=$EXEC_ROOT/$1
    if ! $BB mkdir "$_d" 2>/dev/null; then
        printf 'ERROR EXEC: execution %s exists\n' "$1" >&3
        return
    fi
    : >"$_d/out"
    : >"$_d/err"
    echo "0 0" >"$_d/sent"
    if ! is_count "$2"; then
        echo "wnodes-init: bad uid '$2'" >"$_d/err"
        echo 125 >"$_d/code"
    elif ! _cmd=$(printf '%s' "$3" | $BB base64 -d 2>/dev/null); then
        echo "wnodes-init: command is not valid base64" >"$_d/err"
        echo 125 >"$_d/code"
    else
        (
            run_as "$2" "$_cmd" </dev/null >"$_d/out" 2>"$_d/err" 3>&- 4>&- 5>&-
            echo "$?" >"$_d/code.new"
            $BB mv "$_d/code.new" "$_d/code"
        ) 3>&- 4>&- 5>&- &
    fi
    : >"$_d/active"
    wake_streamer
}

attach_exec() {
    # $1: nonce, $2 and $3: stdout and stderr offsets to send from
    if ! is_nonce "$1" || ! is_count "$2" || ! is_count "$3"; then
        printf 'ERROR ATTACH: bad arguments\n' >&3
        return
    fi
    _d=$EXEC_ROOT/$1
    if [ ! -d "$_d" ]; then
        printf 'LOST %s\n' "$1" >&3
        return
    fi
    printf '%s %s\n' "$2" "$3" >"$_d/seek.new"
    $BB mv "$_d/seek.new" "$_d/seek"
    : >"$_d/active"
    wake_streamer
}

forget_exec() {
    # $1: nonce. Only ended executions: a running one keeps its logs.
    if is_nonce "$1" && [ -e "$EXEC_ROOT/$1/code" ] && [ ! -e "$EXEC_ROOT/$1/active" ]; then
        $BB rm -rf "${EXEC_ROOT:?}/$1"
    fi
}

printf 'READY %s\n' "$KREL" >&3
debug "READY written"
if [ -n "$SYSLOG" ]; then
    # The agent's busybox syslogd (it owns /dev/log) writes to a pipe, not a file that would grow
    # in /run; each line goes to the host as LOG <line>. One printf per line is one write, so a
    # LOG line never interleaves with the agent's answers. While the host end is away the relay
    # blocks, then syslogd once the pipe is full: logging waits, nothing is lost.
    $BB syslogd -n -O - </dev/null 2>/dev/null 4>&- 5>&- | while IFS= read -r _line; do
        printf 'LOG %s\n' "$_line" >&3
    done 4>&- 5>&- &
    debug "syslog relay started"
fi
while :; do
    if ! read -r verb a1 a2 a3 <&3; then
        # End of file: the host end is not connected. This write blocks until it connects again.
        printf 'READY %s\n' "$KREL" >&3
        continue
    fi
    case "$verb" in
        PING) printf 'READY %s\n' "$KREL" >&3 ;;
        EXEC) start_exec "$a1" "$a2" "$a3" ;;
        ATTACH) attach_exec "$a1" "$a2" "$a3" ;;
        FORGET) forget_exec "$a1" ;;
        POWEROFF) power_off ;;
        '') ;;
        *) printf 'ERROR unknown command %s\n' "$verb" >&3 ;;
    esac
done
