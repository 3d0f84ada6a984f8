"""The jail's filesystem: first a plan (a list of mount operations), then one loop that does it.

Owns: which filesystems a jail gets (its root, the administrator's binds and tmpfs of
`hyjail.fstab`, a fresh /proc with its host-wide knobs read-only
or masked, a minimal /dev with its own devpts, a read-only /sys with its host-wide parts
masked, the host's state masked in a jail over `/`) and the pivot_root that leaves the host's
tree unmounted, not merely hidden. `plan()` is pure and testable without a kernel (it looks at
the root by name, which is fine for planning); `carry_out()` runs in pid 1, inside the new
mount namespace, before the command exists, and trusts no name in the root.

The root can be shared (another jail may write it while this one starts), so carry_out reaches
every path under it through descriptors: the root is opened once, every target is opened
beneath it with openat2 refusing symlinks (a symlink where a mount target should be is a
refusal), mounts go onto the opened object, and a filesystem this plan makes is made detached
(`newmount`) and worked in through the descriptor of its own root, never found again by name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Sequence

from hyjail import linux
from hyjail.devices import DEVICES, same_node
from hyjail.errors import SetupError
from hyjail.frozen import frozen
from hyjail.linux import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT
from hyjail.logs import LOG_DIR
from hyjail.ns import newmount
from hyjail.platform import CACHE_DIR
from hyjail.registry import STATE_DIR

# Every jail's root is bind-mounted at this directory of the state directory, inside its own
# private mount namespace only. Using a staging point (rather than binding PATH onto itself)
# makes PATH "/" work like any other.
STAGING_NAME = ".root"

# /proc files that act on the whole host and check only for uid 0, not a capability: root
# inside (uid 0 on files) must not write them. Read-only, like runc's and podman's.
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
# /proc files that tell about the host's kernel; hidden under /dev/null or an empty tmpfs.
# The first ones are all that was masked before issue 13 (the weakening "unmasked-proc").
PROC_MASKED_BEFORE = ("kcore", "keys", "timer_list", "sched_debug", "latency_stats", "acpi",
                      "scsi")
PROC_MASKED = (
    *PROC_MASKED_BEFORE,
    "timer_stats", "interrupts", "asound",  # the rest of runc's, podman's and Docker's lists
    "slabinfo", "vmallocinfo", "pagetypeinfo",  # the kernel heap's layout: an exploit's map
    "kpagecount", "kpageflags", "kpagecgroup",  # every physical page of the host (uid 0 only)
    "config.gz",  # the host kernel's build configuration
    # The host's boot parameters (its root device, at times credentials for a network root
    # or a disk key); runc leaves it readable, but nothing in a jail needs the host's, and
    # an empty command line reads as "no parameters" to every parser.
    "cmdline",
)
# sysfs parts that runc and podman mask: firmware tables and EFI variables, energy counters
# (powercap: a side channel on the host's other work), the TPM, SELinux's policy.
SYS_MASKED = ("firmware", "devices/virtual/powercap", "devices/virtual/tpm", "fs/selinux")
_CPUS = "devices/system/cpu"  # each cpuN's thermal_throttle: podman masks them too

# Host state that no jail may see or write, masked where it lies inside the jail's root (a
# jail over `/`): (directory, the weakening that leaves it visible). REGISTRY stands for the
# caller's registry directory (root's /run/hyjail, or a user's own).
REGISTRY = "registry"
HOST_STATE = (
    (REGISTRY, None),
    (CACHE_DIR, "unchecked-cache"),  # the probe and the compiled filters every jail loads
    (LOG_DIR, None),  # persistent jails' logs, which their supervisors append to
)

FD_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
# FreeBSD's default devfs rulesets (/etc/defaults/devfs.rules) in Linux's names: the device
# nodes, and whether the jail gets terminals (its own devpts, ptmx). 0 is jail(8)'s "none
# given", which mount.devfs reads as 4 (devfsrules_jail); 5 (devfsrules_jail_vnet) adds
# only pf, which Linux has not.
DEVFS_RULESETS: dict[int, tuple[tuple[str, ...], bool]] = {
    1: ((), False),  # devfsrules_hide_all
    2: (("null", "zero", "random", "urandom"), False),  # devfsrules_unhide_basic
    3: (DEVICES, True),  # devfsrules_unhide_login
    4: (DEVICES, True),  # devfsrules_jail
    5: (DEVICES, True),  # devfsrules_jail_vnet
}
DEVFS_RULESETS[0] = DEVFS_RULESETS[4]


@frozen
class BindRoot:
    """Make every host mount private (nothing propagates back) and bind PATH at `staging`
    (made if missing: an empty directory of the state directory)."""
    path: str
    staging: str


@frozen
class Detach:
    """Lazily unmount whatever the recursive bind brought in at `target` (root-relative)."""
    target: str


@frozen
class Mount:
    """Mount a filesystem of fstype at target."""

    fstype: str
    target: str  # relative to the new root
    flags: int = 0
    data: str | None = None
    create: bool = False  # resolved in the root, made if missing (`fstab.JailMount.create`)


@frozen
class ReadOnly:
    """Bind a file or directory onto itself, read-only; skipped if the kernel lacks it."""
    target: str


@frozen
class Mask:
    """Hide a file under /dev/null, a directory under an empty read-only tmpfs; skipped if
    the kernel lacks it."""
    target: str


@frozen
class MakeDir:
    """Make a directory inside a filesystem the plan made."""

    target: str  # inside a filesystem this plan made
    mode: int = 0o755


@frozen
class BindDevice:
    """Bind one host device node onto a new file in the jail's /dev. `added`: an
    administrator's (`hyjail.devices.Device`), whose bound node must be the one checked."""
    device: str
    target: str
    added: object | None = None


