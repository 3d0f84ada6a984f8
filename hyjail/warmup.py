"""Keeping the kernel's cgroup migration lock warm while a start gets ready to move its process.

Owns the warm-up process. Moving a process into a cgroup takes the kernel's
cgroup_threadgroup_rwsem for writing, and the first writer after a quiet spell waits out an
RCU grace period (5-20 ms measured here, the largest single cost of a jail's start: neither
the Python floor nor a crun without cgroups pays it). A writer that comes within a grace
period of the last one does not wait. So a command that will move a process (`run`, `jail`,
`jexec`) starts, before its imports, a small process that moves itself into the cgroup it is
already in, a move that changes nothing, every 2 ms, until the command has placed its process
(`stop`, from `foreground.place_in_cgroups`) or for a second at most. By the time the real move
comes, the lock is warm.

Best effort and nothing more: not root, a systemd unit's delegated groups, or no cgroup file we
can write (a read-only cgroupfs in a container), and nothing runs; a warm-up that lapses costs
the start the wait it always had.
The process is a grandchild, left to init: no supervisor's `waitpid(-1)` ever sees it, and it
holds nothing of the caller's (no stdio, no terminal) but its pipe and its own cgroup file.
"""

from __future__ import annotations

import os
import time

PERIOD = 0.002   # seconds between moves: well inside a grace period (5 ms or more)
LIMIT = 500      # moves at most (a second): a start that takes longer pays the wait again

_stop_fd: int | None = None


def start() -> None:
    """Start warming, for a command about to start or enter a jail as root."""
    global _stop_fd
    if _stop_fd is not None or os.geteuid() != 0:
        return
    from hyjail import cgroups  # here, not at the top: jls imports this module too
    # Not under a unit's delegated groups: there `cgroups` moves the unit's processes to
    # its leaf before it enables controllers, and a warm-up moving itself back into the
    # unit's own group would make that fail (a group with children holds no process).
    if cgroups.delegated():
        return
    procs = cgroups.own_procs_file()
    if procs is None or not os.path.exists(procs):
        return
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            if os.fork() == 0:
                _keep_warm(procs, read_end)
        finally:
            os._exit(0)
    os.close(read_end)
    os.waitpid(middle, 0)
    _stop_fd = write_end
    # Only this process stops it: a forked child (a detached supervisor, which closes what it
    # inherited; pid 1) must never write to, or close, whatever has that number by then.
    os.register_at_fork(after_in_child=_forget)


def _forget() -> None:
    global _stop_fd
    _stop_fd = None


def stop() -> None:
    """The process is placed: the warm-up ends (at once, not at its limit)."""
    global _stop_fd
    if _stop_fd is None:
        return
    import contextlib  # loaded by then; not at the start, where every import counts
    with contextlib.suppress(OSError):  # it had ended already
        os.write(_stop_fd, b".")
    os.close(_stop_fd)
    _stop_fd = None


def _keep_warm(procs: str, stop_fd: int) -> None:
    """The warm-up process: move ourselves (pid "0") into our own group until told to stop,
    our caller gone (end of file), or LIMIT. Never returns."""
    try:
        os.dup2(stop_fd, 0)
        os.closerange(1, 1 << 16)
        os.set_blocking(0, False)
        fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
        for _ in range(LIMIT):
            os.write(fd, b"0")
            time.sleep(PERIOD)
            try:
                os.read(0, 1)  # a byte (stop), or b"" (every writer gone)
                break
            except BlockingIOError:
                pass
    finally:
        os._exit(0)
