"""The trace backend's judges: one handler per family of system calls the prefilter stops.

Owns: the table of handled calls (which also generates the seccomp prefilter, so a call is
stopped exactly when a handler exists for it), and each handler's decision: let the call run,
or answer it without running it. A handler sees the kernel's own decoding of the call (any
ABI), reads what it needs from the tracee's memory once, and when a decision could be undone
by a pid changing hands it performs the operation itself through a pidfd it holds.

Rules: R2 (uname, sethostname, setdomainname answered per jail), R3 (the socket calls, in
`hyjail.trace.sockets`) and R4 (signals, ptrace, priorities, scheduling, limits: jail pids
only; kill(-1) and process groups reach the jail).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hyjail.trace import memory

if TYPE_CHECKING:
    from hyjail.trace.state import Call

ALLOW = None  # a handler's answer: run the call as the tracee made it
HOST_NAME_MAX = 64
_UTS_FIELD = 65
_CAP_KILL = 5
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Handler:
    rule: str
    judge: Callable[[Call], int | None]  # None: allow; an int: the call's result (-errno)
    # A call let run that names another process: the tracer keeps every jail pid allocated
    # (it reaps no exit) until the call has returned, so the pid cannot pass to a host
    # process between the judgement and the kernel's use.
    names_a_pid: bool = False
    # The argument whose 0 means the caller itself: the prefilter lets such calls through
    # unjudged (glibc's start-up asks prlimit64(0, ...) of every new program).
    self_arg: int | None = None
    # (argument, values): the prefilter stops the call only when the argument has one of
    # them (fcntl is judged for F_SETOWN and F_SETOWN_EX alone).
    only_when: tuple[int, tuple[int, ...]] | None = None


def _int(value: int) -> int:
    """A register as the kernel reads a C int (pid_t, signal numbers)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


# ---- R2: the jail's own hostname ---------------------------------------------------------

def _uname(call: Call) -> int | None:
    """Answer uname() with the host's kernel and the jail's names and release, written
    whole (output only: nothing of the host's hostname ever reaches the tracee's memory)."""
    host = os.uname()
    fields = (host.sysname, call.jail.hostname, call.jail.osrelease, host.version, host.machine,
              call.jail.domainname)
    data = b"".join(f.encode()[:_UTS_FIELD - 1].ljust(_UTS_FIELD, b"\0") for f in fields)
    try:
        memory.write(call.tid, call.args[0], data)
    except OSError:
        return -errno.EFAULT
    return 0


def _set_name(which: str) -> Callable[[Call], int | None]:
    def judge(call: Call) -> int | None:
        if "set_hostname" not in call.jail.allowed:
            return -errno.EPERM
        length = call.args[1] & 0xFFFFFFFF
        if length > HOST_NAME_MAX:
            return -errno.EINVAL
        try:
            name = memory.read(call.tid, call.args[0], length) if length else b""
        except OSError:
            return -errno.EFAULT
        call.jail.rename(which, name.decode(errors="replace"))
        return 0
    return judge


# ---- R4: signals, sent by the supervisor (JailState.signal_process, signal_thread) ----

def _kill(call: Call) -> int | None:
    pid, sig = _int(call.args[0]), _int(call.args[1])
    if not 0 <= sig <= 64:
        return -errno.EINVAL
    if pid > 0:
        if pid == call.tgid:
            return ALLOW  # to itself: nothing to judge, and the kernel keeps its semantics
        if not call.jail.has_process(pid):
            return -errno.ESRCH
        return 0 if _unkillable(call, pid, sig) else _signal_processes(call, [pid], sig)
    # kill(-1) and process groups never reach the jail's init, as in a pid namespace.
    if pid == -1:
        others = [p for p in call.jail.processes() if p not in (call.tgid, call.jail.init)]
        return _signal_processes(call, others, sig, some=True) if others else -errno.ESRCH
    group = _process_group(call.tgid) if pid == 0 else -pid
    members = [p for p in call.jail.processes()
               if _process_group(p) == group and p != call.jail.init]
    return _signal_processes(call, members, sig, some=True) if members else -errno.ESRCH


def _unkillable(call: Call, target: int, sig: int) -> bool:
    """SIGKILL and SIGSTOP sent to the jail's init from inside are dropped, as the kernel
    drops them for a pid namespace's init (which handles the others)."""
    return sig in (signal.SIGKILL, signal.SIGSTOP) and target == call.jail.init


