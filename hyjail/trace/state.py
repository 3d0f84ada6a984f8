"""What the trace supervisor knows of its jail, and of one judged call: the part of the
trace backend that the loop (`hyjail.trace.tracer`) and the handlers (`handlers`, `sockets`)
share, so that neither needs the other.

Owns: the jail's names, permissions and addresses, its tasks (tid -> tgid) with a pidfd for
each when a signal needs one (trusted only while the task is still ours to trace), and `Call`,
a stopped call as the kernel decoded it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from hyjail import weaken

_PIDFD_THREAD = os.O_EXCL


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
                 on_rename: Callable[[str, str], None] = lambda which, name: None):
        self.hostname = hostname
        self.addresses = addresses  # ipaddress objects: the jail's own (R3)
        self.domainname = "(none)"
        self.allowed = allowed
        self.weakened = weaken.weakened()  # the battery's weakened jail (root only)
        # A hybrid jail's init (its first process, without a pid namespace to make it pid 1):
        # kept from the jail's signals as the kernel keeps a pid namespace's init.
        self.init: int | None = None
        self._on_rename = on_rename
        self._tasks: dict[int, int] = {}  # tid -> tgid
        # tid -> pidfd (PIDFD_THREAD), opened when first needed: a traced task's pid stays
        # its own until this supervisor reaps it, so a late pidfd names the same task.
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

    def pidfd(self, tid: int) -> int | None:
        if tid not in self._tasks:
            return None
        if tid not in self._pidfds:
            try:
                pidfd = os.pidfd_open(tid, _PIDFD_THREAD)
            except OSError:
                return None
            # The pid must still name our tracee: one whose end we missed (a thread whose
            # execve another thread finished takes no exit report with it) may belong to
            # anyone by now. Checked after opening, so the pidfd names what was checked.
            if _tracer_of(tid) != os.getpid():
                os.close(pidfd)
                self.remove(tid)
                return None
            self._pidfds[tid] = pidfd
        return self._pidfds[tid]

    def tasks(self) -> list[int]:
        return list(self._tasks)

    def forget_all(self) -> None:
        """No tracee is left (the kernel says so): whatever the set still holds is gone."""
        for tid in self.tasks():
            self.remove(tid)

    def kill_all(self) -> None:
        for tid in self.processes():
            pidfd = self.pidfd(tid)
            if pidfd is not None:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)


def _tracer_of(tid: int) -> int | None:
    try:
        with open(f"/proc/{tid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("TracerPid:"))
    except (OSError, StopIteration, ValueError):
        return None
