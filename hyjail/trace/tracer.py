"""The ptrace loop: every thread of every jailed process, traced from its first instruction.

Owns: seizing the jail's first process (EXITKILL, so all tracees die with the supervisor;
TRACESECCOMP, so the prefilter's RET_TRACE stops reach us; fork, vfork, clone and exec
followed, so a new task is traced before it runs), the jail's task list with a pidfd for each
task, dispatching each seccomp stop to its handler by the filter's tag, answering a call
without running it (syscall number -1, the result in the return register), passing signals
and group-stops through, and, when the command's process ends, killing the rest (R6).
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hyjail.trace import handlers, ptrace
from hyjail.trace.sockets import Deferred

# Fork, vfork and clone are followed (the new task is traced before it runs); exec needs no
# stop (a seized tracee gets no SIGTRAP on exec, and nothing about a task changes for us).
OPTIONS = (ptrace.PTRACE_O_EXITKILL | ptrace.PTRACE_O_TRACESECCOMP | ptrace.PTRACE_O_TRACEFORK
           | ptrace.PTRACE_O_TRACEVFORK | ptrace.PTRACE_O_TRACECLONE
           | ptrace.PTRACE_O_TRACESYSGOOD)


SPIN = 0.0002  # seconds of polling for the next event before sleeping


def tags(handled: dict[str, handlers.Handler]) -> dict[str, int]:
    """The prefilter's tag for each handled call (0 is never a tag)."""
    return {name: index for index, name in enumerate(sorted(handled), start=1)}

_WALL = 0x40000000
_PIDFD_THREAD = os.O_EXCL
_GROUP_STOPS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
_SKIP = (1 << 64) - 1  # syscall number -1: the kernel does not run the call
_SYSCALL_STOP = signal.SIGTRAP | 0x80  # TRACESYSGOOD's mark on a syscall stop


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
                self._pidfds[tid] = os.pidfd_open(tid, _PIDFD_THREAD)
            except OSError:
                return None
        return self._pidfds[tid]

    def tasks(self) -> list[int]:
        return list(self._tasks)

    def kill_all(self) -> None:
        for tid in self.processes():
            pidfd = self.pidfd(tid)
            if pidfd is not None:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)


