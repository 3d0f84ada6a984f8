"""Thin ctypes wrappers for the Linux calls Python 3.11 does not expose.

Owns: unshare, setns, mount, umount2, pivot_root, openat2 and their flag constants, the file
system type of an fd (fstatfs), the owning user namespace of a namespace, clearing ambient
capabilities, and reading a process's start time (to tell a live process from a reused pid).
Each wrapper raises OSError with the kernel's errno and the path it was given; nothing here
decides policy.
"""

from __future__ import annotations

import ctypes
import fcntl
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

MNT_DETACH = 0x2

NS_GET_USERNS = 0xB701  # _IO(0xb7, 0x1): the user namespace that owns a namespace
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3): the CLONE_NEW* kind of a namespace fd
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = 155  # x86_64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), what)


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def setdomainname(name: str) -> None:
    data = name.encode()
    _check(_libc.setdomainname(data, len(data)), "setdomainname")


def owning_userns(ns_fd: int) -> int:
    """A new fd of the user namespace that owns the namespace open at ns_fd."""
    return fcntl.ioctl(ns_fd, NS_GET_USERNS)


def namespace_type(ns_fd: int) -> int:
    """The CLONE_NEW* flag of the namespace open at ns_fd (OSError if it is not one)."""
    return fcntl.ioctl(ns_fd, NS_GET_NSTYPE)


_PR_CAPBSET_READ = 23
_PR_CAP_AMBIENT_IS_SET = 1
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def last_cap() -> int:
    """The highest capability this kernel knows, asked of the kernel itself (no /proc: a
    chrooted process may have none)."""
    cap = 0
    while _libc.prctl(_PR_CAPBSET_READ, cap + 1, 0, 0, 0) >= 0:
        cap += 1
    return cap


def capability_sets() -> dict[str, int]:
    """This process's capability sets as bit masks: bounding, effective, permitted,
    inheritable, ambient (from the kernel, not /proc)."""
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.capget(header, data), "capget")
    caps = range(last_cap() + 1)
    return {
        "bounding": sum(1 << c for c in caps if _libc.prctl(_PR_CAPBSET_READ, c, 0, 0, 0) == 1),
        "effective": data[0] | data[3] << 32, "permitted": data[1] | data[4] << 32,
        "inheritable": data[2] | data[5] << 32,
        "ambient": sum(1 << c for c in caps
                       if _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_IS_SET, c, 0, 0) == 1),
    }


_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
LANDLOCK_SCOPE_SIGNAL = 1 << 1


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers (0: none)."""
    version = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0,
                            _LANDLOCK_CREATE_RULESET_VERSION)
    return max(version, 0)


def landlock_scope(scopes: int) -> None:
    """Enter a Landlock domain that confines only by scope (ABI 6): no connecting to abstract
    unix sockets, nor signalling processes, outside the domain. Needs no_new_privs."""
    attr = (ctypes.c_uint64 * 3)(0, 0, scopes)  # handled_access_fs, handled_access_net, scoped
    ruleset = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, attr, ctypes.sizeof(attr), 0)
    if ruleset < 0:
        _check(-1, "landlock_create_ruleset")
    try:
        _check(_libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def clear_ambient_caps() -> None:
    _check(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_libc.mount(_bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data)),
           f"mount {fstype or 'bind'} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_bytes(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_SYS_PIVOT_ROOT, _bytes(new_root), _bytes(put_old)), "pivot_root")


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of pid, or None if it does not exist or has
    exited (a zombie waiting for its parent counts as gone).

    Together with the pid it names one process for the life of the boot, so a record that
    stores both can never mistake a reused pid for the process it meant.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields resume after the last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def descendants(pid: int) -> list[tuple[int, int | None]]:
    """(pid, start time) of every descendant of pid, from /proc's children lists (the start
    time tells a process that is gone from one that took its pid)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            found.append((child, process_start_time(child)))
            todo.append(child)
    return found


# openat2(2): path resolution the kernel confines (Linux 5.6). RESOLVE_BENEATH refuses any
# component that leaves dirfd (absolute paths, "..", symlinks pointing out); RESOLVE_IN_ROOT
# resolves as if dirfd were "/" (a chroot for this one lookup); NO_SYMLINKS and NO_MAGICLINKS
# refuse those outright (ELOOP).
_SYS_OPENAT2 = 437  # the same number on every architecture
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """An fd for path resolved from dirfd under `resolve`'s rules; OSError (ELOOP for a refused
    symlink, EXDEV for a path that leaves dirfd) with the path on failure. O_CLOEXEC always."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = _libc.syscall(_SYS_OPENAT2, ctypes.c_int(dirfd), os.fsencode(path),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


PROC_SUPER_MAGIC = 0x9FA0


def filesystem_type(fd: int) -> int:
    """fstatfs(2)'s f_type of the file system fd is on (PROC_SUPER_MAGIC, ...)."""
    buffer = ctypes.create_string_buffer(256)  # struct statfs, f_type its first long
    _check(_libc.fstatfs(fd, buffer), "fstatfs")
    return ctypes.c_long.from_buffer(buffer).value
