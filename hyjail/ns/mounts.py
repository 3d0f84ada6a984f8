"""The jail's filesystem: first a plan (a list of mount operations), then one loop that does it.

Owns: which filesystems a jail gets (its root, a fresh /proc with its host-wide knobs read-only
or masked, a minimal /dev with its own devpts, a read-only /sys, the registry masked) and the
pivot_root that leaves the host's tree unmounted, not merely hidden. `plan()` is pure and
testable without a kernel; `carry_out()` runs in pid 1, inside the new mount namespace, before
the command exists.

Targets inside the root are opened with O_NOFOLLOW one component at a time and mounted through
/proc/self/fd, so a symlink planted in the root can never redirect a mount onto the host's tree.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass

from hyjail import linux
from hyjail.errors import SetupError
from hyjail.linux import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT
from hyjail.registry import STATE_DIR

# Every jail's root is bind-mounted at this directory of the state directory, inside its own
# private mount namespace only. Using a staging point (rather than binding PATH onto itself)
# makes PATH "/" work like any other.
STAGING_NAME = ".root"

# /proc files that act on the whole host and check only for uid 0, not a capability: root
# inside (uid 0 on files) must not write them. Read-only, like runc's and Docker's.
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
# /proc files that tell about the host's kernel; hidden under /dev/null or an empty tmpfs.
PROC_MASKED = ("kcore", "keys", "timer_list", "sched_debug", "latency_stats", "acpi", "scsi")

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
             ("ptmx", "pts/ptmx"))


@dataclass(frozen=True)
class BindRoot:
    """Make every host mount private (nothing propagates back) and bind PATH at `staging`
    (made if missing: an empty directory of the state directory)."""
    path: str
    staging: str


@dataclass(frozen=True)
class Detach:
    """Lazily unmount whatever the recursive bind brought in at `target` (root-relative)."""
    target: str


@dataclass(frozen=True)
class Mount:
    fstype: str
    target: str  # relative to the new root
    flags: int = 0
    data: str | None = None


@dataclass(frozen=True)
class ReadOnly:
    """Bind a file or directory onto itself, read-only; skipped if the kernel lacks it."""
    target: str


@dataclass(frozen=True)
class Mask:
    """Hide a file under /dev/null, a directory under an empty read-only tmpfs; skipped if
    the kernel lacks it."""
    target: str


@dataclass(frozen=True)
class MakeDir:
    target: str  # inside a filesystem this plan made
    mode: int = 0o755


@dataclass(frozen=True)
class BindDevice:
    """Bind one host device node onto a new file in the jail's /dev."""
    device: str
    target: str


@dataclass(frozen=True)
class Symlink:
    value: str
    target: str


@dataclass(frozen=True)
class PivotRoot:
    """Make the staged root the root and unmount the old one."""


Operation = (BindRoot | Detach | Mount | ReadOnly | Mask | MakeDir | BindDevice | Symlink
             | PivotRoot)

_NODEV_NOSUID_NOEXEC = MS_NOSUID | MS_NODEV | MS_NOEXEC