def _tkill(call: Call) -> int | None:
    tid, sig = _int(call.args[0]), _int(call.args[1])
    return _signal_thread(call, None, tid, sig, None)


def _tgkill(call: Call) -> int | None:
    tgid, tid, sig = (_int(a) for a in call.args[:3])
    return _signal_thread(call, tgid, tid, sig, None)


def _rt_sigqueueinfo(call: Call) -> int | None:
    tgid, sig = _int(call.args[0]), _int(call.args[1])
    if tgid == call.tgid:
        return ALLOW
    if not call.jail.has_process(tgid):
        return -errno.ESRCH
    if _unkillable(call, tgid, sig):
        return 0
    info = _siginfo(call, call.args[2])
    if isinstance(info, int):
        return info
    return _send(call, tgid, sig, info, thread=False)


def _rt_tgsigqueueinfo(call: Call) -> int | None:
    tgid, tid, sig = (_int(a) for a in call.args[:3])
    info = _siginfo(call, call.args[3])
    if isinstance(info, int):
        return info
    return _signal_thread(call, tgid, tid, sig, info)


def _signal_thread(call: Call, tgid: int | None, tid: int, sig: int,
                   info: bytes | None) -> int | None:
    if tid <= 0 or (tgid is not None and tgid <= 0) or not 0 <= sig <= 64:
        return -errno.EINVAL
    if call.jail.thread_group(tid) is None or (tgid is not None
                                                and call.jail.thread_group(tid) != tgid):
        return -errno.ESRCH
    if call.jail.thread_group(tid) == call.tgid:
        return ALLOW
    if _unkillable(call, call.jail.thread_group(tid), sig):
        return 0
    return _send(call, tid, sig, info, thread=True)


def _signal_processes(call: Call, pids: list[int], sig: int, some: bool = False) -> int:
    """Signal each process as the caller may (kill(2)'s permission rules, judged on the
    caller's credentials); for a group or -1, success if any one got it."""
    results = [_send(call, pid, sig, None, thread=False) for pid in pids]
    if some and 0 in results:
        return 0
    return results[0] if not some else (-errno.EPERM if -errno.EPERM in results
                                        else -errno.ESRCH)


def _send(call: Call, target: int, sig: int, info: bytes | None, thread: bool) -> int:
    if not _may_signal(call.tid, target, sig):
        return -errno.EPERM
    if thread:
        return call.jail.signal_thread(target, sig, info)
    return call.jail.signal_process(target, sig, info)


def _may_signal(caller: int, target: int, sig: int) -> bool:
    """kill(2)'s rule: the caller's real or effective uid is the target's real or saved uid,
    or the caller holds CAP_KILL (SIGCONT also within one session)."""
    mine, theirs = _credentials(caller), _credentials(target)
    if mine is None or theirs is None:
        return False
    if mine["cap_effective"] & (1 << _CAP_KILL):
        return True
    if {mine["uid"][0], mine["uid"][1]} & {theirs["uid"][0], theirs["uid"][2]}:
        return True
    return sig == 18 and _session(caller) == _session(target)  # SIGCONT


