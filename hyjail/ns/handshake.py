"""The jail side of the start-up handshake, shared by pid 1 and an entering process.

Owns what a child of the supervisor (pid 1, jexec's entering process, the trace backend's
first process) says and waits for on its channel (`hyjail.ns.control`'s messages): a failure
reported in one line, never raised into the forked copy of the supervisor; PLACED (its
cgroups), READY with the jail's pty, GO; and the command's fds 0-2. Kept apart from pid 1's
steps (`hyjail.ns.jail`), so that jexec imports none of the mount plan.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence

from hyjail.errors import EXIT_SETUP, HyjailError
from hyjail.ns import control

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


def guarded(channel: socket.socket, body: Callable[[], object]) -> NoReturn:
    """Run a jail-side body; any failure is reported on channel as one line, never raised into
    the forked copy of the supervisor (which must not go on as if it were the parent)."""
    try:
        body()
    except HyjailError as e:
        _fail(channel, e.exit_code, str(e))
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        _fail(channel, EXIT_SETUP, f"jail setup: {where}{e.strerror or e}")
    except BaseException as e:  # a bug: still report it in one line and never run the command
        _fail(channel, EXIT_SETUP, f"jail setup: {type(e).__name__}: {e}")
    os._exit(EXIT_SETUP)


def _fail(channel: socket.socket, code: int, message: str) -> NoReturn:
    try:
        control.send_fail(channel, code, message)
    finally:
        os._exit(code)


def ready_and_wait(channel: socket.socket, tty_fds: Sequence[int]) -> int | None:
    """Report READY (with a pty master if the caller is on a terminal) and wait for GO.
    Returns the pty's slave, or None. Exits if the supervisor gives up or dies."""
    tty = None
    if tty_fds:
        # The terminal lives in the jail's own devpts, so `tty` inside names a real /dev/pts/N;
        # the supervisor relays it to the host terminal, which the jail never holds.
        master, tty = os.openpty()
        control.send_ready(channel, [master])
        os.close(master)
    else:
        control.send_ready(channel, [])
    message, _ = control.receive(channel)
    if message != control.GO:
        os._exit(EXIT_SETUP)
    return tty


def wait_placed(channel: socket.socket, cgroup_paths: Sequence[str]) -> None:
    """Wait until the host side has moved us into the jail's groups, cgroup_paths (none: no
    move, nothing to wait for; `foreground.place_in_cgroups` is the other side); exit if it
    gave up."""
    if not cgroup_paths:
        return
    message, _ = control.receive(channel)
    if message != control.PLACED:
        os._exit(EXIT_SETUP)


def jail_stdio(tty: int | None, tty_fds: Sequence[int]) -> list[int]:
    """The command's fds 0-2: the jail's pty where the caller had a terminal, else the caller's."""
    return [tty if (fd in tty_fds) else fd for fd in (0, 1, 2)]
