"""A real Slurm beside the stack: munged, a MariaDB for slurmdbd's accounting, slurmdbd,
slurmctld and one slurmd whose node is also the WNoDeS hypervisor (a real and a virtual worker
node at once). Private ports, paths, database and munge key, so it never meets another Slurm or
database on the machine. Jobs that ask for an image go through clients/lrms/slurm/job_submit.lua;
their exit codes reach `sacct` as they reach `scontrol show job`."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.stack.processes import free_port

REPO = Path(__file__).resolve().parents[2]
JOB_SUBMIT_TEMPLATE = REPO / "clients" / "lrms" / "slurm" / "job_submit.lua"
FEATURE_PREFIX = "img_"


@dataclass(frozen=True)
class SlurmLayout:
    root: Path
    node: str
    ctld_port: int
    slurmd_port: int
    # What users' processes need (slurm.conf, the munge socket, the job spool from which
    # slurmstepd runs batch scripts as their owners) lives here, outside the stack's possibly
    # private directory. The munge key and the daemons' state stay private.
    public: Path
    dbd_port: int = 0
    db_port: int = 0

    @property
    def etc(self) -> Path:
        return self.public / "etc"

    @property
    def conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.public / "munge" / "munge.sock"

    @property
    def db_dir(self) -> Path:
        return self.root / "mariadb"

    @property
    def db_socket(self) -> Path:
        return self.db_dir / "run" / "mariadb.sock"

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}


def plan(root: Path, node: str) -> SlurmLayout:
    public = Path(tempfile.mkdtemp(prefix="wnodes-slurm-", dir="/var/tmp"))
    public.chmod(0o755)
    return SlurmLayout(root, node, free_port(), free_port(), public, free_port(), free_port())


def write_configs(
    layout: SlurmLayout, *, cpus: int, memory_mib: int, images: Sequence[str], gateway: str, python: str,
    static_map: dict[str, dict[str, str]] | None = None, on_vm_failure: str = "fail",
    recycle: dict[str, dict[str, float]] | None = None,
) -> None:
    root = layout.root
    for sub in ("state", "log", "run", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("etc", "munge", "spool"):
        (layout.public / sub).mkdir(parents=True, exist_ok=True)
        (layout.public / sub).chmod(0o755)
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
    features = ",".join(f"{FEATURE_PREFIX}{name}" for name in images)
    static = static_map if static_map is not None else {"partition": {f"vm-{name}": name for name in images}}
    # One partition per image, mapped statically: `sbatch -p vm-debian12 job.sh` needs no constraint.
    # A partition whose VMs are kept for the next job of the same user and image (recycling).
    recycle = recycle if recycle is not None else {"recycle": {"max_reuse": 3, "idle_timeout_s": 5}}
    partitions = "".join(
        f"PartitionName={part} Nodes={layout.node} MaxTime=INFINITE State=UP\n" for part in [*static.get("partition", {}), *recycle]
    )
    layout.conf.write_text(f"""# Written by deploy/stack/slurm.py for a WNoDeS development stack.