@frozen
class Symlink:
    """Make a symlink inside a filesystem the plan made."""

    value: str
    target: str


@frozen
class BindHost:
    """Bind a host directory or file (the administrator's: jail.conf's mount, mount.fstab)
    onto target, with per-mount flags; recursive: the mounts beneath it too."""
    source: str  # resolved on the host: opened without symlinks
    target: str
    flags: int = 0
    recursive: bool = False
    create: bool = False  # resolved in the root, made if missing (`fstab.JailMount.create`)


@frozen
class MakePoint:
    """An OCI container's mount point, made (beneath the root, as the jail resolves it)
    before a read-only root would refuse it."""
    target: str
    directory: bool


@frozen
class ReadOnlyRoot:
    """The jail's root, and every mount beneath it, read-only (--read-only)."""


@frozen
class PivotRoot:
    """Make the staged root the root and unmount the old one."""


@frozen
class OpenRoot:
    """A chroot jail's root, opened where it lies (no bind, no namespace of its own): its
    mounts go onto the host's tree beneath it (`carry_out_on_host`)."""
    path: str


Operation = (BindRoot | Detach | Mount | ReadOnly | Mask | MakeDir | BindDevice | Symlink
             | BindHost | MakePoint | ReadOnlyRoot | PivotRoot | OpenRoot)

# What a read-only root still gets writable, as fresh tmpfs (where the root has them and the
# administrator's own mounts do not take their place): podman's and nspawn's choice.
WRITABLE = (("tmp", "mode=1777"), ("run", "mode=755"), ("var/tmp", "mode=1777"))

_NODEV_NOSUID_NOEXEC = MS_NOSUID | MS_NODEV | MS_NOEXEC


def _thermal_throttles() -> list[str]:
    """Each CPU's thermal_throttle directory under /sys (relative to it), in order."""
    try:
        names = os.listdir(os.path.join("/sys", _CPUS))
    except OSError:
        return []
    return sorted(f"{_CPUS}/{name}/thermal_throttle" for name in names
                  if name.startswith("cpu") and name[3:].isdigit()
                  and os.path.isdir(os.path.join("/sys", _CPUS, name, "thermal_throttle")))


