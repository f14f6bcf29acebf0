"""The debian12 image's tree: ``debootstrap --variant=minbase bookworm`` from the mirror apt uses
here, plus openssh-server and the user wnodes (uid 1000) for interactive VMs. The tree is cached
in OUT/.cache (built once; customised again only when the customisation changes), so rebuilds
are fast."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

LOG = logging.getLogger("wnodes.images.build")

DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Installed into the minbase tree: an SSH server for interactive (cloud) VMs.
DEBIAN_PACKAGES = ("openssh-server",)
# The unprivileged user interactive logins and batch jobs without their own account use.
JOB_USER, JOB_UID = "wnodes", 1000
# Every VM makes its own ed25519 host key at its first boot (wnodes-init.sh): an image must not
# carry one shared by every VM made from it. Drop-ins take precedence (first match wins).
# The text (its first line too, which still names build.py) is in the customisation stamp:
# changing a byte of it customises every cached tree again (apt in a chroot, from the mirror).
SSHD_DROP_IN = """\
# WNoDeS (deploy/images/build.py): keys only, one host key made at the VM's first boot.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine for the bookworm suite."""
    sources = [Path("/etc/apt/sources.list")]
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    key, _, value = line.partition(":")
                    if value and not key.startswith("#"):
                        fields[key.strip().lower()] = value.strip()
                uris = fields.get("uris", "").split()
                if uris and "deb" in fields.get("types", "").split() and DEBIAN_SUITE in fields.get("suites", "").split():
                    return uris[0]
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == DEBIAN_SUITE:
                    return parts[1]
    return DEFAULT_MIRROR


def debootstrap_tree(cache: Path, mirror: str) -> Path:
    """A cached `debootstrap --variant=minbase bookworm` tree; built once."""
    tree = cache / f"debootstrap-{DEBIAN_SUITE}"
    stamp = cache / f"debootstrap-{DEBIAN_SUITE}.done"
    if stamp.exists() and tree.is_dir():
        return tree
    if tree.exists():
        shutil.rmtree(tree)
    cache.mkdir(parents=True, exist_ok=True)
    LOG.info("debootstrap --variant=minbase %s from %s (a few minutes, once)", DEBIAN_SUITE, mirror)
    started = time.monotonic()
    subprocess.run(
        ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(tree), mirror],
        check=True,
        stdout=subprocess.DEVNULL if not LOG.isEnabledFor(logging.DEBUG) else None,
    )
    # Slim it: package caches and lists, docs and locales are not needed in a batch guest.
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*"):
        for p in tree.glob(pattern):
            if p.is_file():
                p.unlink()
    for d in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        for p in (tree / d).glob("*"):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    (tree / "etc/hostname").write_text("wnodes-debian12\n")
    stamp.write_text(f"{mirror}\n")
    LOG.info("debootstrap done in %.0f s", time.monotonic() - started)
    return tree


def apt_install(tree: Path, packages: Sequence[str], env: dict[str, str]) -> None:
    """apt-get install in a chroot of tree (its resolv.conf and policy-rc.d set by the caller)."""
    quiet = subprocess.DEVNULL if not LOG.isEnabledFor(logging.DEBUG) else None
    subprocess.run(["chroot", str(tree), "apt-get", "update", "-qq"], check=True, env=env, stdout=quiet)
    subprocess.run(["chroot", str(tree), "apt-get", "install", "-y", "-qq", "--no-install-recommends", "--", *packages],
                   check=True, env=env, stdout=quiet)  # fmt: skip
    subprocess.run(["chroot", str(tree), "apt-get", "clean"], check=True, env=env)


@contextlib.contextmanager
def chroot_ready(tree: Path) -> Iterator[dict[str, str]]:
    """While inside: no daemon starts in tree and its resolver is this host's. Yields apt's environment."""
    policy = tree / "usr/sbin/policy-rc.d"
    resolv = tree / "etc/resolv.conf"
    saved_resolv = resolv.read_bytes() if resolv.is_file() and not resolv.is_symlink() else None
    try:
        policy.write_text("#!/bin/sh\n# no daemon starts while the image is built\nexit 101\n")
        policy.chmod(0o755)
        resolv.unlink(missing_ok=True)
        shutil.copyfile("/etc/resolv.conf", resolv)
        yield {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    finally:
        policy.unlink(missing_ok=True)
        resolv.unlink(missing_ok=True)
        if saved_resolv is not None:
            resolv.write_bytes(saved_resolv)
    for p in (tree / "var/lib/apt/lists").glob("*"):
        if p.is_file():
            p.unlink()


def customise_debian_tree(tree: Path, cache: Path) -> Path:
    """Adds DEBIAN_PACKAGES and the user wnodes to the cached minbase tree (apt in a chroot, from
    the tree's own sources); done again only when the wanted customisation changes. Returns the
    stamp file whose time says when."""
    stamp = cache / f"debootstrap-{DEBIAN_SUITE}.custom"
    wanted = json.dumps({"packages": DEBIAN_PACKAGES, "user": [JOB_USER, JOB_UID], "sshd": SSHD_DROP_IN}, sort_keys=True)
    if stamp.exists() and stamp.read_text() == wanted:
        return stamp
    LOG.info("adding %s and the user %s to the %s tree", " ".join(DEBIAN_PACKAGES), JOB_USER, DEBIAN_SUITE)
    with chroot_ready(tree) as env:
        apt_install(tree, DEBIAN_PACKAGES, env)
        if not any(line.split(":")[2:3] == [str(JOB_UID)] for line in (tree / "etc/passwd").read_text().splitlines()):
            subprocess.run(["chroot", str(tree), "useradd", "--create-home", "--uid", str(JOB_UID), "--user-group",
                            "--shell", "/bin/bash", JOB_USER], check=True, env=env)  # fmt: skip
        # "*": no password can match, but the account is not locked ("!"): key logins work.
        shadow = tree / "etc/shadow"
        shadow.write_text("".join(
            (f"{JOB_USER}:*:" + line.split(":", 2)[2] if line.startswith(f"{JOB_USER}:") else line) + "\n"
            for line in shadow.read_text().splitlines()
        ))  # fmt: skip
    for key in (tree / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    drop_in = tree / "etc/ssh/sshd_config.d/wnodes.conf"
    drop_in.parent.mkdir(parents=True, exist_ok=True)
    drop_in.write_text(SSHD_DROP_IN)
    stamp.write_text(wanted)
    return stamp
