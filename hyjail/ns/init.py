"""The jail's pid 1: start the command, reap every zombie, forward signals, exit with its status.

Owns: the exec of the command (session, controlling terminal, standard fds, nothing else
inherited, signal state reset) and the reaper loop. When pid 1 exits the kernel kills every
other process of the pid namespace, which is how the jail's life ends with its command's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import termios
from collections.abc import Sequence

from hyjail.errors import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, EXIT_SETUP, HyjailError
from hyjail.ns import control, userns
from hyjail.ns.dilution import Confinement

TYPE_CHECKING = False  # typing's own costs every start 2 ms; only a checker reads these
if TYPE_CHECKING:
    from typing import NoReturn

# SPEC section 2: these, sent to `hyjail run`, reach the jailed command.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
_WAITED = frozenset(FORWARDED) | {signal.SIGCHLD}
_STOPPING = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
_MAX_FD = 2**31 - 1


def block_signals() -> None:
    """Queue the signals pid 1 handles; it takes them with sigwaitinfo. Blocked signals reach
    a namespace's init even from the parent namespace, which SIG_DFL ones would not."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)


def start_command(argv: Sequence[str], env: dict[str, str], stdio: Sequence[int],
                  tty: int | None, channel: socket.socket, confinement: Confinement) -> int:
    """Fork the command's process and exec argv in it; returns its pid (in the jail)."""
    pid = os.fork()
    if pid == 0:
        try:
            exec_command(argv, env, stdio, tty, channel, confinement)
        finally:
            os._exit(EXIT_CANNOT_EXECUTE)
    return pid


def exec_command(argv: Sequence[str], env: dict[str, str], stdio: Sequence[int],
                 tty: int | None, channel: socket.socket, confinement: Confinement) -> NoReturn:
    """Become argv: a new session (with tty as its controlling terminal), fds 0-2 from stdio
    and nothing else, default signal state, root diluted by `confinement`. A failure to
    confine or to exec is reported on channel."""
    os.setsid()  # never the host's controlling terminal
    if tty is not None:
        fcntl.ioctl(tty, termios.TIOCSCTTY, 0)
    for target, fd in enumerate(stdio):
        if fd != target:
            os.dup2(fd, target)
        else:
            os.set_inheritable(fd, True)
    # Only 0-2 cross into the command; the channel and the jail's user namespace (held for
    # the confinement to join) close themselves on exec.
    kept = sorted(fd for fd in (channel.fileno(), userns.held_userns()) if fd is not None)
    if "leak-fds" not in confinement.weakened:
        for low, high in zip([3, *(fd + 1 for fd in kept)], [*kept, _MAX_FD], strict=True):
            os.closerange(low, high)
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these; exec keeps that
        signal.signal(signum, signal.SIG_DFL)
    # We are a fork of the supervisor, whose handlers would swallow a forwarded signal that
    # arrives before the exec (a SIGTERM sent just as the jail starts): default them first.
    for signum in FORWARDED:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        confinement.apply()
    except BaseException as e:  # never exec unconfined; say why in one line
        reason = str(e) if isinstance(e, HyjailError | OSError) else f"{type(e).__name__}: {e}"
        control.send_fail(channel, EXIT_SETUP, f"jail setup: {reason}")
        os._exit(EXIT_SETUP)
    try:
        # SPEC R7: a process can tell it is jailed (systemd's convention for containers).
        exec_searching_path(list(argv), {**env, "container": "hyjail"})
    except FileNotFoundError:
        code, reason = EXIT_NOT_FOUND, "command not found in the jail"
    except OSError as e:
        code, reason = EXIT_CANNOT_EXECUTE, f"cannot execute: {e.strerror}"
    control.send_fail(channel, code, f"{argv[0]}: {reason}")
    os._exit(code)


def exec_searching_path(argv: list[str], env: dict[str, str]) -> NoReturn:
    """os.execvpe, as the jail's PATH finds argv[0], without os.get_exec_path's own `import
    warnings`: in the jail's root the host's Python library is out of reach, so an import
    there fails (it worked only while something else had imported warnings first)."""
    if "/" in argv[0]:
        os.execve(argv[0], argv, env)
    saved: OSError | None = None
    last: OSError = FileNotFoundError(2, "No such file or directory", argv[0])
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        try:
            os.execve(os.path.join(directory, argv[0]), argv, env)
        except (FileNotFoundError, NotADirectoryError) as e:
            last = e
        except OSError as e:  # the first other failure is the answer, as execvpe's
            last = e
            saved = saved or e
    raise saved or last


def exit_code(wait_status: int) -> int:
    """A wait status as SPEC section 2 reports it: the exit status, or 128+N for signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def reap_until_exit(command_pid: int | None, persist: bool = False) -> NoReturn:
    """Pid 1's loop: forward queued signals to the command, reap zombies, and exit with the
    command's status once it is reaped. A persistent jail's pid 1 outlives its command (or
    has none) and exits only when told to stop (SIGTERM, SIGINT, SIGHUP) with no command."""
    while True:
        info = signal.sigwaitinfo(_WAITED)
        if info.si_signo != signal.SIGCHLD:
            if command_pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(command_pid, info.si_signo)
            elif info.si_signo in _STOPPING:
                os._exit(128 + info.si_signo)
            continue
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == command_pid:
                if not persist:
                    os._exit(exit_code(status))
                command_pid = None
