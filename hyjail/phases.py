"""Where a jail's start and end go, phase by phase: `HYJAIL_TRACE_START=1` prints them.

Owns the marks the supervisor makes on its way (the plan chosen, the jail admitted, its
cgroups, its first process forked and ready, the command started, ended, the jail torn
down) and the report on stderr at its end: each phase's milliseconds, and the time since
the process was executed (the interpreter's own start and the imports before the first
mark included, at the kernel's clock-tick resolution). Off, a mark costs one dictionary
lookup; nothing here changes what a jail does.
"""

from __future__ import annotations

import os
import sys
import time

VARIABLE = "HYJAIL_TRACE_START"
_on = os.environ.get(VARIABLE) == "1"
_marks: list[tuple[str, float]] = []


def mark(phase: str) -> None:
    """The end of `phase`, now."""
    if _on:
        _marks.append((phase, time.monotonic()))


def report() -> None:
    """The phases so far, one line each, on stderr (then forgotten)."""
    if not _on or not _marks:
        return
    started = _exec_time()
    previous = started if started is not None else _marks[0][1]
    lines = []
    for phase, when in _marks:
        since = "" if started is None else f"  ({(when - started) * 1000:7.1f} ms since exec)"
        lines.append(f"hyjail: phase {phase:<24} {(when - previous) * 1000:7.1f} ms{since}")
        previous = when
    _marks.clear()
    print("\n".join(lines), file=sys.stderr)


def _exec_time() -> float | None:
    """When this process was executed (or forked), on time.monotonic's clock: its start
    time in /proc, in clock ticks since boot (CLOCK_BOOTTIME less time suspended, which
    CLOCK_MONOTONIC also leaves out)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # starttime, field 22
    except (OSError, IndexError, ValueError):
        return None
    boot = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
    return ticks / os.sysconf("SC_CLK_TCK") - boot