ClusterName=wnodes
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={layout.ctld_port}
SlurmdPort={layout.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={layout.munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={layout.public}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobSubmitPlugins=lua
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={layout.dbd_port}
# For slurmdbd with munge, the "password" names the munge socket to use (ours is private).
AccountingStoragePass={layout.munge_socket}
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# sched_interval: in this stack, slurmctld allocated jobs (VM jobs, bare jobs, bare jobs with a
# feature constraint alike) on the grid of its main scheduling pass, not at submit time. Slurm's
# default is a pass a minute; every second keeps the wait at half a second on average
# (measured: submit to allocation 0.2-1.0 s, against 0.4-2.0 s with passes every 2 s).
SchedulerParameters=sched_interval=1
DefMemPerCPU=256
KillWait=10
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
# The node is a real worker node and a WNoDeS hypervisor: its features are the images it boots.
NodeName={layout.node} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mib} Feature={features} State=UNKNOWN
PartitionName=batch Nodes={layout.node} Default=YES MaxTime=INFINITE State=UP
{partitions}""")
    json_config = layout.etc / "wnodes_lrms.json"
    json_config.write_text(json.dumps({"gateway": gateway, "default_vo": "wnodes", "default_memory_mib": 256,
                                       "on_vm_failure": on_vm_failure, "recycle": recycle}, indent=2))
    write_dbd_config(layout)
    lua_config = layout.etc / "wnodes_lrms.lua"
    lua_images = ", ".join(f'["{name}"] = true' for name in images)
    lua_static = ", ".join(
        f"{kind} = {{" + ", ".join(f'["{k}"] = "{v}"' for k, v in mapping.items()) + "}" for kind, mapping in static.items()
    )
    lua_config.write_text(f"""-- Written by deploy/stack/slurm.py: what job_submit.lua needs to know.
return {{
   feature_prefix = "{FEATURE_PREFIX}",
   images = {{ {lua_images} }},
   static_map = {{ {lua_static} }},
   python = "{python}",
   json_config = "{json_config}",
}}
""")
    (layout.etc / "job_submit.lua").write_text(JOB_SUBMIT_TEMPLATE.read_text().replace("@WNODES_LRMS_CONFIG@", str(lua_config)))


DB_USER = "slurm"
DB_NAME = "slurm_acct_db"


def write_dbd_config(layout: SlurmLayout) -> None:
    """slurmdbd.conf beside slurm.conf (slurmdbd finds it through SLURM_CONF); it holds the
    database password, so only its owner (SlurmUser, root here) may read it."""
    password = secrets.token_hex(16)
    (layout.root / "db_password").write_text(password)
    (layout.root / "db_password").chmod(0o600)
    conf = layout.etc / "slurmdbd.conf"
    conf.touch(mode=0o600)
    conf.chmod(0o600)
    conf.write_text(f"""# Written by deploy/stack/slurm.py for a WNoDeS development stack.
AuthType=auth/munge
AuthInfo=socket={layout.munge_socket}
DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort={layout.dbd_port}
SlurmUser=root
LogFile={layout.root}/log/slurmdbd.log
PidFile={layout.root}/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={layout.db_port}
StorageUser={DB_USER}
StoragePass={password}
StorageLoc={DB_NAME}
""")


def init_database(layout: SlurmLayout) -> None:
    """A fresh MariaDB data directory, private to this stack (about 2 s)."""
    data = layout.db_dir / "data"
    if (data / "mysql").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    (layout.db_dir / "run").mkdir(exist_ok=True)
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root", "--skip-test-db",
                    "--auth-root-authentication-method=normal"], check=True, capture_output=True, timeout=120)


def grant_database(layout: SlurmLayout) -> None:
    """The account slurmdbd uses, over loopback TCP; root only through the private socket."""
    password = (layout.root / "db_password").read_text().strip()
    sql = (f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
           f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'127.0.0.1'; FLUSH PRIVILEGES;")
    subprocess.run(["mariadb", "--no-defaults", "-S", str(layout.db_socket), "-u", "root", "-e", sql],
                   check=True, capture_output=True, timeout=60)


def sync_images(layout: SlurmLayout, images: Sequence[str]) -> None:
    """The node's features follow the images it can boot: after an image is added, jobs may ask
    for it (job_submit.lua reads its settings at every submission)."""
    lua_config = layout.etc / "wnodes_lrms.lua"
    text = lua_config.read_text()
    start = text.index("images = {")
    end = text.index("}", start)
    lua_images = ", ".join(f'["{name}"] = true' for name in images)
    lua_config.write_text(text[:start] + f"images = {{ {lua_images} " + text[end:])
    features = ",".join(f"{FEATURE_PREFIX}{name}" for name in images)
    subprocess.run(["scontrol", "update", f"NodeName={layout.node}", f"AvailableFeatures={features}", f"ActiveFeatures={features}"],
                   env={"SLURM_CONF": str(layout.conf), "PATH": "/usr/bin:/bin"}, check=True, capture_output=True, timeout=30)


def argvs(layout: SlurmLayout) -> dict[str, list[str]]:
    m = layout.root / "munge"
    db = layout.db_dir
    return {
        "mariadbd": ["mariadbd", "--no-defaults", f"--datadir={db / 'data'}", f"--socket={layout.db_socket}",
                     f"--port={layout.db_port}", "--bind-address=127.0.0.1", "--user=root", "--skip-name-resolve",
                     f"--pid-file={db / 'run' / 'mariadb.pid'}", f"--log-error={db / 'mariadb.err'}"],
        "slurmdbd": ["slurmdbd", "-D"],
        "munged": ["munged", "--foreground", "--force", f"--socket={layout.munge_socket}", f"--key-file={m / 'munge.key'}",
                   f"--log-file={m / 'munged.log'}", f"--pid-file={m / 'munged.pid'}", f"--seed-file={m / 'munged.seed'}"],
        "slurmctld": ["slurmctld", "-D", "-i", "-f", str(layout.conf)],
        "slurmd": ["slurmd", "-D", "-f", str(layout.conf), "-N", layout.node],
    }


def node_idle(layout: SlurmLayout) -> bool:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, env={"SLURM_CONF": str(layout.conf), "PATH": "/usr/bin:/bin"})
    states = set(out.stdout.split())  # one line per partition the node is in
    return out.returncode == 0 and bool(states) and states <= {"idle", "mix", "alloc"}
