"""R3's unix sockets where Landlock cannot scope abstract names (kernels before 6.12).

Owns: the stand-in, a supervisor thread that takes on the calling task's root, working
directory and credentials (its own filesystem context, by unshare(CLONE_FS); uids, gids,
groups and capability sets set for that thread alone, by raw system calls) and performs a
unix call that names an address on the supervisor's copy of the socket, with the supervisor's
copy of the address: another thread rewriting the tracee's memory afterwards (a path made an
abstract name) changes nothing. A path is resolved as the kernel would have resolved it for
the caller; an abstract name is reached only while a process of the jail holds the socket
bound to it, and the supervisor holds that socket too until the call is done, so the name
cannot pass to a host socket in between. Anything else answers ECONNREFUSED, as an abstract
name nobody listens on would.

What the peer sees: SO_PEERCRED and SCM_CREDENTIALS carry the caller's uids and gids, and
the supervisor's pid (there is no way to act with another process's pid). SCM_RIGHTS passes
the caller's own descriptors; SCM_CREDENTIALS sent explicitly is refused (EPERM).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from hyjail import linux
from hyjail.trace import ptrace

if TYPE_CHECKING:
    from hyjail.trace.state import Call

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_SETGROUPS, _SYS_SETRESUID, _SYS_SETRESGID, _SYS_CAPSET = 116, 117, 119, 126
_SYS_KCMP = 312
_KCMP_FILE = 0
_PR_SET_KEEPCAPS = 8
_CAPABILITY_VERSION_3 = 0x20080522
_CLONE_FS = 0x200
_SCM_RIGHTS, _SCM_CREDENTIALS = 1, 2
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_UDIAG_SHOW_NAME = 1
_UNIX_DIAG_NAME = 0
_NLM_F_REQUEST, _NLM_F_DUMP = 1, 0x300
_NLMSG_DONE, _NLMSG_ERROR = 3, 2


def take_fd(call: Call, fd: int) -> int:
    """Our own copy of the caller's fd (the same open file), or -1. pidfd_getfd takes from
    the thread group's table; a thread with a table of its own (unshare(CLONE_FILES)) gets
    -1 unless kcmp says the two name one file (the caller is stopped: its table holds
    still)."""
    pidfd = call.jail.pidfd(call.tgid)
    if pidfd is None:
        return -1
    try:
        mine = ptrace.pidfd_getfd(pidfd, fd)
    except OSError:
        return -1
    if call.tid != call.tgid and _libc.syscall(_SYS_KCMP, os.getpid(), call.tid, _KCMP_FILE,
                                               mine, fd) != 0:
        os.close(mine)
        return -1
    return mine


# ---- the stand-in --------------------------------------------------------------------------

class _Identity:
    """What a task's path lookups and its peers see of it, read from /proc while it is
    stopped: its root and working directory (as descriptors), ids, groups and capabilities."""

    def __init__(self, tid: int):
        with open(f"/proc/{tid}/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        self.uids = [int(u) for u in status["Uid"].split()][:3]
        self.gids = [int(g) for g in status["Gid"].split()][:3]
        self.groups = [int(g) for g in status["Groups"].split()]
        self.caps = tuple(int(status[name], 16) for name in ("CapEff", "CapPrm", "CapInh"))
        self.root = os.open(f"/proc/{tid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.cwd = os.open(f"/proc/{tid}/cwd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            os.close(self.root)
            raise

    def close(self) -> None:
        os.close(self.root)
        os.close(self.cwd)

    def assume(self) -> None:
        """Become this identity, on the calling thread only (never the supervisor's main
        thread: there is no way back)."""
        linux.unshare(_CLONE_FS)
        os.fchdir(self.root)
        os.chroot(".")
        os.fchdir(self.cwd)
        _call(_libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0), "keepcaps")
        groups = (ctypes.c_uint32 * max(len(self.groups), 1))(*self.groups)
        _call(_libc.syscall(_SYS_SETGROUPS, len(self.groups), groups), "setgroups")
        _call(_libc.syscall(_SYS_SETRESGID, *self.gids), "setresgid")
        _call(_libc.syscall(_SYS_SETRESUID, *self.uids), "setresuid")
        effective, permitted, inheritable = self.caps
        header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)(effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF,
                                     inheritable & 0xFFFFFFFF, effective >> 32,
                                     permitted >> 32, inheritable >> 32)
        _call(_libc.syscall(_SYS_CAPSET, header, data), "capset")


def _call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def stand_in(call: Call, work: Callable[[], int]) -> Callable[[], int]:
    """work, to run on a thread of its own (the tracer's Deferred) as the caller: 0 or
    bytes sent, or -errno. The caller's identity is read now, while it is stopped."""
    try:
        identity = _Identity(call.tid)
    except (OSError, KeyError, ValueError):
        return lambda: -errno.ESRCH
    def run() -> int:
        try:
            identity.assume()
        except OSError as e:
            return -(e.errno or errno.EPERM)
        finally:
            identity.close()
        try:
            return work()
        except OSError as e:
            return -(e.errno or errno.EIO)
    return run


# ---- abstract names: the jail's own only ------------------------------------------------

def abstract(raw: bytes) -> bytes | None:
    """The name of an abstract sockaddr_un (sun_path begins with a NUL), else None."""
    path = raw[2:]
    return path if len(path) > 0 and path[0] == 0 else None


def hold_abstract(call: Call, name: bytes) -> socket.socket | None:
    """The socket bound to the abstract name `name`, if a process of the jail holds it: our
    copy of it, which keeps the name its own until we close it. None otherwise."""
    inode = _bound_inode(name)
    if inode is None:
        return None
    link = f"socket:[{inode}]"
    for pid in call.jail.processes():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for entry in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{entry}") != link:
                    continue
            except OSError:
                continue
            held = _held(call, pid, int(entry), inode, name)
            if held is not None:
                return held
    return None


def _held(call: Call, pid: int, fd: int, inode: int, name: bytes) -> socket.socket | None:
    pidfd = call.jail.pidfd(pid)
    if pidfd is None:
        return None
    try:
        mine = ptrace.pidfd_getfd(pidfd, fd)
    except OSError:
        return None
    try:
        held = socket.socket(fileno=mine)
    except OSError:
        os.close(mine)
        return None
    # Checked on our copy, which no one can re-point: the socket, and its name now.
    try:
        bound = held.getsockname()
    except OSError:
        bound = None
    if os.fstat(held.fileno()).st_ino != inode or not isinstance(bound, bytes) \
            or bound != name:
        held.close()
        return None
    return held


def _bound_inode(name: bytes) -> int | None:
    """The inode of the unix socket bound to the abstract name `name` in our network
    namespace (the jail's), by sock_diag: names compared byte for byte."""
    request = struct.pack("<BBxxIIIII", socket.AF_UNIX, 0, 0xFFFFFFFF, 0, _UDIAG_SHOW_NAME,
                          0xFFFFFFFF, 0xFFFFFFFF)
    header = struct.pack("<IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY,
                         _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.sendall(header + request)
        while True:
            data = nl.recv(1 << 16)
            at = 0
            while at + 16 <= len(data):
                length, kind = struct.unpack_from("<IH", data, at)
                if length < 16:
                    return None
                if kind in (_NLMSG_DONE, _NLMSG_ERROR):
                    return None
                found = _matching(data[at + 16:at + length], name)
                if found is not None:
                    return found
                at += (length + 3) & ~3


def _matching(message: bytes, name: bytes) -> int | None:
    """The inode of one unix_diag_msg whose UNIX_DIAG_NAME is "\\0" + name."""
    if len(message) < 16:
        return None
    inode = struct.unpack_from("<I", message, 4)[0]
    at = 16
    while at + 4 <= len(message):
        length, kind = struct.unpack_from("<HH", message, at)
        if length < 4:
            return None
        if kind == _UNIX_DIAG_NAME and message[at + 4:at + length] == name:
            return inode
        at += (length + 3) & ~3
    return None


# ---- the calls -------------------------------------------------------------------------

def connect(call: Call, sock: socket.socket, raw: bytes) -> Callable[[], int]:
    """connect(2) on our copy of the caller's unix socket, as the caller."""
    return _addressed(call, raw, lambda: _connect(sock, raw))


def _connect(sock: socket.socket, raw: bytes) -> int:
    if _libc.connect(sock.fileno(), raw, len(raw)) != 0:
        return -ctypes.get_errno()
    return 0


def send(call: Call, sock: socket.socket, raw: bytes | None, data: list[bytes],
         control: list[tuple[int, int, bytes]], flags: int) -> Callable[[], int] | int:
    """sendto/sendmsg on our copy of the caller's unix socket, as the caller, to raw (or
    to its peer): the work (bytes sent, or -errno), or at once -errno for control messages
    refused. SCM_RIGHTS names the caller's descriptors."""
    passed: list[int] = []
    ancillary = []
    for level, kind, payload in control:
        if level != socket.SOL_SOCKET or kind != _SCM_RIGHTS:
            return _close_all(passed, -errno.EPERM)
        for (fd,) in struct.iter_unpack("<i", payload[:len(payload) // 4 * 4]):
            mine = take_fd(call, fd)
            if mine < 0:
                return _close_all(passed, -errno.EBADF)
            passed.append(mine)
        ancillary.append((socket.SOL_SOCKET, _SCM_RIGHTS,
                          struct.pack(f"<{len(passed)}i", *passed[-(len(payload) // 4):])))

    def work() -> int:
        return _sendmsg(sock, raw, data, ancillary, flags)
    runner = _addressed(call, raw, work) if raw is not None else stand_in(call, work)

    def run() -> int:
        try:
            return runner()
        finally:
            _close_all(passed, 0)  # ours: the receiver has its own by now
    return run


def _close_all(fds: list[int], result: int) -> int:
    for fd in fds:
        os.close(fd)
    fds.clear()
    return result


def _sendmsg(sock: socket.socket, raw: bytes | None, data: list[bytes],
             ancillary: list[tuple[int, int, bytes]], flags: int) -> int:
    """sendmsg with the address as raw bytes (exact length: abstract names may hold NULs)."""
    if raw is None:
        return sock.sendmsg(data, ancillary, flags)
    name = raw[2:]
    target: str | bytes = name if abstract(raw) is not None else \
        name.split(b"\0", 1)[0]
    return sock.sendmsg(data, ancillary, flags, target)


def _addressed(call: Call, raw: bytes, work: Callable[[], int]) -> Callable[[], int]:
    """work as the caller, where the address may be reached: an abstract name only while
    we hold the jail's socket bound to it."""
    if len(raw) < 2 or struct.unpack_from("<H", raw)[0] != socket.AF_UNIX:
        return stand_in(call, work)  # the kernel answers a wrong family (EINVAL)
    name = abstract(raw)
    if name is None:
        return stand_in(call, work)
    held = hold_abstract(call, name)
    if held is None:
        return lambda: -errno.ECONNREFUSED

    def holding() -> int:
        try:
            return work()
        finally:
            held.close()
    return stand_in(call, holding)
