"""What the trace supervisor knows of its jail, and of one judged call: the part of the
trace backend that the loop (`hyjail.trace.tracer`) and the handlers (`handlers`, `sockets`)
share, so that neither needs the other.

Owns: the jail's names, permissions and addresses, its tasks (tid -> tgid) with a pidfd for
each process when a call needs one (trusted only while the process is still ours to trace),
how a signal reaches one of them, and `Call`, a stopped call as the kernel decoded it.

Signals to a process go through its pidfd (Linux 5.3). Signals to one thread go by
tgkill(tgid, tid) from the supervisor, which needs no thread pidfd (6.9): a traced thread's
tid is not released until its tracer reaps it, and the one way a tid goes without that (a
thread whose execve another finished) leaves its old tid outside its thread group, where
tgkill's own check refuses it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from hyjail import weaken

_SYS_PIDFD_SEND_SIGNAL = 424
_SYS_RT_TGSIGQUEUEINFO = 297
_SYS_TGKILL = 234
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Call:
    """A judged call: who made it, with which ABI and arguments (the kernel's decoding)."""
    jail: JailState
    tid: int
    tgid: int
    abi: str
    args: tuple[int, ...]


class JailState:
    """What the supervisor knows of its jail: names, permissions, and its tasks."""

    def __init__(self, hostname: str, allowed: frozenset[str], addresses: tuple = (),
                 on_rename: Callable[[str, str], None] = lambda which, name: None,
                 domainname: str = "", osrelease: str = "",
                 inherited: frozenset[int] = frozenset()):
        self.hostname = hostname
        self.addresses = addresses  # ipaddress objects: the jail's own (R3)
        self.inherited = inherited  # IP versions whose every host address is the jail's
        # On the LAN as aliases of the host's interface (hyjail.net.lan): the host's other
        # addresses are out of its reach, as they are a LAN machine's.
        self.on_lan = False
        self.domainname = domainname or "(none)"
        self.osrelease = osrelease or os.uname().release  # FreeBSD's osrelease, else the host's
        self.allowed = allowed
        self.weakened = weaken.weakened()  # the battery's weakened jail (root only)
        # Unix calls that name an address go to the stand-in (`hyjail.trace.unix`): the
        # plan's R3 where no Landlock scope keeps abstract names inside the jail.
        self.unix_stand_in = False
        # (address, binding) -> what R3's rules made of it (`hyjail.trace.sockets`).
        self.address_memo: dict[tuple[str, bool], str | int] = {}
        # A hybrid jail's init (its first process, without a pid namespace to make it pid 1):
        # kept from the jail's signals as the kernel keeps a pid namespace's init.
        self.init: int | None = None
        self._on_rename = on_rename
        self._tasks: dict[int, int] = {}  # tid -> tgid
        # tgid -> pidfd, opened when first needed: a traced process's pid stays its own
        # until this supervisor reaps it, so a late pidfd names the same process.
        self._pidfds: dict[int, int] = {}

    def rename(self, which: str, name: str) -> None:
        setattr(self, which, name)
        self._on_rename(which, name)

    def add(self, tid: int, tgid: int | None = None) -> None:
        """A task of the jail's; its thread group read from /proc unless the caller knows it
        (a fork's child leads its own)."""
        if tid in self._tasks:
            return
        if tgid is None:
            try:
                with open(f"/proc/{tid}/status") as f:
                    tgid = next(int(line.split()[1]) for line in f if line.startswith("Tgid:"))
            except (OSError, StopIteration):
                return  # already gone
        self._tasks[tid] = tgid

    def remove(self, tid: int) -> None:
        self._tasks.pop(tid, None)
        pidfd = self._pidfds.pop(tid, None)
        if pidfd is not None:
            os.close(pidfd)

    def thread_group(self, tid: int) -> int | None:
        return self._tasks.get(tid)

    def has_process(self, pid: int) -> bool:
        return self._tasks.get(pid) == pid

    def processes(self) -> list[int]:
        return [tid for tid, tgid in self._tasks.items() if tid == tgid]

    def pidfd(self, pid: int) -> int | None:
        """A pidfd of the jail's process `pid` (a thread group's leader), or None."""
        if self._tasks.get(pid) != pid:
            return None
        if pid not in self._pidfds:
            tid = pid
            try:
                pidfd = os.pidfd_open(tid)
            except OSError:
                return None
            # The pid must still name our tracee: one whose end we missed (a thread whose
            # execve another thread finished takes no exit report with it) may belong to
            # anyone by now. Checked after opening, so the pidfd names what was checked.
            if _tracer_of(tid) != os.getpid():
                os.close(pidfd)
                self.remove(tid)
                return None
            self._pidfds[pid] = pidfd
        return self._pidfds[pid]

    def signal_process(self, pid: int, sig: int, info: bytes | None = None) -> int:
        """Send sig (with the caller's siginfo, if any) to the jail's process pid: 0 or
        -errno."""
        pidfd = self.pidfd(pid)
        if pidfd is None:
            return -errno.ESRCH
        buffer = ctypes.create_string_buffer(info, 128) if info is not None else None
        if _libc.syscall(_SYS_PIDFD_SEND_SIGNAL, pidfd, sig, buffer, 0) != 0:
            return -ctypes.get_errno()
        return 0

    def signal_thread(self, tid: int, sig: int, info: bytes | None = None) -> int:
        """Send sig to one thread of the jail's: 0 or -errno. The tid is still ours (the
        caller is stopped and nothing is reaped meanwhile) if the kernel still traces it
        for us; tgkill's thread group check covers a tid that left its group by execve."""
        tgid = self._tasks.get(tid)
        if tgid is None or _tracer_of(tid) != os.getpid():
            return -errno.ESRCH
        if info is not None:
            buffer = ctypes.create_string_buffer(info, 128)
            done = _libc.syscall(_SYS_RT_TGSIGQUEUEINFO, tgid, tid, sig, buffer)
        else:
            done = _libc.syscall(_SYS_TGKILL, tgid, tid, sig)
        return -ctypes.get_errno() if done != 0 else 0

    def tasks(self) -> list[int]:
        return list(self._tasks)

    def forget_all(self) -> None:
        """No tracee is left (the kernel says so): whatever the set still holds is gone."""
        for tid in self.tasks():
            self.remove(tid)

    def kill_all(self) -> None:
        for pid in self.processes():
            self.signal_process(pid, signal.SIGKILL)


def _tracer_of(tid: int) -> int | None:
    try:
        with open(f"/proc/{tid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("TracerPid:"))
    except (OSError, StopIteration, ValueError):
        return None