def plan(path: str, state_dir: str = STATE_DIR, proc: bool = True,
         weakened: frozenset[str] = frozenset(), added: Sequence = (),
         devfs_ruleset: int = 4, read_only: bool = False,
         devices: Sequence = ()) -> list[Operation]:
    """The mount operations for a jail rooted at `path` (already resolved and checked). With
    proc False (no pid namespace of the jail's: a proc would show the host's processes) the
    jail's /proc stays an empty directory. `weakened`: the weakenings asked for. `added`:
    the administrator's mounts (`hyjail.fstab.JailMount`s), made first, in their order, as
    FreeBSD's jail(8) mounts mount.fstab before devfs. `devfs_ruleset`: which of
    DEVFS_RULESETS the jail's /dev holds, and `devices` (`hyjail.devices.Device`s) the
    administrator's besides. read_only: the root read-only but for WRITABLE's fresh tmpfs."""
    unmasked = "unmasked-proc" in weakened
    ops: list[Operation] = [BindRoot(path, os.path.join(state_dir, STAGING_NAME))]
    if read_only:
        given = {mount.target for mount in added}
        ops += [MakePoint(mount.target, mount.kind != "bind" or os.path.isdir(mount.source))
                for mount in added if mount.create and not mount.after_own]
        ops.append(ReadOnlyRoot())
        ops += [Mount("tmpfs", where, _NODEV_NOSUID_NOEXEC & ~MS_NOEXEC, data)
                for where, data in WRITABLE
                if where not in given and os.path.isdir(os.path.join(path, where))
                and not os.path.islink(os.path.join(path, where))]
    ops += [_added(mount) for mount in added if not mount.after_own]
    # A root without a /proc or /dev directory (FreeBSD's jail of an empty directory, or
    # mount.procfs/mount.devfs off there) gets none: nothing is made in the user's tree.
    # A symlink there is still refused by carry_out, not skipped.
    has = {name: os.path.lexists(os.path.join(path, name)) for name in ("proc", "dev")}
    if has["proc"]:
        ops.append(Detach("proc"))
    if proc and has["proc"]:
        ops += [Mount("proc", "proc", _NODEV_NOSUID_NOEXEC),
                *(ReadOnly(f"proc/{name}") for name in PROC_READ_ONLY),
                *(Mask(f"proc/{name}")
                  for name in (PROC_MASKED_BEFORE if unmasked else PROC_MASKED))]
    if has["dev"]:
        ops += _dev(*DEVFS_RULESETS[devfs_ruleset], devices)
    elif devices:
        raise SetupError(f"--device /{devices[0].path}: the jail's root has no /dev")
    if os.path.lexists(os.path.join(path, "sys")):  # a symlink there is refused, not skipped
        # A fresh sysfs shows the jail's own network devices; read-only, like runc's.
        ops += [Detach("sys"), Mount("sysfs", "sys", _NODEV_NOSUID_NOEXEC | MS_RDONLY)]
        if not unmasked:
            thermal = _thermal_throttles()
            ops += [Mask(f"sys/{name}") for name in (*SYS_MASKED, *thermal)]
    ops += [_added(mount) for mount in added if mount.after_own]
    for inside in host_state_within(path, state_dir, weakened):
        # A jail over the host tree must not see or edit the host's state.
        ops.append(Mount("tmpfs", inside, _NODEV_NOSUID_NOEXEC | MS_RDONLY, "size=4k"))
    ops.append(PivotRoot())
    return ops


def _added(mount) -> Operation:
    """An administrator's mount as an operation: always nosuid and nodev."""
    flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if mount.read_only else 0) | (
        MS_NOEXEC if mount.noexec else 0)
    if mount.kind == "bind":
        return BindHost(mount.source, mount.target, flags, mount.recursive, mount.create)
    if mount.kind == "mask":
        return Mask(mount.target)
    if mount.kind == "readonly":
        return ReadOnly(mount.target)
    return Mount(mount.kind, mount.target, flags, mount.data or None, mount.create)