class Tracer:
    def __init__(self, jail: JailState, first: int, handled: dict[str, handlers.Handler],
                 persist: bool = False):
        self.jail = jail
        self.first = first
        self.persist = persist  # the first process only holds the jail: its end ends nothing
        self.status: int | None = None  # the first process's exit status, once it exits
        self._by_tag = {tag: handled[name] for name, tag in tags(handled).items()}
        # Calls that may block (a connect on a blocking socket) run in worker threads; the
        # tracee stays stopped until its result comes back through this pipe's wake-up.
        self._finished: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        self.wake_fd, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Polling only helps where the tracee runs on another CPU: on one, it would wait.
        self._spin = SPIN if len(os.sched_getaffinity(0)) > 1 else 0.0
        ptrace.seize(first, OPTIONS)
        jail.add(first)

    def adopt(self, pid: int) -> None:
        """Trace a process that is to enter the jail (jexec), before it confines itself."""
        ptrace.seize(pid, OPTIONS)
        self.jail.add(pid)

    @property
    def done(self) -> bool:
        return self.status is not None and not self.jail.tasks()

    def drain(self) -> None:
        """Handle every tracee event that is waiting. Events come in bursts (a fork stops
        the parent, then the child; an exit, then the parent's wait): after one, keep
        looking for SPIN seconds before going back to sleep, so the next is taken at once
        rather than after a wake-up across CPUs."""
        quiet_since = None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | _WALL)
            except ChildProcessError:
                return
            if pid:
                self.handle(pid, status)
                quiet_since = None
                continue
            now = time.perf_counter()
            if quiet_since is None:
                quiet_since = now
            elif now - quiet_since > self._spin:
                return

    def handle(self, tid: int, status: int) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self.jail.remove(tid)
            if tid == self.first:
                from hyjail.ns.init import exit_code
                self.status = exit_code(status)
                if not self.persist:
                    self.jail.kill_all()  # R6: the command is gone, so is its jail
            return
        if not os.WIFSTOPPED(status):
            return
        self.jail.add(tid)  # a new task may stop before its parent's fork event arrives
        sig, event = os.WSTOPSIG(status), status >> 16
        resume_with = 0
        if event == ptrace.PTRACE_EVENT_SECCOMP:
            if not self._judge(tid):
                return  # held until its worker is done
        elif event in (ptrace.PTRACE_EVENT_FORK, ptrace.PTRACE_EVENT_VFORK):
            child = ptrace.ptrace_geteventmsg(tid)
            self.jail.add(child, tgid=child)  # a new process: it leads its thread group
        elif event == ptrace.PTRACE_EVENT_CLONE:  # a thread, or a process clone() made
            self.jail.add(ptrace.ptrace_geteventmsg(tid))
        elif event == ptrace.PTRACE_EVENT_STOP and sig in _GROUP_STOPS:
            self._resume(tid, ptrace.PTRACE_LISTEN, 0)  # job control: stay stopped
            return
        elif event == 0:
            resume_with = sig  # a signal on its way to the tracee: deliver it
        self._resume(tid, ptrace.PTRACE_CONT, resume_with)

    def _judge(self, tid: int) -> bool:
        """Decide a stopped call; False when a worker will answer it later."""
        try:
            stop = ptrace.seccomp_stop(tid)
        except OSError:
            self._answer(tid, -errno.EPERM)  # unread, so refused (or the task is gone)
            return True
        handler = self._by_tag.get(stop.tag)
        tgid = self.jail.thread_group(tid) or tid
        try:
            result = handler.judge(Call(self.jail, tid, tgid, stop.abi, stop.args)) \
                if handler else -errno.ENOSYS
        except Exception:  # a handler's bug denies the call; it never lets it through
            result = -errno.EPERM
        if isinstance(result, Deferred):
            # A thread of its own, a daemon: one still blocked when the jail ends must not
            # hold the supervisor's exit.
            threading.Thread(target=self._work, args=(tid, result), daemon=True).start()
            return False
        if result is not handlers.ALLOW:
            self._answer(tid, result)
        elif handler.names_a_pid:
            self._run_holding_pids(tid)
            return False
        return True

    def _run_holding_pids(self, tid: int) -> None:
        """Let a judged call that names a pid run, and reap no exit until it has returned:
        a traced task's pid stays allocated until its tracer collects it, so the pid judged
        cannot belong to a host process by the time the kernel uses it. Only tid is waited
        for meanwhile; these calls do not block."""
        how, sig = ptrace.PTRACE_SYSCALL, 0
        while True:
            self._resume(tid, how, sig)
            try:
                _, status = os.waitpid(tid, _WALL)
            except ChildProcessError:
                return
            if not os.WIFSTOPPED(status):
                self.handle(tid, status)  # it died: its exit is handled as any other
                return
            if os.WSTOPSIG(status) == _SYSCALL_STOP:
                self._resume(tid, ptrace.PTRACE_CONT, 0)  # returned: the pid may go now
                return
            # A signal on its way in before the call ran: deliver it, keep waiting.
            how, sig = ptrace.PTRACE_SYSCALL, os.WSTOPSIG(status) if status >> 16 == 0 else 0

    def _work(self, tid: int, deferred: Deferred) -> None:
        try:
            result = deferred.work()
        except Exception:
            result = -errno.EIO
        self._finished.put((tid, result))
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"x")

    def finish_deferred(self) -> None:
        """Answer and resume the tracees whose workers are done (the loop calls this when
        wake_fd is readable)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_fd, 4096):
                pass
        while not self._finished.empty():
            tid, result = self._finished.get()
            self._answer(tid, result)
            self._resume(tid, ptrace.PTRACE_CONT, 0)

    def _answer(self, tid: int, result: int) -> None:
        """Skip the call and make `result` its return value. A task whose call cannot be
        skipped is killed: it must never go on to make the call it was refused."""
        try:
            regs = ptrace.ptrace_getregs(tid)
            regs.orig_rax = _SKIP
            regs.rax = result & _SKIP
            ptrace.ptrace_setregs(tid, regs)
        except (OSError, ptrace.PtraceError):
            with contextlib.suppress(OSError):  # (or it is gone already)
                os.kill(tid, signal.SIGKILL)

    @staticmethod
    def _resume(tid: int, how: int, sig: int) -> None:
        with contextlib.suppress(OSError):
            ptrace.request(how, tid, 0, sig)
