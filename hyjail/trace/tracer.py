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

from hyjail.trace import handlers, ptrace
from hyjail.trace.sockets import Deferred, Instead
from hyjail.trace.state import Call, JailState

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
_ARGUMENT_REGISTERS = {False: ("rdi", "rsi", "rdx", "r10", "r8", "r9"),  # x86_64, x32
                       True: ("rbx", "rcx", "rdx", "rsi", "rdi", "rbp")}  # i386
_GROUP_STOPS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
_SYSCALL_STOP = signal.SIGTRAP | 0x80  # TRACESYSGOOD's mark on a syscall stop


class _Workers:
    """Threads that run Deferred work, kept for the next call: starting a thread per call
    (and waiting for it to start) was most of a judged blocking connect's cost. One more is
    started whenever none is idle, so a call blocked for long never holds up another. They
    are daemons: one still blocked when the jail ends must not hold the supervisor's exit."""

    def __init__(self, run: Callable[[int, Deferred], None]):
        self._run = run
        self._jobs: queue.SimpleQueue[tuple[int, Deferred]] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, tid: int, deferred: Deferred) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # that idle worker's turn: it takes this job or an earlier one
        self._jobs.put((tid, deferred))
        if start:
            threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._run(*self._jobs.get())
            with self._lock:
                self._idle += 1


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
        self._workers = _Workers(self._work)
        self._deferred = 0  # calls being run by workers, their tracees held
        # Polling only helps where the tracee runs on another CPU: on one, it would wait.
        self._spin = SPIN if len(os.sched_getaffinity(0)) > 1 else 0.0
        # A new task's own events may come before its parent's fork or clone event, its exit
        # included: tids first seen by a stop of their own, and those of them already gone,
        # so that a late creation event does not bring a dead task back into the set (where
        # it would hold the jail's end for ever, and its pid could pass to a host process).
        self._unannounced: set[int] = set()
        self._gone_early: set[int] = set()
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
                self.jail.forget_all()  # no child and no tracee: nothing of the jail is left
                return
            if pid:
                self.handle(pid, status)
                quiet_since = None
                continue
            now = time.perf_counter()
            if quiet_since is None:
                quiet_since = now
            elif now - quiet_since > self._spin or self._deferred:
                # (no polling while a worker runs a call: the poll holds the GIL it needs)
                return
            os.sched_yield()  # the poll's CPU to any other work waiting for it

    def handle(self, tid: int, status: int) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            if tid in self._unannounced or self.jail.thread_group(tid) is None:
                self._unannounced.discard(tid)
                self._gone_early.add(tid)  # its creation event is still to come
            self.jail.remove(tid)
            if tid == self.first:
                from hyjail.ns.init import exit_code
                self.status = exit_code(status)
                if not self.persist:
                    self.jail.kill_all()  # R6: the command is gone, so is its jail
            return
        if not os.WIFSTOPPED(status):
            return
        if self.jail.thread_group(tid) is None:  # before its parent's fork event arrives
            self.jail.add(tid)
            self._unannounced.add(tid)
        sig, event = os.WSTOPSIG(status), status >> 16
        resume_with = 0
        if event == ptrace.PTRACE_EVENT_SECCOMP:
            if not self._judge(tid):
                return  # held until its worker is done
        elif event in (ptrace.PTRACE_EVENT_FORK, ptrace.PTRACE_EVENT_VFORK):
            self._born(tid, leader=True)
        elif event == ptrace.PTRACE_EVENT_CLONE:  # a thread, or a process clone() made
            self._born(tid, leader=False)
        elif event == ptrace.PTRACE_EVENT_STOP and sig in _GROUP_STOPS:
            self._resume(tid, ptrace.PTRACE_LISTEN, 0)  # job control: stay stopped
            return
        elif event == 0:
            resume_with = sig  # a signal on its way to the tracee: deliver it
        self._resume(tid, ptrace.PTRACE_CONT, resume_with)

    def _born(self, parent: int, leader: bool) -> None:
        """A fork or clone event: the new task joins the jail, unless its own exit came
        first (then the tid is no longer its: our wait released it)."""
        try:
            child = ptrace.event_message(parent)
        except (OSError, ptrace.PtraceError):
            return  # the parent was killed in the stop; the child's own stop adds it
        if child in self._gone_early:
            self._gone_early.discard(child)
            return
        self._unannounced.discard(child)
        self.jail.add(child, tgid=child if leader else None)  # a new process leads its group

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
        if isinstance(result, Instead):
            self._instead(tid, result)
            if handler.names_a_pid:
                self._run_holding_pids(tid)
                return False
            return True
        if isinstance(result, Deferred):
            self._deferred += 1
            if result.assumes_identity:  # its thread is changed for good: one of its own
                threading.Thread(target=self._work, args=(tid, result), daemon=True).start()
            else:
                self._workers.submit(tid, result)
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
            self._deferred -= 1
            self._answer(tid, result)
            self._resume(tid, ptrace.PTRACE_CONT, 0)

    def _instead(self, tid: int, call: Instead) -> None:
        """Make the stopped call `call.number` (or its own) with `call.args` in the ABI's
        argument registers. A task whose call cannot be changed is killed: it must never go
        on to make the call as it stands."""
        try:
            regs = ptrace.ptrace_getregs(tid)
            if call.number is not None:
                regs.orig_rax = call.number
            for name, value in zip(_ARGUMENT_REGISTERS[call.abi == "i386"], call.args,
                                   strict=False):
                setattr(regs, name, value)
            ptrace.ptrace_setregs(tid, regs)
        except (OSError, ptrace.PtraceError):
            with contextlib.suppress(OSError):
                os.kill(tid, signal.SIGKILL)

    def _answer(self, tid: int, result: int) -> None:
        """Skip the call and make `result` its return value. A task whose call cannot be
        skipped is killed: it must never go on to make the call it was refused."""
        try:
            ptrace.skip_call(tid, result)
        except OSError:
            with contextlib.suppress(OSError):  # (or it is gone already)
                os.kill(tid, signal.SIGKILL)

    @staticmethod
    def _resume(tid: int, how: int, sig: int) -> None:
        with contextlib.suppress(OSError):
            ptrace.request(how, tid, 0, sig)
