"""The local stack: bring it up, report on it, tear it down, kill and restart parts of it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploy.stack import etcd_cluster, processes
from deploy.stack.etcd_cluster import EtcdMember
from deploy.stack.gateway import StackGateway

LOG = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = Path(os.environ.get("WNODES_STACK_DIR", "/var/tmp/wnodes-stack"))
DEFAULT_IMAGES = Path(os.environ.get("WNODES_IMAGES_DIR", str(REPO / "var" / "images")))
LIBVIRT_HOST = "hv0"
OCCI_DEMO_USERS = (("alice", "atlas"), ("bob", "cms"))


@dataclass
class Proc:
    name: str
    kind: str  # etcd | nameserver | imagestore | hypervisor | gateway
    argv: list[str]
    log: str
    endpoint: str = ""
    pid: int = 0
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class StackState:
    dir: str
    driver: str
    key_root: str
    etcd: list[dict[str, object]]
    procs: list[Proc]
    gateway: str = ""
    images: list[str] = field(default_factory=list)
    slurm_conf: str = ""
    # Directories outside the state dir that `down` removes.
    extra_dirs: list[str] = field(default_factory=list)
    occi: str = ""
    """Base URL of the gateway's OCCI 1.2 endpoint."""
    occi_users: list[dict[str, str]] = field(default_factory=list)
    """The demo users of the OCCI endpoint: name, vo, password (two users in two VOs)."""

    def save(self) -> None:
        data = asdict(self)
        tmp = Path(self.dir) / "state.json.tmp"
        tmp.touch(mode=0o600)  # it holds the OCCI demo users' passwords
        tmp.chmod(0o600)
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(Path(self.dir) / "state.json")

    @staticmethod
    def load(directory: Path) -> StackState | None:
        path = directory / "state.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["procs"] = [Proc(**p) for p in data["procs"]]
        return StackState(**data)

    def proc(self, name: str) -> Proc:
        for p in self.procs:
            if p.name == name:
                return p
        raise KeyError(f"no process named {name!r}; see 'wnodes-admin stack status'")

    @property
    def etcd_endpoints(self) -> list[str]:
        return [f"127.0.0.1:{m['client_port']}" for m in self.etcd]


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class Stack:
    def __init__(self, directory: Path = DEFAULT_DIR) -> None:
        self.dir = directory

    @property
    def domain_prefix(self) -> str:
        """libvirt domain names of this stack's VMs. Unique per stack directory: an agent destroys
        domains with its prefix that its registry does not know, so two stacks on one host (two
        test runs, a demo beside a test) must never share one."""
        tag = hashlib.sha1(str(self.dir.resolve()).encode()).hexdigest()[:6]
        return f"wnodes-{tag}-{LIBVIRT_HOST}-"

    @property
    def state(self) -> StackState | None:
        return StackState.load(self.dir)

    # --- up -------------------------------------------------------------------------------

    def up(
        self,
        driver: str = "libvirt",
        hypervisors: int = 1,
        images_dir: Path = DEFAULT_IMAGES,
        progress: Callable[[str], None] = lambda _m: None,
        fake_vcpus: int = 16,
        fake_memory_mib: int = 65536,
        with_slurm: bool = False,
        agent_args: Sequence[str] = (),
    ) -> StackState:
        """agent_args: extra hypervisor-agent options (e.g. ``--fake-image-cache``)."""
        existing = self.state
        if existing is not None and any(processes.alive(p.pid) for p in existing.procs):
            raise RuntimeError(f"a stack is already running in {self.dir}: 'wnodes-admin stack down' first")
        if self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "logs").mkdir(parents=True)
        logs = self.dir / "logs"
        members = etcd_cluster.plan(3)
        key_root = "/wnodes/v1"
        state = StackState(str(self.dir), driver, key_root, [asdict(m) for m in members], [])
        try:
            self._up(state, members, logs, driver, hypervisors, images_dir, progress, fake_vcpus, fake_memory_mib, agent_args)
            if with_slurm:
                self._up_slurm(state, logs, progress)
        except BaseException:
            state.save()
            self.down()
            raise
        state.save()
        return state

    def _up(
        self, state: StackState, members: list[EtcdMember], logs: Path, driver: str, hypervisors: int,
        images_dir: Path, progress: Callable[[str], None], fake_vcpus: int, fake_memory_mib: int, agent_args: Sequence[str] = (),
    ) -> None:
        progress("etcd: starting a 3-member cluster")
        for m in members:
            argv = etcd_cluster.argv(m, members, self.dir / "etcd")
            state.procs.append(Proc(m.name, "etcd", argv, str(logs / f"{m.name}.log"), m.endpoint))
        for p in state.procs:
            self._start(p)
        state.save()
        processes.wait_until(lambda: etcd_cluster.healthy(state.etcd_endpoints), 30, "etcd cluster")
        etcd = ",".join(state.etcd_endpoints)
        common = ["--etcd", etcd, "--key-root", state.key_root]

        imagestore = f"127.0.0.1:{processes.free_port()}"
        state.procs.append(Proc("imagestore", "imagestore", _python("services.imagestore", "--listen", imagestore, *common,
                                "--blob-dir", str(self.dir / "imagestore" / "blobs")), str(logs / "imagestore.log"), imagestore))
        nameservers = []
        for i in range(3):
            ep = f"127.0.0.1:{processes.free_port()}"
            nameservers.append(ep)
            state.procs.append(Proc(f"nameserver{i}", "nameserver", _python("services.nameserver", "--listen", ep, "--id", f"ns{i}", *common),
                                    str(logs / f"nameserver{i}.log"), ep))
        progress("imagestore and 3 nameserver replicas: starting")
        self._start_and_wait([p for p in state.procs if p.kind in ("imagestore", "nameserver")])
        state.save()

        agent_ep = f"127.0.0.1:{processes.free_port()}"
        agent_argv = _python("services.hypervisor", "--listen", agent_ep, *common, "--imagestore", imagestore,
                             "--state-dir", str(self.dir / "hypervisor"), "--driver", driver)
        if driver == "fake":
            agent_argv += ["--host", "sim", "--simulate", str(hypervisors), "--fake-vcpus", str(fake_vcpus),
                           "--fake-memory-mib", str(fake_memory_mib)]
        else:
            # QEMU as root: the stack's files live in a private directory (0700) that libvirt's
            # qemu user cannot traverse. A site deployment keeps the unprivileged user.
            # 4 vCPUs per core: a 2-core development machine can then hold a handful of tiny guests.
            agent_argv += ["--host", LIBVIRT_HOST, "--qemu-as-root", "--cpu-allocation-ratio", "4",
                           "--domain-prefix", self.domain_prefix]
        agent_argv += list(agent_args)
        state.procs.append(Proc("hypervisor0", "hypervisor", agent_argv, str(logs / "hypervisor0.log"), agent_ep))
        gateway = f"127.0.0.1:{processes.free_port()}"
        state.gateway = gateway
        occi_port = processes.free_port()
        state.occi = f"http://127.0.0.1:{occi_port}"
        users_file = self._write_occi_users(state)
        state.procs.append(Proc("gateway", "gateway", _python("services.gateway", "--listen", gateway, "--nameservers",
                                ",".join(nameservers), "--imagestore", imagestore, "--occi-listen", f"127.0.0.1:{occi_port}",
                                "--occi-users", str(users_file)), str(logs / "gateway.log"), gateway))
        progress(f"hypervisor agent ({driver}, {hypervisors if driver == 'fake' else 1} host(s)) and gateway: starting")
        # Thousands of simulated hosts take a while to register: the waits grow with their number.
        self._start_and_wait([p for p in state.procs if p.kind in ("hypervisor", "gateway")], timeout=60 + hypervisors / 50)
        state.save()
        progress("registering images")
        state.images = self._register_images(state, images_dir, driver, progress)
        self._wait_hosts(state, hypervisors if driver == "fake" else 1)

    def _write_occi_users(self, state: StackState) -> Path:
        """Two demo users in two VOs, with fresh passwords (in the stack's private state)."""
        from services.gateway.occi.site_users import write_user_file

        state.occi_users = [{"name": name, "vo": vo, "password": secrets.token_urlsafe(12)} for name, vo in OCCI_DEMO_USERS]
        path = self.dir / "occi-users.toml"
        write_user_file(path, [(u["name"], u["vo"], u["password"], "") for u in state.occi_users], rounds=10)
        return path

    def _up_slurm(self, state: StackState, logs: Path, progress: Callable[[str], None]) -> None:
        from deploy.stack import slurm

        if state.driver != "libvirt":
            raise ValueError("--with-slurm needs the libvirt driver: batch jobs run in real VMs")
        layout = slurm.plan(self.dir / "slurm", LIBVIRT_HOST)
        with self._gateway(state) as gateway:
            host = gateway.hypervisor(LIBVIRT_HOST)
        slurm.write_configs(layout, cpus=host.vcpu_count, memory_mib=min(host.memory_mib, 16384), images=state.images,
                            gateway=state.gateway, python=sys.executable)
        state.slurm_conf = str(layout.conf)
        state.extra_dirs.append(str(layout.public))
        progress(f"slurm: munged, slurmctld and slurmd (node {layout.node} = hypervisor {LIBVIRT_HOST}); SLURM_CONF={layout.conf}")
        slurm.init_database(layout)
        argvs = slurm.argvs(layout)
        # Order matters: slurmdbd needs munge and the database; slurmctld registers with slurmdbd.
        for name in ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"):
            p = Proc(name, "slurm", argvs[name], str(logs / f"{name}.log"), f"127.0.0.1:{layout.ctld_port}" if name == "slurmctld" else "",
                     env=layout.env())
            state.procs.append(p)
            self._start(p)
            if name == "munged":
                processes.wait_until(layout.munge_socket.exists, 10, "munged", p.pid, Path(p.log))
            elif name == "mariadbd":
                processes.wait_until(layout.db_socket.exists, 60, "mariadbd", p.pid, Path(p.log))
                slurm.grant_database(layout)
            elif name == "slurmdbd":
                processes.wait_until(lambda: processes.tcp_open("127.0.0.1", layout.dbd_port), 60, "slurmdbd", p.pid, Path(p.log))
        state.save()
        processes.wait_until(lambda: slurm.node_idle(layout), 60, f"slurm node {layout.node}")

    def sync_slurm_images(self) -> list[str]:
        """Offers every image in the catalogue to Slurm jobs (node features, job_submit.lua)."""
        from deploy.stack import slurm

        state = self.state
        assert state is not None and state.slurm_conf
        with self._gateway(state) as gateway:
            names = sorted(gateway.image_names())
        public = Path(state.slurm_conf).parent.parent
        layout = slurm.SlurmLayout(self.dir / "slurm", LIBVIRT_HOST, 0, 0, public)
        slurm.sync_images(layout, names)
        state.images = names
        state.save()
        return names

    def _start(self, p: Proc) -> None:
        p.pid = processes.spawn(p.argv, Path(p.log), p.env)

    def _start_and_wait(self, procs: list[Proc], timeout: float = 60) -> None:
        for p in procs:
            self._start(p)
        for p in procs:
            processes.wait_until(lambda p=p: processes.grpc_healthy(p.endpoint), timeout, p.name, p.pid, Path(p.log))  # type: ignore[misc]

    def _gateway(self, state: StackState) -> StackGateway:
        return StackGateway(state.gateway)

    def _register_images(self, state: StackState, images_dir: Path, driver: str, progress: Callable[[str], None]) -> list[str]:
        names = []
        with self._gateway(state) as gateway:
            known = gateway.image_names()
            for manifest_path in sorted(images_dir.glob("*/manifest.json")):
                manifest = json.loads(manifest_path.read_text())
                name, folder = manifest["name"], manifest_path.parent
                if name not in known:
                    version = gateway.upload_image(
                        name, folder / "disk.qcow2", kernel=folder / "vmlinux", initrd=folder / "initrd.img",
                        cmdline=manifest.get("cmdline", ""), description=manifest.get("description", f"{name} (built by make setup)"),
                    )
                    progress(f"registered {version.name} ({version.disk.size_bytes // 1024} KiB disk)")
                names.append(name)
            if driver == "fake" and "tiny" not in names and "tiny" not in known:
                # The fake driver boots nothing: a small placeholder blob stands in for the disk.
                placeholder = self.dir / "placeholder.qcow2"
                placeholder.write_bytes(b"WNoDeS placeholder image for the fake driver\n")
                gateway.upload_image("tiny", placeholder, description="placeholder for the fake driver")
                names.append("tiny")
        return names

    def _wait_hosts(self, state: StackState, count: int) -> None:
        with self._gateway(state) as gateway:
            processes.wait_until(lambda: sum(h.state == 1 for h in gateway.hypervisors()) >= count, 30 + count / 50,
                                 f"{count} hypervisor(s)")

    # --- status / env ---------------------------------------------------------------------

    def status(self) -> list[dict[str, object]]:
        state = self.state
        if state is None:
            return []
        return [
            {"name": p.name, "kind": p.kind, "pid": p.pid, "endpoint": p.endpoint, "alive": processes.alive(p.pid), "log": p.log}
            for p in state.procs
        ]

    def env(self) -> dict[str, str]:
        state = self.state
        if state is None:
            raise RuntimeError(f"no stack in {self.dir}: run 'wnodes-admin stack up'")
        extra = {"SLURM_CONF": state.slurm_conf} if state.slurm_conf else {}
        if state.occi:
            extra["WNODES_OCCI_ENDPOINT"] = state.occi
            for i, user in enumerate(state.occi_users, 1):
                suffix = "" if i == 1 else str(i)
                extra[f"WNODES_OCCI_USER{suffix}"] = user["name"]
                extra[f"WNODES_OCCI_PASSWORD{suffix}"] = user["password"]
                extra[f"WNODES_OCCI_VO{suffix}"] = user["vo"]
        return {
            **extra,
            "WNODES_GATEWAY": state.gateway,
            "WNODES_STACK_DIR": state.dir,
            "WNODES_ETCD": ",".join(state.etcd_endpoints),
            "WNODES_USER": os.environ.get("USER", "root"),
            "WNODES_VO": "wnodes",
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }

    # --- faults, for tests and demonstrations ---------------------------------------------

    def kill(self, name: str, sig: int = 9) -> int:
        state = self.state
        assert state is not None
        p = state.proc(name)
        processes.stop(p.pid, timeout=5, sig=sig)
        return p.pid

    def restart(self, name: str, wait: bool = True) -> int:
        state = self.state
        assert state is not None
        p = state.proc(name)
        if processes.alive(p.pid):
            processes.stop(p.pid)
        if p.kind == "etcd":
            m = next(m for m in state.etcd if m["name"] == name)
            members = [EtcdMember(str(x["name"]), int(x["client_port"]), int(x["peer_port"])) for x in state.etcd]  # type: ignore[call-overload]
            p.argv = etcd_cluster.argv(EtcdMember(str(m["name"]), int(m["client_port"]), int(m["peer_port"])), members,  # type: ignore[call-overload]
                                       Path(state.dir) / "etcd", "existing")
        self._start(p)
        state.save()
        if wait and p.kind != "etcd":
            processes.wait_until(lambda: processes.grpc_healthy(p.endpoint), 60, p.name, p.pid, Path(p.log))
        return p.pid

    # --- down -----------------------------------------------------------------------------

    def down(self, progress: Callable[[str], None] = lambda _m: None) -> None:
        state = self.state
        if state is None:
            return
        gateway_up = any(p.kind == "gateway" and processes.alive(p.pid) for p in state.procs)
        agent_up = any(p.kind == "hypervisor" and processes.alive(p.pid) for p in state.procs)
        if gateway_up and agent_up and state.driver == "libvirt":  # simulated hosts hold nothing real
            progress("deleting every VM")
            self._delete_all_vms(state)
        for kind in ("slurm", "gateway", "hypervisor", "nameserver", "imagestore", "etcd"):
            for p in reversed(state.procs):  # slurmd before slurmctld before munged
                if p.kind == kind:
                    processes.stop(p.pid)
        if state.driver == "libvirt":
            _sweep_libvirt(self.domain_prefix)
        shutil.rmtree(Path(state.dir) / "hypervisor" / "run", ignore_errors=True)
        for extra in state.extra_dirs:
            shutil.rmtree(extra, ignore_errors=True)
        progress("stopped: no process, domain or overlay left")

    def _delete_all_vms(self, state: StackState) -> None:
        try:
            with self._gateway(state) as gateway:
                gateway.delete_every_vm(timeout=60)
        except Exception as exc:  # the sweep below still removes what is left
            LOG.warning("could not delete every VM through the gateway: %s", exc)


def _sweep_libvirt(prefix: str) -> None:
    """Destroys domains the stack's agent left (it was killed, or VMs survived an agent stop)."""
    try:
        out = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return
    for name in out.stdout.split():
        if name.startswith(prefix):
            subprocess.run(["virsh", "-c", "qemu:///system", "destroy", name], capture_output=True, timeout=30)
            subprocess.run(["virsh", "-c", "qemu:///system", "undefine", name], capture_output=True, timeout=30)