def plan(path: str, state_dir: str = STATE_DIR, proc: bool = True) -> list[Operation]:
    """The mount operations for a jail rooted at `path` (already resolved and checked). With
    proc False (no pid namespace of the jail's: a proc would show the host's processes) the
    jail's /proc stays an empty directory."""
    ops: list[Operation] = [BindRoot(path, os.path.join(state_dir, STAGING_NAME)), Detach("proc")]
    if proc:
        ops += [Mount("proc", "proc", _NODEV_NOSUID_NOEXEC),
                *(ReadOnly(f"proc/{name}") for name in PROC_READ_ONLY),
                *(Mask(f"proc/{name}") for name in PROC_MASKED)]
    ops += [
        Detach("dev"),
        Mount("tmpfs", "dev", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k,nr_inodes=256"),
    ]
    ops += [BindDevice(f"/dev/{name}", f"dev/{name}") for name in DEVICES]
    ops += [
        MakeDir("dev/pts"),
        Mount("devpts", "dev/pts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"),
        MakeDir("dev/shm", 0o1777),
        Mount("tmpfs", "dev/shm", _NODEV_NOSUID_NOEXEC, "mode=1777"),
    ]
    ops += [Symlink(value, f"dev/{name}") for name, value in DEV_LINKS]
    if os.path.isdir(os.path.join(path, "sys")) and not os.path.islink(os.path.join(path, "sys")):
        # A fresh sysfs shows the jail's own network devices; read-only, like runc's.
        ops += [Detach("sys"), Mount("sysfs", "sys", _NODEV_NOSUID_NOEXEC | MS_RDONLY)]
    state_inside = _relative_inside(state_dir, path)
    if state_inside is not None and os.path.isdir(os.path.join(path, state_inside)):
        # A jail over the host tree must not see or edit the registry of the jails.
        ops.append(Mount("tmpfs", state_inside, _NODEV_NOSUID_NOEXEC | MS_RDONLY, "size=4k"))
    ops.append(PivotRoot())
    return ops


def _relative_inside(target: str, root: str) -> str | None:
    rel = os.path.relpath(target, root)
    return None if rel.startswith("..") else rel


def _open_beneath(root_fd: int, target: str, directory: bool = True) -> int:
    """Open a root-relative directory (or any file, with directory=False) as O_PATH, refusing
    symlinks at every component."""
    fd = os.dup(root_fd)
    parts = target.split("/")
    try:
        for index, part in enumerate(parts):
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
            if directory or index < len(parts) - 1:
                flags |= os.O_DIRECTORY
            next_fd = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def carry_out(ops: list[Operation]) -> None:
    """Perform the plan. Runs in the jail's pid 1, in its new (unshared) mount namespace."""
    root_fd = -1
    try:
        for op in ops:
            try:
                root_fd = _carry_out_one(op, root_fd)
            except OSError as e:
                raise SetupError(f"jail setup: {_describe(op)}: {e.strerror}") from None
    finally:
        if root_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(root_fd)


def _protect(op: ReadOnly | Mask, fd: int, root_fd: int) -> None:
    path = _fd_path(fd)
    if isinstance(op, ReadOnly):
        linux.mount(path, path, None, MS_BIND | MS_REC)
        # The bind now covers the path; remount it read-only through a fresh walk (the old
        # fd, and any magic link to it, still names what lies under the bind).
        fresh = _open_beneath(root_fd, op.target, directory=False)
        try:
            linux.mount(None, _fd_path(fresh), None,
                        MS_BIND | MS_REMOUNT | MS_RDONLY | _NODEV_NOSUID_NOEXEC)
        finally:
            os.close(fresh)
    elif os.path.isdir(path):
        linux.mount("tmpfs", path, "tmpfs", _NODEV_NOSUID_NOEXEC | MS_RDONLY, "size=0")
    else:
        linux.mount("/dev/null", path, None, MS_BIND)


def _describe(op: Operation) -> str:
    target = getattr(op, "target", None)
    where = f" /{target}" if target else ""
    return f"{type(op).__name__}{where}"


def _carry_out_one(op: Operation, root_fd: int) -> int:
    """Perform one operation; returns the (possibly new) fd of the jail's root."""
    match op:
        case BindRoot(path, staging):
            linux.mount(None, "/", None, MS_REC | linux.MS_PRIVATE)
            os.makedirs(staging, 0o755, exist_ok=True)
            linux.mount(path, staging, None, MS_BIND | MS_REC)
            root_fd = os.open(staging, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        case Detach(target):
            fd = _open_beneath(root_fd, target)
            try:
                linux.umount2(_fd_path(fd), linux.MNT_DETACH)
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: not a mount point
                    raise
            finally:
                os.close(fd)
        case Mount(fstype, target, flags, data):
            fd = _open_beneath(root_fd, target)
            try:
                linux.mount(fstype, _fd_path(fd), fstype, flags, data)
            finally:
                os.close(fd)
        case ReadOnly(target) | Mask(target):
            try:
                fd = _open_beneath(root_fd, target, directory=False)
            except FileNotFoundError:
                return root_fd  # this kernel has no such file: nothing to protect
            try:
                _protect(op, fd, root_fd)
            finally:
                os.close(fd)
        case MakeDir(target, mode):
            os.mkdir(target, mode, dir_fd=root_fd)
            os.chmod(target, mode, dir_fd=root_fd)  # umask must not narrow it
        case BindDevice(device, target):
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666,
                             dir_fd=root_fd))
            # Bind, then reopen (the old fd names the file under the new mount) to remount.
            for flags in (MS_BIND, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC):
                fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
                try:
                    linux.mount(device if flags == MS_BIND else None, _fd_path(fd), None, flags)
                finally:
                    os.close(fd)
        case Symlink(value, target):
            os.symlink(value, target, dir_fd=root_fd)
        case PivotRoot():
            os.fchdir(root_fd)
            linux.pivot_root(".", ".")
            linux.umount2(".", linux.MNT_DETACH)
            os.chdir("/")
    return root_fd
