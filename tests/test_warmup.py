"""The cgroup warm-up (`hyjail.warmup`): a process of its own that holds nothing of its
caller's, ends when told or when its caller is gone, and never outlives a command."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest

from hyjail import cgroups

CALLER = """
import os, sys
from hyjail import warmup
warmup.start()
print("started", flush=True)
line = sys.stdin.readline().strip()
if line == "fork":
    child = os.fork()
    if child == 0:
        warmup.stop()  # a forked child's stop: nothing to stop
        print("child", warmup._stop_fd, flush=True)
        os._exit(0)
    os.waitpid(child, 0)
    print("parent", warmup._stop_fd is not None, flush=True)
    line = sys.stdin.readline().strip()
if line == "stop":
    warmup.stop()
    print("stopped", flush=True)
    sys.stdin.readline()
"""

needs_warmup = pytest.mark.skipif(os.geteuid() != 0 or cgroups.own_procs_file() is None,
                                  reason="the warm-up needs root and a writable cgroup v2 "
                                         "hierarchy (none here)")


def _warmups(caller: subprocess.Popen) -> list[int]:
    """The warm-up processes `caller` started: same command line, not the caller."""
    with open(f"/proc/{caller.pid}/cmdline", "rb") as f:
        cmdline = f.read()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == caller.pid:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read() == cmdline:
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _state_and_parent(pid: int) -> tuple[str, int]:
    with open(f"/proc/{pid}/stat") as f:
        state, parent = f.read().rsplit(")", 1)[1].split()[:2]
    return state, int(parent)


def _held(pid: int) -> dict[int, str]:
    """What pid holds open, by descriptor."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed as we looked
            found[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
    return found


def _besides_stdin(held: dict[int, str]) -> list[str]:
    return [what for fd, what in sorted(held.items()) if fd != 0]


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if _state_and_parent(pid)[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def caller():
    process = subprocess.Popen([sys.executable, "-c", CALLER], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "started\n"
        yield process
    finally:
        process.kill()
        process.wait()


@needs_warmup
def test_it_holds_only_its_pipe_and_its_own_cgroup_file_and_ends_when_told(caller):
    [pid] = _warmups(caller)
    assert _state_and_parent(pid)[1] != caller.pid  # no child of a supervisor's waitpid(-1)
    # Once it has run at all: it closes what the fork gave it, then opens its cgroup file.
    deadline = time.monotonic() + 10
    held = _held(pid)
    while _besides_stdin(held) != [cgroups.own_procs_file()] and time.monotonic() < deadline:
        time.sleep(0.01)
        held = _held(pid)
    assert held.pop(0).startswith("pipe:")  # the caller's stdin, stdout: none of them
    assert list(held.values()) == [cgroups.own_procs_file()]
    with open(f"/proc/{pid}/cgroup") as f, open(f"/proc/{caller.pid}/cgroup") as g:
        assert f.read() == g.read()  # it moves itself where it already is: nowhere
    caller.stdin.write("stop\n")
    caller.stdin.flush()
    assert caller.stdout.readline() == "stopped\n"
    assert _gone(pid, within=0.5)  # at once, not at its one-second limit


@needs_warmup
def test_only_the_process_that_started_it_stops_it(caller):
    """A forked child (a detached supervisor closes what it inherited) never writes to, or
    closes, the descriptor by the number it had."""
    [pid] = _warmups(caller)
    caller.stdin.write("fork\n")
    caller.stdin.flush()
    assert caller.stdout.readline() == "child None\n"
    assert caller.stdout.readline() == "parent True\n"
    assert _state_and_parent(pid)[0] != "Z"
    caller.stdin.write("stop\n")
    caller.stdin.flush()
    assert caller.stdout.readline() == "stopped\n"
    assert _gone(pid, within=0.5)


@needs_warmup
def test_it_ends_with_a_caller_that_never_stopped_it(caller):
    [pid] = _warmups(caller)
    caller.kill()
    caller.wait()
    assert _gone(pid, within=0.5)


def test_under_a_units_delegated_groups_it_starts_nothing():
    """cgroups moves a delegated unit's processes to its leaf: one moving itself back would
    make enabling the controllers fail."""
    code = "from hyjail import warmup; warmup.start(); print(warmup._stop_fd)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, cgroups.DELEGATED: "delegated"}).stdout
    assert out == "None\n"


def test_a_caller_that_is_not_root_starts_nothing():
    code = ("import os; os.setresuid(65534, 65534, 65534) if os.geteuid() == 0 else None; "
            "from hyjail import warmup; warmup.start(); print(warmup._stop_fd)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "None\n"
