"""Interactive access to a VM: its SSH port on the host, and the contextualisation that lets its
owner in.

A VM created with SSH public keys gets a NIC on QEMU's user-mode network with the host's
127.0.0.1:PORT forwarded to the guest's port 22. The port is picked here, from a range of the
agent's, and kept in the VM's record, so the endpoint stays the same across stop and start
(unless, while the VM was stopped, something else took the port: then it gets a new one).

Contextualisation runs through the guest channel, as root, the moment the guest is ready (no
libguestfs, no config drive): one shell script writes the keys into authorized_keys of root and
of the user wnodes (uid 1000), stores the user data, runs it once if it is a script, and waits
until sshd listens, so an ACTIVE VM with keys is one you can log into.
"""

from __future__ import annotations

import base64
import errno
import socket
from collections.abc import Callable

from services.common.errors import NoCapacity
from services.hypervisor.drivers.base import CONTEXTUALISE_HEADER

SSH_GUEST_PORT = 22
LOOPBACK = "127.0.0.1"


def port_is_free(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:port now (QEMU's slirp binds with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


class SshPorts:
    """Host ports for SSH forwards, one per VM of this host that asked for SSH."""

    def __init__(self, first: int, last: int, is_free: Callable[[int], bool] = port_is_free) -> None:
        if not 1024 <= first <= last <= 65535:
            raise ValueError(f"SSH port range {first}-{last} must lie within 1024-65535")
        self._first, self._last = first, last
        self._is_free = is_free
        self._by_vm: dict[str, int] = {}

    def note(self, vm_id: str, endpoint: str) -> None:
        """Remembers the port a VM's record holds (a stopped VM keeps it while it is not bound)."""
        port = port_of(endpoint)
        if port:
            self._by_vm[vm_id] = port

    def release(self, vm_id: str) -> None:
        self._by_vm.pop(vm_id, None)

    def assign(self, vm_id: str, recorded: str = "") -> str:
        """The VM's endpoint: the one it has if that port is still free, else a new one."""
        port = port_of(recorded)
        taken = {p for v, p in self._by_vm.items() if v != vm_id}
        if port and port not in taken and self._is_free(port):
            self._by_vm[vm_id] = port
            return endpoint_of(port)
        for candidate in range(self._first, self._last + 1):
            if candidate not in taken and self._is_free(candidate):
                self._by_vm[vm_id] = candidate
                return endpoint_of(candidate)
        raise NoCapacity(
            f"no free port left for SSH in {self._first}-{self._last} on this hypervisor", reason="NO_SSH_PORT"
        )


def endpoint_of(port: int) -> str:
    return f"{LOOPBACK}:{port}"


def port_of(endpoint: str) -> int:
    host, _, port = endpoint.rpartition(":")
    return int(port) if host == LOOPBACK and port.isdigit() else 0


def contextualisation_script(ssh_public_keys: list[str], user_data: bytes, wait_for_sshd: float = 20.0) -> str:
    """The root shell script (POSIX sh: busybox ash and dash) that lets the owner into the guest.

    Keys and user data travel base64-encoded, so nothing in them is ever parsed by the shell.
    """
    keys = base64.b64encode("".join(k + "\n" for k in ssh_public_keys).encode()).decode()
    data = base64.b64encode(user_data).decode()
    polls = max(1, int(wait_for_sshd / 0.05))
    return f"""{CONTEXTUALISE_HEADER}
keys_b64='{keys}'
user_data_b64='{data}'
set -e
umask 077
bb=
[ -x /usr/lib/wnodes/busybox ] && bb=/usr/lib/wnodes/busybox
install_keys() {{
    # $1: home, $2: uid, $3: gid
    mkdir -p "$1/.ssh"
    printf '%s' "$keys_b64" | $bb base64 -d >"$1/.ssh/authorized_keys.new"
    mv "$1/.ssh/authorized_keys.new" "$1/.ssh/authorized_keys"
    chown "$2:$3" "$1" "$1/.ssh" "$1/.ssh/authorized_keys"
    chmod 700 "$1/.ssh"
}}
if [ -n "$keys_b64" ]; then
    install_keys /root 0 0
    chmod 700 /root
    while IFS=: read -r name _pw uid gid _gecos home _shell; do
        if [ "$uid" = 1000 ]; then
            install_keys "${{home:-/home/$name}}" "$uid" "$gid"
        fi
    done </etc/passwd
fi
mkdir -p /run/wnodes
printf '%s' "$user_data_b64" | $bb base64 -d >/run/wnodes/user-data
if [ -s /run/wnodes/user-data ] && [ "$($bb head -c 2 /run/wnodes/user-data)" = '#!' ] && [ ! -e /var/lib/wnodes/user-data.done ]; then
    mkdir -p /var/lib/wnodes
    : >/var/lib/wnodes/user-data.done
    chmod 700 /run/wnodes/user-data
    (/run/wnodes/user-data >/var/log/wnodes-user-data.log 2>&1; echo "$?" >/var/log/wnodes-user-data.exit) </dev/null &
fi
if [ -n "$keys_b64" ]; then
    if [ ! -x /usr/sbin/sshd ]; then
        echo "this image has no SSH server (/usr/sbin/sshd)" >&2
        exit 3
    fi
    i=0
    until [ -s /run/sshd.pid ]; do
        i=$((i + 1))
        if [ "$i" -gt {polls} ]; then
            echo "sshd did not start within {wait_for_sshd:.0f} s" >&2
            exit 4
        fi
        $bb sleep 0.05
    done
fi
"""
