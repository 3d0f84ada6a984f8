"""FreeBSD's lifetime of a jail without `persist`: it lives while it has processes.

Owns the watch a background supervisor keeps on such a jail (`jail -c` without persist, from
the command line or jail.conf): the jail is started held by its pid 1, like a persistent one;
once `jail -c` has run exec.start and exec.poststart it arms the watch (the record's
`lifetime` parameter), and from then on, the first time the jail has no process besides the
one that holds it, the watch ends the jail (SIGKILL to that holder, after which the
supervisor removes everything, as for any jail). Arming only after exec.poststart keeps the
jail there for exec.poststart (it sees the JID) even when exec.start left nothing running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from hyjail.jails import has_processes
from hyjail.linux import process_start_time
from hyjail.registry import Record, Registry

TYPE_CHECKING = False  # only a checker reads it: threading is the supervisor's alone
if TYPE_CHECKING:
    import threading

ARMED = "processes"  # the record's params["lifetime"] once the watch may end the jail
POLL_SECONDS = 0.1


def arm(record: Record, registry: Registry) -> Record:
    current = registry.read(record.jid) or record  # as its supervisor last wrote it
    return registry.update(current, params={**current.params, "lifetime": ARMED})


def watch(jid: int, registry: Registry) -> threading.Thread:
    """Start the watch of jail jid in this (its supervisor's) process, as a daemon thread."""
    import threading  # the supervisor's alone: not on `jail -c`'s path
    thread = threading.Thread(target=_watch, args=(jid, registry), name=f"lifetime-{jid}",
                              daemon=True)
    thread.start()
    return thread


def _watch(jid: int, registry: Registry) -> None:
    while True:
        time.sleep(POLL_SECONDS)
        record = registry.read(jid)
        if record is None or record.supervisor_pid != os.getpid():
            return  # removed (or the JID is another supervisor's now)
        if record.params.get("lifetime") != ARMED or has_processes(record):
            continue
        if record.init_pid and process_start_time(record.init_pid) == record.init_start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.init_pid, signal.SIGKILL)
        return


def end_if_empty(record: Record, registry: Registry, seconds: float = 30.0) -> bool:
    """For `jail -c`: wait until an armed jail that has no process left is gone (its
    supervisor exited), so that when jail(8) returns, such a jail is removed, as FreeBSD's
    is. True if it is gone, False if it still has processes (it lives on)."""
    deadline = time.monotonic() + seconds
    while record.supervisor_alive():
        current = registry.read(record.jid)
        if current is not None and has_processes(current):
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