def _dev(devices: tuple[str, ...], terminals: bool, added: Sequence = ()) -> list[Operation]:
    """A minimal /dev of the jail's own with a devfs ruleset's devices (4, devfsrules_jail,
    by default), its own devpts if the ruleset has terminals, and shared memory; nothing at
    all for ruleset 1 (devfsrules_hide_all). Then the administrator's `added` devices, with
    the directories their paths need (dev/net for dev/net/tun)."""
    ops: list[Operation] = [
        Detach("dev"),
        Mount("tmpfs", "dev", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k,nr_inodes=256"),
        *(BindDevice(f"/dev/{name}", f"dev/{name}") for name in devices),
    ]
    made = {f"dev/{name}" for name in devices}
    for device in added:
        if device.path in made:
            continue  # the ruleset's own, or asked for twice
        parts = device.path.split("/")
        for depth in range(2, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                ops.append(MakeDir(directory))
                made.add(directory)
        ops.append(BindDevice(device.host, device.path, device))
        made.add(device.path)
    if terminals:
        ops += [MakeDir("dev/pts"),
                Mount("devpts", "dev/pts", MS_NOSUID | MS_NOEXEC,
                      "newinstance,ptmxmode=0666,mode=620"),
                Symlink("pts/ptmx", "dev/ptmx")]
    if devices:
        ops += [MakeDir("dev/shm", 0o1777),
                Mount("tmpfs", "dev/shm", _NODEV_NOSUID_NOEXEC, "mode=1777"),
                *(Symlink(value, f"dev/{name}") for name, value in FD_LINKS)]
    return ops


def host_state_within(path: str, state_dir: str = STATE_DIR,
                      weakened: frozenset[str] = frozenset()) -> list[str]:
    """HOST_STATE's directories that lie inside the jail's root `path` (root-relative): what
    a mount namespace masks, and what a chroot, which cannot, refuses (`hyjail.enforcement`)."""
    found = []
    for directory, weakening in HOST_STATE:
        # The host's own path, resolved on the host (a /var/cache that is a symlink on this
        # host is masked where it leads); within the root, symlinks are refused as ever.
        real = os.path.realpath(state_dir if directory == REGISTRY else directory)
        inside = _relative_inside(real, path)
        if (inside is not None and weakening not in weakened
                and os.path.lexists(os.path.join(path, inside))):
            found.append(inside)
    return found


def _relative_inside(target: str, root: str) -> str | None:
    rel = os.path.relpath(target, root)
    return None if rel.startswith("..") else rel


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


# Every lookup under the root: never above it, never through a symlink or a magic link.
_BENEATH = linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS
_AT_FDCWD = -100
# An OCI container's mount points: its image's symlinks followed, clamped to its root.
_IN_ROOT = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS


def carry_out(ops: list[Operation], follow_symlinks: bool = False) -> None:
    """Perform the plan. Runs in the jail's pid 1, in its new (unshared) mount namespace.
    follow_symlinks (the weakening "follow-symlinks" only) looks every path up by name, from
    the root, following symlinks: the behaviour before issue 13."""
    setup = _Setup(follow_symlinks)
    try:
        for op in ops:
            try:
                setup.carry_out(op)
            except OSError as e:
                raise SetupError(setup.describe_failure(op, e)) from None
    finally:
        setup.close()


# A chroot jail's own copy of its root (the trace backend's), where its mounts go: under the
# registry's directory, one per JID (SPEC 3: mounts made on the host side are under it).
HOST_ROOTS = "roots"


def host_root_copy(state_dir: str, jid: int) -> str:
    return os.path.join(state_dir, HOST_ROOTS, str(jid))


def carry_out_on_host(path: str, staging: str, added: Sequence, read_only: bool = False,
                      follow_symlinks: bool = False, peer: bool = False) -> int:
    """A chroot jail's root with its own mounts (`hyjail.fstab.JailMount`s), made on the
    host: the root (every mount beneath it too) bound at `staging`, a directory of the
    registry's made here, and the mounts beneath that copy by descriptor, as the ns
    backend makes them beneath its staged root; the jail's chroot is the copy. So nothing
    is mounted where the root lies (other jails over it never see this one's mounts, and
    nothing stacks there), and `undo_on_host` detaches the copy with everything on it.
    Returns a descriptor of the copy. A message-queue file system is left out: without an
    IPC namespace of its own it would be the host's (and such a jail's POSIX queue calls
    are refused anyway). read_only: the copy read-only, with WRITABLE's fresh tmpfs where
    the administrator's mounts put nothing. follow_symlinks: as `carry_out`'s (the
    weakening "follow-symlinks" only). peer: the copy left in the root mount's peer group
    (the weakening "shared-root-copy" only)."""
    os.makedirs(os.path.dirname(staging), 0o700, exist_ok=True)
    os.mkdir(staging, 0o700)
    setup = _Setup(follow_symlinks)
    copy = -1
    try:
        setup.carry_out(OpenRoot(path))
        if read_only:
            for mount in added:  # made while they can be (no /dev of its own here, either)
                if mount.create and mount.kind != "mqueue":
                    setup.carry_out(MakePoint(mount.target, mount.kind != "bind"
                                              or os.path.isdir(mount.source)))
        copy = _root_copy(setup, path, staging, read_only, peer)
        if read_only:
            given = {mount.target for mount in added}
            for where, data in WRITABLE:
                if where not in given and os.path.isdir(os.path.join(path, where)) and not (
                        os.path.islink(os.path.join(path, where))):
                    setup.carry_out(Mount("tmpfs", where, _NODEV_NOSUID_NOEXEC & ~MS_NOEXEC,
                                          data))
        for mount in added:
            if mount.kind == "mqueue":
                continue
            op = _added(mount)
            try:
                setup.carry_out(op)
            except OSError as e:
                raise SetupError(setup.describe_failure(op, e)) from None
    except BaseException:
        undo_on_host(staging, copy)
        raise
    finally:
        setup.close()
    return copy


def _root_copy(setup: _Setup, path: str, staging: str, read_only: bool,
               peer: bool = False) -> int:
    """The root and every mount beneath it, cloned (read-only if asked) and attached at
    `staging`, private: the setup's root is then the copy. A descriptor of the copy.
    (A clone of a shared mount, as systemd makes every mount, is its peer: without the
    private copy the jail's mounts showed, and stayed, where the root lies.)"""
    tree = newmount.clone(setup.root, recursive=True)
    try:
        if read_only:
            newmount.restrict(tree, MS_RDONLY, recursive=True)
        point = os.open(staging, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            newmount.attach(tree, point)
        finally:
            os.close(point)
        if not peer:
            linux.mount(None, _fd_path(tree), None, MS_REC | linux.MS_PRIVATE)
    except OSError as e:
        os.close(tree)
        if e.errno == errno.ENOSYS:
            raise SetupError("--read-only: needs mount_setattr (Linux 5.12) to make every "
                             "mount of the root read-only") from None
        raise SetupError(f"jail setup: the root {path}: {e.strerror}") from None
    os.close(setup.root)
    setup.root = os.dup(tree)
    return tree


def _mounts_beneath(path: str) -> bool:
    """Whether any mount of this mount namespace lies beneath path (its mountinfo, whose
    mount points carry fstab's octal escapes)."""
    from hyjail.charsets import unvis
    below = path.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        return any(unvis(line.split()[4]).startswith(below) for line in f)


def undo_on_host(staging: str, copy: int) -> None:
    """Detach the jail's copy of its root with everything mounted on it (by descriptor: its
    staging directory is the registry's, which no jail reaches), and remove the directory."""
    if copy >= 0:
        try:
            linux.umount2(_fd_path(copy), linux.MNT_DETACH)
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: detached already
                print(f"hyjail: unmounting {staging}: {e.strerror}", file=sys.stderr)
        finally:
            os.close(copy)
    with contextlib.suppress(OSError):
        os.rmdir(staging)


class _Setup:
    """One carry_out: the jail's root and the filesystems made so far, each by descriptor."""

    def __init__(self, follow_symlinks: bool):
        self.follow = follow_symlinks
        self.path = ""  # the root's host path, for messages only
        self.root = -1
        self.made: dict[str, int] = {}  # root-relative target -> fd of the root of what we made
        self.in_root: set[str] = set()  # targets resolved as the jail resolves them (`_point`)

    def close(self) -> None:
        for fd in (self.root, *self.made.values()):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def describe_failure(self, op: Operation, error: OSError) -> str:
        target = getattr(op, "target", None)
        if error.errno in (errno.ELOOP, errno.EXDEV) and not self.follow:
            if isinstance(op, BindRoot):
                return (f"jail setup: {op.path}: the root's path now holds a symbolic link "
                        f"(it changed after it was checked): refused")
            if target is not None:
                return (f"jail setup: {os.path.join(self.path, target)}: a symbolic link where "
                        f"the jail's /{target} is set up: refused")
        if isinstance(op, BindHost):
            return f"jail setup: mount {op.source} on /{op.target}: {error.strerror}"
        where = f" /{target}" if target else ""
        return f"jail setup: {type(op).__name__}{where}: {error.strerror}"

    # ---- lookups ---------------------------------------------------------------------------

    def _where(self, target: str) -> tuple[int, str]:
        """The descriptor to resolve target from, and target relative to it: the root of the
        innermost filesystem this plan made that holds it (private to our mount namespace:
        nothing else can change it), else the jail's root."""
        if not self.follow:
            if target in self.made:
                return self.made[target], "."
            holders = [made for made in self.made if target.startswith(made + "/")]
            if holders:
                holder = max(holders, key=len)
                return self.made[holder], target[len(holder) + 1:]
        return self.root, target

    def _open_at(self, dirfd: int, path: str, flags: int) -> int:
        if self.follow:
            return os.open(path, flags | os.O_CLOEXEC, dir_fd=dirfd)
        return linux.openat2(dirfd, path, flags, _BENEATH)

    def open(self, target: str, flags: int = os.O_PATH) -> int:
        return self._open_at(*self._where(target), flags)

    def _point(self, target: str, flags: int, create: bool, directory: bool) -> int:
        """A mount point. An OCI container's (create) is resolved as the jail resolves it
        (the image's symlinks followed, clamped to the root) and made if missing, each
        missing directory by name in its opened parent (runc's way); else it must be there,
        with no symlink on its way."""
        if not create or self.follow:
            return self.open(target, flags)
        self.in_root.add(target)
        base, rel = self._where(target)
        try:
            return linux.openat2(base, rel, flags, _IN_ROOT)
        except FileNotFoundError:
            pass
        parts = rel.split("/")
        for depth in range(1, len(parts) + 1):
            with contextlib.suppress(FileNotFoundError):
                os.close(linux.openat2(base, "/".join(parts[:depth]), os.O_PATH, _IN_ROOT))
                continue
            parent = linux.openat2(base, "/".join(parts[:depth - 1]) or ".",
                                   os.O_PATH | os.O_DIRECTORY, _IN_ROOT)
            try:
                name = parts[depth - 1]
                if depth == len(parts) and not directory:
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, 0o644, dir_fd=parent))
                else:
                    os.mkdir(name, 0o755, dir_fd=parent)
            except FileExistsError:
                pass
            finally:
                os.close(parent)
        return linux.openat2(base, rel, flags, _IN_ROOT)

    @contextlib.contextmanager
    def parent(self, target: str):
        """(fd of target's directory, target's last component), for making target there."""
        head, name = os.path.split(target)
        fd = self.open(head, os.O_PATH | os.O_DIRECTORY)
        try:
            yield fd, name
        finally:
            os.close(fd)

    # ---- the operations --------------------------------------------------------------------

    def carry_out(self, op: Operation) -> None:
        match op:
            case BindRoot(path, staging):
                self.path = path
                self._bind_root(path, staging)
            case OpenRoot(path):
                self.path = path
                self.root = linux.openat2(_AT_FDCWD, path, os.O_PATH | os.O_DIRECTORY,
                                          linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS)
            case Detach(target):
                fd = self.open(target, os.O_PATH | os.O_DIRECTORY)
                try:
                    linux.umount2(_fd_path(fd), linux.MNT_DETACH)
                except OSError as e:
                    if e.errno != errno.EINVAL:  # EINVAL: not a mount point
                        raise
                finally:
                    os.close(fd)
            case Mount(fstype, target, flags, data, create):
                self._mount(fstype, target, flags, data, create)
            case ReadOnly(target) | Mask(target):
                try:
                    fd = self.open(target)
                except FileNotFoundError:
                    return  # this kernel has no such file: nothing to protect
                try:
                    self._protect(op, fd)
                finally:
                    os.close(fd)
            case MakeDir(target, mode):
                with self.parent(target) as (parent, name):
                    os.mkdir(name, mode, dir_fd=parent)
                    made = self._open_at(parent, name, os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        os.fchmod(made, mode)  # umask must not narrow it
                    finally:
                        os.close(made)
            case BindDevice(device, target, added):
                with self.parent(target) as (parent, name):
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, 0o666, dir_fd=parent))
                    # Bind, then reopen (the old fd names the file under the new mount) to
                    # remount; both by the name in our own fresh /dev.
                    for flags in (MS_BIND, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC):
                        fd = self._open_at(parent, name, os.O_PATH)
                        try:
                            # Reopened after the bind: an administrator's device must be the
                            # node that was checked (the host's name may lead elsewhere now).
                            if (flags != MS_BIND and added is not None
                                    and not same_node(os.fstat(fd), added)):
                                raise SetupError(f"--device /{added.path}: {device} is no "
                                                 f"longer {added.describe()}")
                            linux.mount(device if flags == MS_BIND else None, _fd_path(fd), None,
                                        flags)
                        finally:
                            os.close(fd)
            case Symlink(value, target):
                with self.parent(target) as (parent, name):
                    os.symlink(value, name, dir_fd=parent)
            case BindHost(source, target, flags, recursive, create):
                self._bind_host(source, target, flags, recursive, create)
            case MakePoint(target, directory):
                os.close(self._point(target, os.O_PATH, True, directory))
            case ReadOnlyRoot():
                try:
                    newmount.restrict(self.root, MS_RDONLY, recursive=True)
                except OSError as e:
                    if e.errno != errno.ENOSYS:
                        raise
                    raise SetupError("--read-only: needs mount_setattr (Linux 5.12) to make "
                                     "every mount of the root read-only") from None
            case PivotRoot():
                if not self.follow:
                    self._check_in_place()
                os.fchdir(self.root)
                linux.pivot_root(".", ".")
                linux.umount2(".", linux.MNT_DETACH)
                os.chdir("/")

    def _bind_root(self, path: str, staging: str) -> None:
        linux.mount(None, "/", None, MS_REC | linux.MS_PRIVATE)
        os.makedirs(staging, 0o755, exist_ok=True)  # in the host's own state directory
        if self.follow:
            linux.mount(path, staging, None, MS_BIND | MS_REC)
            self.root = os.open(staging, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            return
        # The root, opened once (checked at admission, resolved to a path without symlinks:
        # one there now means someone swapped a component since), and bound by descriptor.
        source = linux.openat2(_AT_FDCWD, path, os.O_PATH | os.O_DIRECTORY,
                               linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS)
        state = os.open(os.path.dirname(staging), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            point = linux.openat2(state, STAGING_NAME, os.O_PATH | os.O_DIRECTORY, _BENEATH)
            try:
                linux.mount(_fd_path(source), _fd_path(point), None, MS_BIND | MS_REC)
            finally:
                os.close(point)
            # The name, looked up again in the state directory, crosses onto the new bind.
            self.root = linux.openat2(state, STAGING_NAME, os.O_PATH | os.O_DIRECTORY, _BENEATH)
            if not _same_file(self.root, source):
                raise SetupError(f"jail setup: {staging}: not the jail's root after binding it")
        finally:
            os.close(state)
            os.close(source)

    def _mount(self, fstype: str, target: str, flags: int, data: str | None,
               create: bool = False) -> None:
        point = self._point(target, os.O_PATH | os.O_DIRECTORY, create, directory=True)
        try:
            made = newmount.make(fstype, flags, data)
            try:
                newmount.attach(made, point)
            except BaseException:
                os.close(made)
                raise
        finally:
            os.close(point)
        if self.follow:
            os.close(made)
        else:
            self.made[target] = made

    def _bind_host(self, source: str, target: str, flags: int, recursive: bool,
                   create: bool = False) -> None:
        """A detached copy of the host's source (opened without symlinks: it was resolved
        when the jail was asked for, so one now means a component was swapped since), its
        flags set before it is attached onto the target opened beneath the root."""
        try:
            if self.follow:
                opened = os.open(source, os.O_PATH | os.O_CLOEXEC)
            else:
                opened = linux.openat2(_AT_FDCWD, source, os.O_PATH,
                                       linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EXDEV):
                raise SetupError(f"jail setup: {source}: a symbolic link on its path now (it "
                                 f"changed after it was checked): refused") from None
            raise SetupError(f"jail setup: {source}: {e.strerror}") from None
        try:
            tree = newmount.clone(opened, recursive)
        except OSError as e:
            if e.errno == errno.EINVAL and not recursive:  # a user namespace's locked mounts
                raise SetupError(f"jail setup: {source}: has mounts beneath it that this "
                                 f"jail's user namespace may not leave out (rbind takes "
                                 f"them too)") from None
            raise
        finally:
            os.close(opened)
        try:
            try:
                newmount.restrict(tree, flags, recursive)
                later = 0
            except OSError as e:  # before Linux 5.12: remounted once attached, which
                if e.errno != errno.ENOSYS:  # holds only for the top mount of the tree
                    raise
                if recursive and _mounts_beneath(source):
                    raise SetupError(f"jail setup: mount {source} on /{target}: it has "
                                     f"mounts beneath it, which only mount_setattr (Linux "
                                     f"5.12) restricts with it (rbind)") from None
                later = flags
            point = self._point(target, os.O_PATH, create,
                                directory=stat.S_ISDIR(os.fstat(tree).st_mode))
            try:
                if stat.S_ISDIR(os.fstat(point).st_mode) != stat.S_ISDIR(os.fstat(tree).st_mode):
                    raise SetupError(f"jail setup: mount {source} on /{target}: a directory "
                                     f"and a file (a bind needs two of a kind)")
                newmount.attach(tree, point)
            finally:
                os.close(point)
            if later:  # the old fd still names what lies under the bind
                fresh = self._point(target, os.O_PATH, create, directory=True)
                try:
                    linux.mount(None, _fd_path(fresh), None, MS_BIND | MS_REMOUNT | later)
                finally:
                    os.close(fresh)
        except BaseException:
            os.close(tree)
            raise
        if self.follow:
            os.close(tree)
        else:
            self.made[target] = tree

    def _protect(self, op: ReadOnly | Mask, fd: int) -> None:
        path = _fd_path(fd)
        if isinstance(op, ReadOnly):
            linux.mount(path, path, None, MS_BIND | MS_REC)
            # The bind now covers the path; remount it read-only through a fresh lookup (the
            # old fd, and any magic link to it, still names what lies under the bind).
            fresh = self.open(op.target)
            try:
                linux.mount(None, _fd_path(fresh), None,
                            MS_BIND | MS_REMOUNT | MS_RDONLY | _NODEV_NOSUID_NOEXEC)
            finally:
                os.close(fresh)
        elif stat.S_ISDIR(os.fstat(fd).st_mode):
            linux.mount("tmpfs", path, "tmpfs", _NODEV_NOSUID_NOEXEC | MS_RDONLY, "size=0")
        else:
            linux.mount("/dev/null", path, None, MS_BIND)

    def _check_in_place(self) -> None:
        """Every filesystem we made on the root's own tree is still where the jail will look
        for it: a directory of a shared root renamed away under it (and something else put
        in its place) while we worked is a refusal, never a jail with a /dev of another's."""
        for target, made in self.made.items():
            if any(target.startswith(other + "/") for other in self.made):
                continue  # inside a filesystem of ours: nothing else can move it
            moved = SetupError(f"jail setup: {os.path.join(self.path, target)}: moved while "
                               f"the jail started: refused")
            try:  # a bound file, too
                found = (linux.openat2(self.root, target, os.O_PATH, _IN_ROOT)
                         if target in self.in_root else
                         self._open_at(self.root, target, os.O_PATH))
            except OSError:  # a symlink or nothing in its place now
                raise moved from None
            try:
                if not _same_file(found, made):
                    raise moved
            finally:
                os.close(found)


def _same_file(fd: int, other: int) -> bool:
    first, second = os.fstat(fd), os.fstat(other)
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)
