"""Where the network helper (`hyjail.net.netd`) and its clients (`hyjail.net.link`) meet, and
how a client knows that what answers there is the helper.

Owns: the rendezvous, one directory per uid, code and seccomp state (so one helper for each)
under a directory only that uid can enter (root's: /run/hyjail/netd, 0700), holding the
helper's socket; the helper's lock (a flock on that directory, taken by whoever starts the
helper and held by the helper for its whole life, so no other user can take the name first or
hold a start back); and the client's check of the peer (SO_PEERCRED: the caller's own uid, and
a pid that holds the lock). Under the weakening "any-netd" the old rendezvous is kept for the
escape battery: an abstract name anyone can compute and bind first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import struct
import sys

from hyjail import digest
from hyjail.errors import SetupError
from hyjail.record import STATE_DIR

_SOCKET = "socket"  # the helper's socket, inside its rendezvous directory
_CODE = ("netd.py", "veth.py", "link.py", "rendezvous.py", "lanlink.py", "nat.py")


def weakened() -> bool:
    """Whether the battery asked for the old, impersonable rendezvous (HYJAIL_UNSAFE_WEAKEN)."""
    from hyjail import weaken
    return "any-netd" in weaken.weakened()


def _key() -> str:
    """One helper per uid, code, environment, seccomp state and network namespace: the helper
    and its clients must agree, and a helper makes links in its own network namespace (a host
    of a test's own world has its own helper). The environment is sys.prefix's directory
    (device and inode), not the interpreter's name nor the prefix's path: `python` and
    `python3` in one venv (the launchers use the latter) are one, and so is a venv reached at
    two paths (a test box binds its venv over the tree's .venv)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = [os.stat(os.path.join(here, name)) for name in _CODE]
    with open("/proc/self/status") as f:
        filters = next((line.split()[1] for line in f if line.startswith("Seccomp_filters")),
                       "0")
    network = os.stat("/proc/self/ns/net").st_ino
    prefix = os.stat(sys.prefix)
    key = repr(([(s.st_mtime_ns, s.st_size) for s in code], (prefix.st_dev, prefix.st_ino),
                filters, network))
    return f"{os.getuid()}-{digest.hexdigest(key.encode(), 6)}"


def _base() -> str:
    if os.geteuid() == 0:
        return os.path.join(STATE_DIR, "netd")
    from hyjail import rootless  # a user's own private state directory
    return os.path.join(rootless.state_dir(), "netd")


def directory() -> str:
    """This caller's rendezvous directory (it need not exist yet)."""
    return os.path.join(_base(), _key())


def address() -> str | bytes:
    """Where the helper listens: its socket's path; the abstract name under "any-netd"."""
    if weakened():
        return f"\0hyjail-netd-{_key()}".encode()
    return os.path.join(directory(), _SOCKET)


def _private_dir(parent_fd: int | None, path: str, mode: int) -> int:
    """Open directory `path` (made with `mode` if missing) without following a symlink, and
    refuse it unless this uid owns it and nobody else has more of it than `mode` gives."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode, dir_fd=parent_fd)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=parent_fd)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & ~mode & 0o077:
        os.close(fd)
        raise SetupError(f"{path}: the network helper's directory must be uid "
                         f"{os.geteuid()}'s and not writable (nor, under it, enterable) by "
                         f"others; refusing to use it")
    return fd


def open_directory() -> int:
    """The rendezvous directory, opened and checked down from the state directory (each made
    if missing): no other user can have made, moved, entered or written any part of it."""
    base = _base()
    state = os.path.dirname(base)
    try:
        os.makedirs(state, 0o755, exist_ok=True)
        state_fd = _private_dir(None, state, 0o755)
        try:
            base_fd = _private_dir(state_fd, os.path.basename(base), 0o700)
        finally:
            os.close(state_fd)
        try:
            return _private_dir(base_fd, _key(), 0o700)
        finally:
            os.close(base_fd)
    except OSError as e:
        raise SetupError(f"{base}: the network helper's directory: {e.strerror}") from None


def try_lock(directory_fd: int) -> bool:
    """Take the helper's lock, unless a helper (or its starter) holds it."""
    try:
        fcntl.flock(directory_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def peer(connection: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process at the other end (as it was when it listened or
    connected)."""
    pid, uid, _ = struct.unpack("3i", connection.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid


def holds_lock(pid: int, directory_fd: int) -> bool:
    """Whether process pid holds the helper's lock: an exclusive flock, through one of its
    descriptors, on this very directory."""
    want = os.fstat(directory_fd)
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return False
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                locks = [line.split() for line in f if line.startswith("lock:")]
            if not any(lock[2:3] == ["FLOCK"] and lock[4:5] == ["WRITE"] for lock in locks):
                continue
            held = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if (held.st_dev, held.st_ino) == (want.st_dev, want.st_ino):
            return True
    return False


def authenticate(connection: socket.socket, directory_fd: int) -> None:
    """Refuse (SetupError) a peer that is not this uid's helper: nothing is sent before this."""
    pid, uid = peer(connection)
    if uid != os.geteuid() or not holds_lock(pid, directory_fd):
        raise SetupError(f"the network helper's socket is answered by pid {pid} (uid {uid}), "
                         f"not by the helper holding its lock: refusing it the jail's network")


def listening() -> set[str]:
    """The helper sockets under this uid's rendezvous that a live process listens on (a
    socket file no process listens on is what a killed helper left)."""
    base = _base() + os.sep
    found = set()
    with contextlib.suppress(OSError), open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 is "listening".
            if len(fields) == 8 and int(fields[3], 16) & 0x10000 and fields[7].startswith(base):
                found.add(fields[7])
    return found


def sweep() -> None:
    """Remove the rendezvous directories (and sockets) that no live helper holds: what a killed
    helper, or a helper of older code, left."""
    try:
        base_fd = os.open(_base(), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        for name in os.listdir(base_fd):
            with contextlib.suppress(OSError):
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=base_fd)
                try:
                    if try_lock(fd):  # no helper, and none starting: ours to remove
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(_SOCKET, dir_fd=fd)
                        os.rmdir(name, dir_fd=base_fd)
                finally:
                    os.close(fd)
    finally:
        os.close(base_fd)


def bind(listener: socket.socket, lock_fd: int) -> None:
    """Bind the helper's socket in the directory whose lock lock_fd holds, replacing what a
    killed helper left (no live helper listens there: the caller holds the lock)."""
    here = open_directory()
    try:
        same = os.fstat(here)[1:3] == os.fstat(lock_fd)[1:3]  # (st_ino, st_dev)
        if not same:  # swept away and made again meanwhile: its lock is not ours
            raise SetupError(f"{directory()}: not the directory this helper holds the lock of")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_SOCKET, dir_fd=here)
        listener.bind(os.path.join(directory(), _SOCKET))
    finally:
        os.close(here)


def unbind(directory_fd: int) -> None:
    """Remove the helper's socket as it leaves (still holding the lock)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_SOCKET, dir_fd=directory_fd)
