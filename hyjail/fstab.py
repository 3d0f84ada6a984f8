"""File systems a jail's administrator adds to its tree: jail.conf's `mount` (one fstab(5)
line each) and `mount.fstab` (a file of them), `hyjail run`'s --bind, --ro-bind and --tmpfs,
and the one typed form they all become.

Owns: parsing fstab(5) lines as FreeBSD's jail(8) reads them (fields split on white space,
vis(3) escapes such as `\\040` in the first two, at least device, mount point and type, the
options optional, the dump and pass numbers ignored) into `JailMount`s: a bind of a host
directory or file (`nullfs`, FreeBSD's bind mount, or Linux's `bind`/`rbind`) or a fresh
`tmpfs`; `devfs`, `procfs`, `fdescfs`, `linprocfs` and `linsysfs` on the jail's own /dev,
/proc, /dev/fd and /sys are what every jail gets already (no-ops). Every other type, option
or place is refused in one line.

Where FreeBSD mounts these on the host, hyjail mounts them in the jail's own mount namespace
only (`hyjail.ns.mounts` carries them out, every path by descriptor): nothing is left on the
host, and the host never follows a name in the jail's tree. A mount point is a host path
within the jail's path (as FreeBSD's fstab lines are written), kept root-relative; a source
is resolved on the host now and opened without symlinks when mounted, so a component swapped
for one in between is a refusal. A source holding hyjail's own state is refused: a bind of it
would hand the registry or the filter cache to the jail.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable

from hyjail import charsets
from hyjail.errors import SetupError
from hyjail.frozen import frozen

# The jail's own file systems, which hyjail makes and a user mount must not cover.
OWN = ("proc", "dev", "sys")
# FreeBSD pseudo file systems on the place every jail has them anyway: accepted as no-ops.
PSEUDO = {"devfs": "dev", "procfs": "proc", "linprocfs": "proc", "fdescfs": "dev/fd",
          "linsysfs": "sys"}
BIND_TYPES = ("nullfs", "bind", "none")
# tmpfs options passed to the kernel, as Linux names them (FreeBSD's `inodes` is nr_inodes).
TMPFS_DATA = {"size": "size", "mode": "mode", "nr_inodes": "nr_inodes", "inodes": "nr_inodes",
              "nr_blocks": "nr_blocks", "uid": "uid", "gid": "gid"}
# Options that mean nothing here: every mount is made at the same moment, none by mount(8).
IGNORED = ("defaults", "rw", "late", "auto", "noatime", "relatime", "atime", "nosuid",
           "nodev", "exec", "bind", "_netdev", "failok")
MAX_FSTAB = 1 << 20
_VALUE_CHARS = charsets.ALNUM | {"%"}  # a tmpfs option's value: 64m, 1777, 50%


@frozen
class JailMount:
    """One file system added to the jail's tree, in its own mount namespace. Always nosuid
    and nodev (a jail gets no device node nor setuid binary from the host this way)."""
    # "bind" (source: a host path, resolved) or "tmpfs"; an OCI container's also "mqueue"
    # (a POSIX message queue file system of its IPC namespace), "mask" (hidden under
    # /dev/null or an empty tmpfs) and "readonly" (bound onto itself, read-only).
    kind: str
    target: str  # relative to the jail's root, normalized, never "" or above it
    source: str = ""
    read_only: bool = False
    recursive: bool = False  # rbind: the mounts beneath the source too
    noexec: bool = False
    data: str = ""  # tmpfs: size=,mode=,... as the kernel takes them
    # An OCI container's: the mount point is resolved as the jail resolves it (a symlink
    # of the image's followed inside its root), and made if missing, as runc does; else it
    # must be there, with no symlink on its way.
    create: bool = False

    def describe(self) -> str:
        what = self.source if self.kind == "bind" else self.kind
        return f"{what} on /{self.target}"

    @property
    def after_own(self) -> bool:
        """Made after the jail's own /proc, /dev and /sys: a container's mounts there (its
        /dev/shm, /dev/mqueue) and its masked and read-only paths."""
        return self.kind in ("mask", "readonly") or any(
            self.target == own or self.target.startswith(own + "/") for own in OWN)


def from_lines(lines: Iterable[str], root_given: str, root: str, parameter: str = "mount"
               ) -> list[JailMount]:
    """The JailMounts of fstab lines; blank lines and `#` comments skip (a `mount.fstab`
    file's), pseudo file systems on their own places are no-ops."""
    found = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entry = _entry(line, root_given, root, parameter)
        if entry is not None:
            found.append(entry)
    return found


def from_file(path: str, root_given: str, root: str) -> list[JailMount]:
    """mount.fstab: a host file, read by the host, so never one beneath the jail's root (a
    jail could write there the host paths it wants bound into it)."""
    if "\0" in path or not path:
        raise SetupError(f"mount.fstab: {path!r}: not a file name")
    where = os.path.realpath(path)
    real_root = os.path.realpath(root)
    if os.path.commonpath([where, real_root]) == real_root:
        raise SetupError(f"mount.fstab: {path}: within the jail's root, where the jail could "
                         f"write what it wants mounted")
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise SetupError(f"mount.fstab: {path}: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SetupError(f"mount.fstab: {path}: not a regular file")
        data = b""
        while len(data) <= MAX_FSTAB and (chunk := os.read(fd, MAX_FSTAB + 1 - len(data))):
            data += chunk
    finally:
        os.close(fd)
    if len(data) > MAX_FSTAB:
        raise SetupError(f"mount.fstab: {path}: longer than {MAX_FSTAB} bytes")
    return from_lines(data.decode(errors="surrogateescape").splitlines(), root_given, root,
                      "mount.fstab")


def from_options(binds: Iterable[str], ro_binds: Iterable[str], tmpfs: Iterable[str]
                 ) -> list[JailMount]:
    """hyjail run's --bind SRC:DST, --ro-bind SRC:DST and --tmpfs DST[:OPTIONS] (bwrap's and
    podman's words; DST a path inside the jail, OPTIONS tmpfs's, comma-separated), binds
    first, each kind in its order given."""
    found = []
    for option, given, read_only in (("--bind", binds, False), ("--ro-bind", ro_binds, True)):
        for value in given:
            source, colon, point = value.partition(":")
            if not colon or not source or not point:
                raise SetupError(f"{option} {value}: SRC:DST, both absolute paths")
            found.append(JailMount("bind", _inside(point, option),
                                   source=host_source(source, option), read_only=read_only))
    for value in tmpfs:
        point, _, options = value.partition(":")
        entry = _tmpfs(_inside(point, "--tmpfs"), options.split(",") if options else [],
                       "--tmpfs")
        found.append(entry)
    return found


def _inside(point: str, parameter: str) -> str:
    """A path inside the jail, as its own processes name it: root-relative, normalized by
    name (no `..` above the root), never the root, /proc, /dev or /sys."""
    if not point.startswith("/"):
        raise SetupError(f"{parameter}: {point}: not an absolute pathname")
    target = os.path.normpath(point).lstrip("/")
    _refuse_own(target, point, parameter)
    return target


def _refuse_own(target: str, point: str, parameter: str) -> None:
    if target == "" or any(target == own or target.startswith(own + "/") for own in OWN):
        raise SetupError(f"{parameter}: {point}: the jail's root, /proc, /dev and /sys are "
                         f"hyjail's to make")


def _entry(line: str, root_given: str, root: str, parameter: str) -> JailMount | None:
    fields = line.split()[:4]
    if len(fields) < 3:
        raise SetupError(f"{parameter}: {line.strip()}: missing information")
    try:
        source, point = (charsets.unvis(field) for field in fields[:2])
    except ValueError:
        raise SetupError(f"{parameter}: {line.strip()}: fstab parse error") from None
    fstype = fields[2]
    options = [o for o in (fields[3] if len(fields) > 3 else "").split(",") if o]
    target = _target(point, root_given, root, parameter)
    if fstype in PSEUDO:
        if target != PSEUDO[fstype]:
            raise SetupError(f"{parameter}: {fstype} on {point}: the jail's own {fstype} is "
                             f"made on its /{PSEUDO[fstype]} only")
        return None
    _refuse_own(target, point, parameter)
    if "rbind" in options or "bind" in options or fstype in BIND_TYPES:
        return _bind(source, target, options, parameter)
    if fstype == "tmpfs":
        return _tmpfs(target, options, parameter)
    raise SetupError(f"{parameter}: {fstype} on {point}: a jail mounts only nullfs (a bind "
                     f"of a host directory) and tmpfs")


def _target(point: str, root_given: str, root: str, parameter: str) -> str:
    """The mount point relative to the jail's root, as jail.conf names it: a host path
    within the jail's path (as given, or resolved). Normalized by name only: nothing in the
    jail's tree is looked at here."""
    if not point.startswith("/"):
        raise SetupError(f"{parameter}: {point}: not an absolute pathname")
    normal = os.path.normpath(point)
    for base in dict.fromkeys((os.path.normpath(root_given), root)):
        if base == "/":
            return normal.lstrip("/")
        if normal == base or normal.startswith(base + "/"):
            return normal[len(base):].lstrip("/")
    raise SetupError(f"{parameter}: {point}: not within the jail's path {root_given} (a "
                     f"jail's mounts are made in its own mount namespace, never the host's)")


def _bind(source: str, target: str, options: list[str], parameter: str) -> JailMount:
    flags = _flags(options, (), parameter)
    return JailMount("bind", target, source=host_source(source, parameter),
                     read_only=flags["ro"], recursive=flags["rbind"], noexec=flags["noexec"])


def host_source(source: str, parameter: str) -> str:
    """A bind's source: an absolute host path with no symbolic link on it at all. A source
    may lie in a jail's tree (a directory shared between jails), where that jail could put a
    symlink to any host directory in a component's place; so none is followed, here or when
    pid 1 opens it (a component swapped for one in between is refused there too). Weakened
    (follow-symlinks): resolved by name, as before."""
    from hyjail import linux, weaken
    if not source.startswith("/"):
        raise SetupError(f"{parameter}: {source}: not an absolute pathname")
    if "follow-symlinks" in weaken.weakened():
        return os.path.realpath(source)
    source = os.path.normpath(source)
    try:
        os.close(linux.openat2(-100, source, os.O_PATH,
                               linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS))
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EXDEV):
            raise SetupError(f"{parameter}: {source}: a symbolic link on its path"
                             f"{_leads_to(source)}") from None
        raise SetupError(f"{parameter}: {source}: {e.strerror}") from None
    _refuse_host_state(source, parameter)
    return source


def _tmpfs(target: str, options: list[str], parameter: str) -> JailMount:
    flags = _flags(options, tuple(TMPFS_DATA), parameter)
    data = []
    for option in options:
        key, _, value = option.partition("=")
        if key in TMPFS_DATA:
            if not charsets.made_of(value, _VALUE_CHARS):
                raise SetupError(f"{parameter}: tmpfs option {option}: not a size or number")
            data.append(f"{TMPFS_DATA[key]}={value}")
    return JailMount("tmpfs", target, read_only=flags["ro"], noexec=flags["noexec"],
                     data=",".join(data))


def _flags(options: list[str], data_keys: tuple[str, ...], parameter: str) -> dict[str, bool]:
    flags = {"ro": False, "rbind": False, "noexec": False}
    for option in options:
        key = option.partition("=")[0]
        if key in flags and "=" not in option:
            flags[key] = True
        elif key in data_keys or option in IGNORED:
            continue
        elif option in ("suid", "dev"):
            raise SetupError(f"{parameter}: option {option}: a jail's mounts are always "
                             f"nosuid and nodev")
        else:
            known = "size=, mode=, nr_inodes=" if data_keys else "rbind"
            raise SetupError(f"{parameter}: option {option}: not one hyjail knows (ro, rw, "
                             f"noexec, {known})")
    return flags


def _leads_to(source: str) -> str:
    """A hint: where the symlinked path leads now (nothing, if it changes while we look)."""
    try:
        return f" (give the path it leads to: {os.path.realpath(source, strict=True)})"
    except OSError:
        return ""


def _refuse_host_state(source: str, parameter: str) -> None:
    from hyjail.ns.mounts import HOST_STATE, REGISTRY
    from hyjail.registry import STATE_DIR
    for directory, _ in HOST_STATE:
        state = os.path.realpath(STATE_DIR if directory == REGISTRY else directory)
        if os.path.commonpath([state, source]) in (state, source):
            raise SetupError(f"{parameter}: {source}: holds or lies in hyjail's own state "
                             f"({state}), which no jail may reach")
