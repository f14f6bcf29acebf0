"""Root file system trees: the tiny image's (busybox only: the fastest boot) and the guest agent
``/sbin/wnodes-init`` (``guest/wnodes-init.sh``) every image carries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from deploy.images.busybox import BUSYBOX, busybox_applets

AGENT_SCRIPT = Path(__file__).resolve().parent / "guest" / "wnodes-init.sh"
AGENT_BUSYBOX = "usr/lib/wnodes/busybox"

TINY_OS_RELEASE = """\
NAME="WNoDeS tiny"
ID=wnodes-tiny
ID_LIKE=busybox
VERSION_ID=1
PRETTY_NAME="WNoDeS tiny (busybox)"
HOME_URL="https://web.infn.it/wnodes"
"""

TINY_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
wnodes:x:1000:1000:WNoDeS job user:/home/wnodes:/bin/sh
pilot001:x:1001:1001:pilot job user:/home/pilot001:/bin/sh
pilot002:x:1002:1002:pilot job user:/home/pilot002:/bin/sh
"""

TINY_GROUP = """\
root:x:0:
daemon:x:1:
nogroup:x:65534:
wnodes:x:1000:
pilot001:x:1001:
pilot002:x:1002:
"""


def populate_tiny_root(root: Path) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "var/tmp",
              "root", "home/wnodes", "home/pilot001", "home/pilot002"):  # fmt: skip
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(mode=0o1777, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "var/tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    for uid, home in ((1000, "wnodes"), (1001, "pilot001"), (1002, "pilot002")):
        os.chown(root / "home" / home, uid, uid)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for applet in busybox_applets():
        link = root / applet
        if link.name == "busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(root / "bin/busybox", link.parent))
    (root / "etc/os-release").write_text(TINY_OS_RELEASE)
    (root / "etc/passwd").write_text(TINY_PASSWD)
    (root / "etc/group").write_text(TINY_GROUP)
    (root / "etc/hostname").write_text("wnodes-tiny\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n")
    install_agent(root)


def install_agent(root: Path) -> None:
    # The agent's own static busybox, off the users' PATH: its streamer runs tools many times a
    # second, and a dynamically linked binary costs about 60 ms to start under TCG.
    tools = root / AGENT_BUSYBOX
    tools.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, tools)
    target = root / "sbin/wnodes-init"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    shutil.copyfile(AGENT_SCRIPT, target)
    os.chmod(target, 0o755)