def _credentials(tid: int) -> dict | None:
    try:
        with open(f"/proc/{tid}/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return None
    return {"uid": [int(u) for u in status["Uid"].split()],
            "cap_effective": int(status["CapEff"], 16)}


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _siginfo(call: Call, address: int) -> bytes | int:
    """The caller's siginfo, read once, in the 64-bit layout the supervisor sends."""
    try:
        raw = memory.read(call.tid, address, 128)
    except OSError:
        return -errno.EFAULT
    if call.abi != "i386":
        return raw
    # compat siginfo: signo, errno, code, then pid, uid and a 32-bit sigval, unpadded.
    signo, err, code, pid, uid, value = struct.unpack_from("<6i", raw)
    return struct.pack("<3i4xiiq", signo, err, code, pid, uid, value).ljust(128, b"\0")


# ---- R4: calls that name a process, a group or a user: jail ones only --------------------

def _pid_at(*indexes: int, zero_is_self: bool = True) -> Callable[[Call], int | None]:
    def judge(call: Call) -> int | None:
        for index in indexes:
            pid = _int(call.args[index])
            if pid == 0 and zero_is_self:
                continue
            if pid > 0 and call.jail.thread_group(pid) is None:
                return -errno.ESRCH
        return ALLOW
    return judge


def _ptrace(call: Call) -> int | None:
    if call.args[0] == 0:  # PTRACE_TRACEME: the tracer is the supervisor already; refused
        return -errno.EPERM
    return _pid_at(1, zero_is_self=False)(call)


def _who(process: int, group: int) -> Callable[[Call], int | None]:
    """setpriority/getpriority and ioprio_*: a process, a process group, or a user (which
    would reach the host's processes of that uid: refused)."""
    def judge(call: Call) -> int | None:
        which, who = _int(call.args[0]), _int(call.args[1])
        if which == process:
            return _pid_at(1)(call)
        if which == group:
            if who == 0 or any(_process_group(p) == who for p in call.jail.processes()):
                return ALLOW
            return -errno.ESRCH
        return -errno.EPERM if which == process + 2 else -errno.EINVAL
    return judge


# ---- R4: who gets a file's SIGIO and SIGURG (F_SETOWN): a jail process or group only -----

F_SETOWN, F_SETOWN_EX = 8, 15
_F_OWNER_TID, _F_OWNER_PID, _F_OWNER_PGRP = 0, 1, 2
# ioctl's ways to set a file's owner: the pid sits in memory, which the kernel would read
# again after a judgement, so the trace backend refuses them (fcntl's F_SETOWN does the same).
OWNER_IOCTLS = (0x8901, 0x8902)  # FIOSETOWN, SIOCSPGRP


def _setown(call: Call) -> int | None:
    """fcntl(fd, F_SETOWN, who) names a process (who > 0) or a process group (who < 0) to
    signal when the file is ready: a jail process, or a group led by one (whose session,
    made by the jail, holds jail processes only). F_SETOWN_EX's struct is read once and
    made the equivalent F_SETOWN (or, for a thread of the caller's own, performed here)."""
    if "any-fown" in call.jail.weakened:
        return ALLOW
    command = _int(call.args[1])
    if command == F_SETOWN:  # a process outside the jail does not exist for it
        return ALLOW if _may_own(call, _int(call.args[2])) else -errno.ESRCH
    try:
        kind, who = struct.unpack("<ii", memory.read(call.tid, call.args[2], 8))
    except OSError:
        return -errno.EFAULT
    if kind == _F_OWNER_TID:
        if who != 0 and call.jail.thread_group(who) != call.tgid:
            return -errno.ESRCH if call.jail.thread_group(who) is None else -errno.EPERM
        return _setown_ex_here(call, kind, who)
    if kind not in (_F_OWNER_PID, _F_OWNER_PGRP) or who < 0:
        return -errno.EINVAL
    who = -who if kind == _F_OWNER_PGRP else who
    if not _may_own(call, who):
        return -errno.ESRCH
    from hyjail.trace.sockets import Instead
    return Instead(None, (call.args[0], F_SETOWN, who & 0xFFFFFFFF), call.abi)


def _may_own(call: Call, who: int) -> bool:
    if who == 0:
        return True  # no owner: no signal
    if who > 0:
        return call.jail.thread_group(who) is not None
    group = -who
    return call.jail.has_process(group) and _process_group(group) == group


def _setown_ex_here(call: Call, kind: int, tid: int) -> int:
    """F_SETOWN_EX with F_OWNER_TID, on our copy of the file (one open file: one owner):
    a thread of the caller's own process, so the owner's credentials we record are moot."""
    from hyjail.trace.unix import take_fd
    mine = take_fd(call, _int(call.args[0]))
    if mine < 0:
        return -errno.EBADF
    try:
        owner = ctypes.create_string_buffer(struct.pack("<ii", kind, tid), 8)
        if _libc.fcntl(mine, F_SETOWN_EX, owner) != 0:
            return -ctypes.get_errno()
        return 0
    finally:
        os.close(mine)


def _socket(name: str, arguments: int) -> Callable[[Call], int | None]:
    """R3's calls: the fd (an int) and the next `arguments` arguments, as the kernel decoded
    them."""
    def judge(call: Call) -> int | None:
        from hyjail.trace import sockets
        fd, *rest = call.args
        return getattr(sockets, name)(call, _int(fd), *rest[:arguments])
    return judge


def _socketcall(call: Call) -> int | None:
    from hyjail.trace import sockets
    return sockets.socketcall(call)


def _capget(call: Call) -> int | None:
    """capget(header, data): performed here on a copy of the header (whose pid another
    thread could change after a check), for a jail task only; the sets are written back."""
    header_at, data_at = call.args[0], call.args[1]
    try:
        version, pid = struct.unpack("<Ii", memory.read(call.tid, header_at, 8))
    except OSError:
        return -errno.EFAULT
    target = call.tid if pid == 0 else pid
    if pid < 0:
        return -errno.EINVAL
    if call.jail.thread_group(target) is None:
        return -errno.ESRCH
    header = (ctypes.c_uint32 * 2)(version, target)
    data = (ctypes.c_uint32 * 6)()
    if _libc.capget(header, data if data_at else None) != 0:
        err = ctypes.get_errno()
        if err == errno.EINVAL:  # an unknown version: the kernel names the one it wants
            with contextlib.suppress(OSError):
                memory.write(call.tid, header_at, struct.pack("<I", header[0]))
        return -err
    words = 3 if version == 0x19980330 else 6  # version 1 has one set of 32 bits
    if data_at:
        try:
            memory.write(call.tid, data_at, bytes(data)[:4 * words])
        except OSError:
            return -errno.EFAULT
    return 0


HANDLERS: dict[str, Handler] = {
    "bind": Handler("R3", _socket("bind", 2)),
    "listen": Handler("R3", _socket("listen", 1)),
    "connect": Handler("R3", _socket("connect", 2)),
    "sendto": Handler("R3", _socket("sendto", 5)),
    "sendmsg": Handler("R3", _socket("sendmsg", 2)),
    "sendmmsg": Handler("R3", _socket("sendmmsg", 3)),
    "socketcall": Handler("R3", _socketcall),
    "uname": Handler("R2", _uname),
    "sethostname": Handler("R2", _set_name("hostname")),
    "setdomainname": Handler("R2", _set_name("domainname")),
    "kill": Handler("R4", _kill),
    "tkill": Handler("R4", _tkill),
    "tgkill": Handler("R4", _tgkill),
    "rt_sigqueueinfo": Handler("R4", _rt_sigqueueinfo),
    "rt_tgsigqueueinfo": Handler("R4", _rt_tgsigqueueinfo),
    "ptrace": Handler("R4", _ptrace, names_a_pid=True),
    "pidfd_open": Handler("R4", _pid_at(0, zero_is_self=False), names_a_pid=True),
    "process_vm_readv": Handler("R4", _pid_at(0, zero_is_self=False), names_a_pid=True),
    "process_vm_writev": Handler("R4", _pid_at(0, zero_is_self=False), names_a_pid=True),
    "kcmp": Handler("R4", _pid_at(0, 1, zero_is_self=False), names_a_pid=True),
    "setpriority": Handler("R4", _who(0, 1), names_a_pid=True),
    "getpriority": Handler("R4", _who(0, 1), names_a_pid=True),
    "ioprio_set": Handler("R4", _who(1, 2), names_a_pid=True),
    "ioprio_get": Handler("R4", _who(1, 2), names_a_pid=True),
    "capget": Handler("R4", _capget),
    **{name: Handler("R4", _setown, names_a_pid=True, only_when=(1, (F_SETOWN, F_SETOWN_EX)))
       for name in ("fcntl", "fcntl64")},
    **{name: Handler("R4", _pid_at(0), names_a_pid=True, self_arg=0) for name in (
        "sched_setaffinity", "sched_getaffinity", "sched_setscheduler", "sched_getscheduler",
        "sched_setparam", "sched_getparam", "sched_rr_get_interval",
        "sched_rr_get_interval_time64", "sched_setattr", "sched_getattr", "prlimit64",
        "getpgid", "getsid", "migrate_pages", "move_pages", "get_robust_list")},
}


def table(rules: set[str]) -> dict[str, Handler]:
    """The handlers of the rules the plan gives ptrace; sorted, so that the prefilter's tags
    and the tracer's agree."""
    return {name: HANDLERS[name] for name in sorted(HANDLERS) if HANDLERS[name].rule in rules}


# Old uname calls libc no longer makes: refused, not answered with the host's names.
REFUSED_IN_TRACE = {"olduname": errno.ENOSYS, "oldolduname": errno.ENOSYS,
                    # io_uring performs calls (connect, openat...) no filter or tracer sees.
                    "io_uring_setup": errno.EPERM, "io_uring_enter": errno.EPERM,
                    "io_uring_register": errno.EPERM}
