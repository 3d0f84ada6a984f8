"""The ptrace requests the trace backend makes, with one read of the kernel's syscall view.

Owns: python-ptrace's bindings for the whole register set (a call rewritten), and raw
ctypes for the rest, where each stop's requests are made: PTRACE_SEIZE with the EXITKILL and
TRACESECCOMP options, PTRACE_INTERRUPT, PTRACE_GET_SYSCALL_INFO (which names the ABI of each
call, so an `int 0x80` from a 64-bit process is never read with the 64-bit table), CONT,
GETEVENTMSG, two registers written to skip a call, and pidfd_getfd.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from ptrace import PtraceError
from ptrace.binding.func import ptrace_getregs, ptrace_setregs

PTRACE_POKEUSER = 6
PTRACE_CONT = 7
PTRACE_SYSCALL = 24
PTRACE_GETEVENTMSG = 0x4201
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E

PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000

PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128

SYSCALL_INFO_SECCOMP = 3

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

_SYS_PIDFD_GETFD = 438
# offsetof(struct user, regs.<register>): x86_64's layout, which a 64-bit tracer sees for
# every tracee (a 32-bit one, or an int 0x80 call, too).
_ORIG_RAX, _RAX = 15 * 8, 10 * 8
_WORD = (1 << 64) - 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
_libc.ptrace.restype = ctypes.c_long


class _SeccompInfo(ctypes.Structure):
    _fields_ = (("nr", ctypes.c_uint64), ("args", ctypes.c_uint64 * 6),
                ("ret_data", ctypes.c_uint32))


class _SyscallInfo(ctypes.Structure):
    _fields_ = (("op", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3), ("arch", ctypes.c_uint32),
                ("instruction_pointer", ctypes.c_uint64), ("stack_pointer", ctypes.c_uint64),
                ("seccomp", _SeccompInfo))


@dataclass(frozen=True)
class SeccompStop:
    """A syscall stopped by the prefilter, as the kernel saw it: its ABI's own number and
    arguments, and the filter's tag (which handler asked for it)."""
    arch: int
    nr: int
    args: tuple[int, ...]
    tag: int

    @property
    def abi(self) -> str:
        if self.arch == AUDIT_ARCH_I386:
            return "i386"
        return "x32" if self.nr & X32_SYSCALL_BIT else "x86_64"


def request(req: int, pid: int, addr: int = 0, data: int = 0) -> int:
    result = _libc.ptrace(req, pid, addr, data)
    if result == -1:
        err = ctypes.get_errno()
        if err:
            raise OSError(err, os.strerror(err), f"ptrace {req:#x} pid {pid}")
    return result


def seize(pid: int, options: int) -> None:
    request(PTRACE_SEIZE, pid, 0, options)


def interrupt(pid: int) -> None:
    request(PTRACE_INTERRUPT, pid)


def seccomp_stop(pid: int) -> SeccompStop:
    """The syscall at a seccomp stop, read once, with the ABI the kernel decoded it with."""
    info = _SyscallInfo()
    request(PTRACE_GET_SYSCALL_INFO, pid, ctypes.sizeof(info), ctypes.addressof(info))
    if info.op != SYSCALL_INFO_SECCOMP:
        raise OSError(0, f"not a seccomp stop (op {info.op})")
    return SeccompStop(info.arch, info.seccomp.nr, tuple(info.seccomp.args),
                       info.seccomp.ret_data)


def event_message(pid: int) -> int:
    """PTRACE_GETEVENTMSG: at a fork, vfork or clone stop, the new task's pid."""
    message = ctypes.c_ulong()
    request(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(message))
    return message.value


def skip_call(pid: int, result: int) -> None:
    """Make the stopped call number -1 (the kernel does not run it) and `result` its return
    value: two words written, where reading and writing the whole register set was two
    copies of 27."""
    request(PTRACE_POKEUSER, pid, _ORIG_RAX, _WORD)
    request(PTRACE_POKEUSER, pid, _RAX, result & _WORD)


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """A duplicate of a tracee's fd (same open file description), close-on-exec."""
    fd = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, target_fd, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "pidfd_getfd")
    return fd


__all__ = ["PtraceError", "event_message", "ptrace_getregs",
           "ptrace_setregs", "request", "seccomp_stop", "seize", "interrupt", "pidfd_getfd",
           "skip_call"]
