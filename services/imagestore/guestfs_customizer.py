"""Customising a copy of an image's disk with libguestfs, at publish time.

What can be applied (``Customization``): files, syslog relayed to the hypervisor, kernel modules
loaded at boot, root's SSH authorized keys and a site script. Each becomes one human-readable line
recorded on the new version (``describe``).

The guest side of two of them lives in the guest agent (deploy/images/guest/wnodes-init.sh), which
reads two files the customisation writes:

- ``/etc/wnodes/syslog-to-hypervisor``: start busybox syslogd into /run/wnodes/syslog and relay
  each new line to the host as ``LOG <line>`` on the control port (the guests have no network to
  their host: the guest channel is the only way out);
- ``/etc/wnodes/modules``: .ko paths, dependencies first, loaded with insmod at boot. The modules
  are copied from this machine's /lib/modules/<release>, where <release> is read from the image's
  kernel: a module built for another kernel would not load.

libguestfs blocks for tens of seconds (launch() alone is 13-16 s under TCG): ``GuestfsCustomizer.apply``
is a plain blocking function, run in a worker process of its own (see ``main`` below for why not
a thread); the imagestore awaits that process, so its event loop stays free. No grpc here.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument, WnodesError, error_to_dict
from services.common.kernel_modules import ModuleNotFound, ModulesDep

Progress = Callable[[str, int], None]

SYSLOG_FLAG = "/etc/wnodes/syslog-to-hypervisor"
MODULES_LIST = "/etc/wnodes/modules"
SCRIPT_PATH = "/root/.wnodes-site-script"
_LINUX_VERSION = re.compile(rb"Linux version (\S+) \(")
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_FILES_BYTES = 3 << 20


@dataclass(frozen=True)
class FileSpec:
    path: str
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Customization:
    files: tuple[FileSpec, ...] = ()
    syslog_to_hypervisor: bool = False
    kernel_modules: tuple[str, ...] = ()
    authorized_keys: tuple[str, ...] = ()
    script: str = ""

    def check(self) -> None:
        """Refuses what cannot be applied, before anything is copied."""
        if not (self.files or self.syslog_to_hypervisor or self.kernel_modules or self.authorized_keys or self.script.strip()):
            raise InvalidArgument("nothing to customise: give files, syslog_to_hypervisor, kernel_modules, authorized_keys or a script",
                                  reason="EMPTY_CUSTOMIZATION")
        for f in self.files:
            p = PurePosixPath(f.path)
            if not p.is_absolute() or ".." in p.parts or p == PurePosixPath("/"):
                raise InvalidArgument(f"file path {f.path!r} must be absolute, without '..'", reason="INVALID_FILE_PATH")
            if f.mode & ~0o7777:
                raise InvalidArgument(f"{f.path}: mode {f.mode:o} is not a permission mode")
        if sum(len(f.content) for f in self.files) > MAX_FILES_BYTES:
            raise InvalidArgument(f"files total more than {MAX_FILES_BYTES >> 20} MiB: build a recipe instead")
        for m in self.kernel_modules:
            if not _MODULE_NAME.match(m):
                raise InvalidArgument(f"kernel module name {m!r} is not valid", reason="INVALID_MODULE_NAME")
        for k in self.authorized_keys:
            if "\n" in k.strip() or len(k.split()) < 2:
                raise InvalidArgument("each authorized key is one OpenSSH public key line (TYPE BASE64 [COMMENT])", reason="INVALID_SSH_KEY")

    def describe(self) -> list[str]:
        """One line per change, as recorded on the new version."""
        lines = [f"file {f.path} ({len(f.content)} bytes, mode {f.mode:04o})" for f in self.files]
        if self.syslog_to_hypervisor:
            lines.append("syslog relayed to the hypervisor over the guest channel")
        if self.kernel_modules:
            lines.append(f"kernel modules loaded at boot: {', '.join(self.kernel_modules)}")
        for k in self.authorized_keys:
            parts = k.split()
            lines.append(f"root authorized key {parts[0]} {parts[2] if len(parts) > 2 else parts[1][-12:]}")
        if self.script.strip():
            first = next((ln for ln in self.script.splitlines() if ln.strip() and not ln.startswith("#!")), "")
            lines.append(f"site script ({len(self.script.splitlines())} lines): {first.strip()[:80]}")
        return lines


def kernel_release(kernel: Path) -> str:
    """The release string in an (uncompressed) kernel image: 'Linux version 6.1.0-56-amd64 ('."""
    data = kernel.read_bytes()
    m = _LINUX_VERSION.search(data)
    if m is None:
        raise FailedPrecondition(f"cannot find the kernel release in {kernel.name}: is it compressed?", reason="KERNEL_RELEASE_UNKNOWN")
    return m.group(1).decode()


def module_load_order(modules_dir: Path, names: tuple[str, ...]) -> list[str]:
    """Paths (relative to modules_dir) of the named modules and their dependencies, each after
    everything it depends on (modules.dep)."""
    modules = ModulesDep.read(modules_dir)
    try:
        return [modules.path(name) for name in modules.load_order(names)]
    except ModuleNotFound as err:
        raise InvalidArgument(f"kernel {modules_dir.name} has no module {err.name!r}", reason="MODULE_NOT_FOUND") from None


@dataclass
class GuestfsCustomizer:
    """Applies a Customization to a disk image with libguestfs (python3-guestfs, Debian).

    cache_dir: where libguestfs keeps its appliance (built once, ~16 s; then reused).
    modules_root: the kernel modules available for copying (this machine's /lib/modules).
    """

    cache_dir: Path | None = None
    modules_root: Path = Path("/lib/modules")
    launch_seconds: list[float] = field(default_factory=list)

    def _handle(self) -> Any:
        import guestfs  # Debian's python3-guestfs; imported here so the imagestore starts without it

        g = guestfs.GuestFS(python_return_dict=True)
        # Set explicitly unless the operator did: the libvirt backend needs a libvirtd session we
        # do not want, and without VT-x/AMD-V (a PVM /dev/kvm) the appliance must run under TCG or
        # it hangs at boot.
        if "LIBGUESTFS_BACKEND" not in os.environ:
            g.set_backend("direct")
        if "LIBGUESTFS_BACKEND_SETTINGS" not in os.environ and not _hardware_virt():
            g.set_backend_settings(["force_tcg"])
        if self.cache_dir is not None and "LIBGUESTFS_CACHEDIR" not in os.environ:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            g.set_cachedir(str(self.cache_dir))
        return g

    def apply(self, disk: Path, fmt: str, kernel: Path | None, spec: Customization, progress: Progress) -> list[str]:
        """Customises disk in place (a copy: never a published blob). Returns describe()."""
        modules: list[str] = []
        release = ""
        if spec.kernel_modules:
            if kernel is None:
                raise FailedPrecondition("kernel modules need an image with a direct-boot kernel", reason="NO_KERNEL")
            release = kernel_release(kernel)
            if not (self.modules_root / release / "modules.dep").exists():
                raise FailedPrecondition(f"the imagestore has no modules for kernel {release} in {self.modules_root}",
                                         reason="KERNEL_MODULES_UNAVAILABLE")
            modules = module_load_order(self.modules_root / release, spec.kernel_modules)
        g = self._handle()
        try:
            g.add_drive_opts(str(disk), format=fmt, readonly=False)
            progress("starting the libguestfs appliance", 15)
            t0 = time.monotonic()
            g.launch()
            self.launch_seconds.append(time.monotonic() - t0)
            _mount_root(g)
            progress("root file system mounted", 55)
            for f in spec.files:
                g.mkdir_p(str(PurePosixPath(f.path).parent))
                g.write(f.path, f.content)
                g.chmod(f.mode, f.path)
            if spec.files:
                progress(f"{len(spec.files)} file(s) written", 60)
            if spec.syslog_to_hypervisor:
                g.mkdir_p("/etc/wnodes")
                g.write(SYSLOG_FLAG, b"# written by WNoDeS customisation: wnodes-init relays syslog to the hypervisor\n")
                progress("syslog relay to the hypervisor enabled", 65)
            if modules:
                for mod in modules:
                    target = f"/lib/modules/{release}/{mod}"
                    g.mkdir_p(str(PurePosixPath(target).parent))
                    g.upload(str(self.modules_root / release / mod), target)
                g.mkdir_p("/etc/wnodes")
                g.write(MODULES_LIST, "".join(f"/lib/modules/{release}/{m}\n" for m in modules).encode())
                progress(f"{len(modules)} kernel module file(s) installed for {release}", 70)
            if spec.authorized_keys:
                g.mkdir_p("/root/.ssh")
                g.chmod(0o700, "/root/.ssh")
                keys_file = "/root/.ssh/authorized_keys"
                existing = g.read_file(keys_file) if g.is_file(keys_file) else b""
                if existing and not existing.endswith(b"\n"):
                    existing += b"\n"
                g.write(keys_file, existing + "".join(k.strip() + "\n" for k in spec.authorized_keys).encode())
                g.chmod(0o600, keys_file)
                progress(f"{len(spec.authorized_keys)} SSH key(s) authorised for root", 75)
            if spec.script.strip():
                progress("running the site script", 78)
                g.write(SCRIPT_PATH, spec.script.encode())
                try:
                    output = g.sh(f"/bin/sh {shlex.quote(SCRIPT_PATH)} 2>&1")
                except RuntimeError as exc:
                    raise FailedPrecondition(f"the site script failed: {exc}", reason="SITE_SCRIPT_FAILED") from exc
                finally:
                    if g.is_file(SCRIPT_PATH):
                        g.rm(SCRIPT_PATH)
                tail = output.strip().splitlines()[-3:]
                progress("site script done" + (f": {' / '.join(tail)}" if tail else ""), 85)
            g.sync()
            g.umount_all()
            g.shutdown()
        finally:
            g.close()
        return spec.describe()


def _mount_root(g: Any) -> None:
    roots = g.inspect_os()
    if roots:
        mounts = g.inspect_get_mountpoints(roots[0])
        for mp in sorted(mounts, key=len):
            g.mount(mounts[mp], mp)
        return
    # Our images are a bare ext4 file system (no partition table) that inspection may not
    # recognise as an OS (tiny is busybox only): take the one mountable file system.
    filesystems = [dev for dev, kind in g.list_filesystems().items() if kind not in ("swap", "unknown", "")]
    if len(filesystems) != 1:
        raise FailedPrecondition(f"cannot tell the root file system among {filesystems}", reason="ROOT_FS_UNKNOWN")
    g.mount(filesystems[0], "/")


def _hardware_virt() -> bool:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"^flags\s*:.*\b(vmx|svm)\b", cpuinfo, re.M)) and os.access("/dev/kvm", os.R_OK | os.W_OK)


# --- the worker process -------------------------------------------------------------------
# libguestfs forks and execs its helpers (supermin, qemu). Forked from a process running gRPC's
# threads, the child aborts before its exec (gRPC's fork handlers meet the descriptors libguestfs
# closes): "supermin killed by signal 6". So the imagestore never loads libguestfs itself; each
# customisation runs `python -m services.imagestore.guestfs_customizer` with the job as JSON on stdin,
# and progress, result or error as JSON lines on stdout.


def job_to_json(disk: Path, fmt: str, kernel: Path | None, spec: Customization, cache_dir: Path | None) -> bytes:
    return json.dumps({
        "disk": str(disk), "format": fmt, "kernel": str(kernel) if kernel else "", "cache_dir": str(cache_dir) if cache_dir else "",
        "files": [{"path": f.path, "content": base64.b64encode(f.content).decode(), "mode": f.mode} for f in spec.files],
        "syslog_to_hypervisor": spec.syslog_to_hypervisor, "kernel_modules": list(spec.kernel_modules),
        "authorized_keys": list(spec.authorized_keys), "script": spec.script,
    }).encode()


def main() -> None:
    job = json.load(sys.stdin)
    spec = Customization(
        files=tuple(FileSpec(f["path"], base64.b64decode(f["content"]), int(f["mode"])) for f in job["files"]),
        syslog_to_hypervisor=bool(job["syslog_to_hypervisor"]), kernel_modules=tuple(job["kernel_modules"]),
        authorized_keys=tuple(job["authorized_keys"]), script=job["script"],
    )

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    customizer = GuestfsCustomizer(cache_dir=Path(job["cache_dir"]) if job["cache_dir"] else None)
    try:
        applied = customizer.apply(Path(job["disk"]), job["format"], Path(job["kernel"]) if job["kernel"] else None, spec,
                                   lambda text, percent: emit({"step": text, "percent": percent}))
    except WnodesError as exc:
        emit({"error": error_to_dict(exc)})
        sys.exit(1)
    except RuntimeError as exc:  # libguestfs reports everything as RuntimeError
        emit({"error": error_to_dict(FailedPrecondition(f"libguestfs: {str(exc).splitlines()[0]}", reason="GUESTFS_FAILED"))})
        sys.exit(1)
    emit({"applied": applied, "launch_seconds": customizer.launch_seconds})


if __name__ == "__main__":
    main()
