"""The battery's own failures: a helper that ended early, a pipe closed under a driver. Each
is an error row (never held), and the battery goes on; before, an EPIPE from a driver ended
`hyjail check` with exit 1 and not a word (click's handling of a broken pipe), as it did
under software emulation, where a helper's unpaced wait ran out. And a false escape: an
attempt that found its own jail's task by the host process's number."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from hyjail.check.attempts import CATALOGUE
from hyjail.check.jailrun import NotRun, finish, held
from hyjail.check.runner import Battery

from conftest import hyjail, needs


class _Failing(Battery):
    """A battery whose every attempt fails inside the battery itself."""

    def __init__(self, failure: BaseException):
        super().__init__(ground=None)
        self.failure = failure

    def skip_reason(self, attempt, abi, shape, host):
        return None

    def _attempt(self, attempt, abi, shape):
        raise self.failure


def test_a_failing_attempt_is_an_error_row_not_the_end_of_the_battery():
    shape = types.SimpleNamespace(label="ns", kind="ns")
    battery = _Failing(BrokenPipeError(32, "Broken pipe"))
    rows = [battery.run(attempt, attempt.abis[0], shape, {}) for attempt in CATALOGUE[:3]]
    assert [row.result for row in rows] == ["error"] * 3
    assert rows[0].detail == "the attempt itself failed: BrokenPipeError: [Errno 32] Broken pipe"


def test_a_drivers_own_timeout_is_an_error_row():
    shape = types.SimpleNamespace(label="trace", kind="trace")
    battery = _Failing(subprocess.TimeoutExpired(["hyjail", "exec", "jail", "/bin/sh"], 750))
    row = battery.run(CATALOGUE[0], CATALOGUE[0].abis[0], shape, {})
    assert (row.result, row.detail) == ("error", "no answer in 750 s: ... exec jail /bin/sh")


def test_finishing_a_helper_that_already_ended_reads_what_it_wrote():
    helper = [sys.executable, "-c",
              "import time; print('ready now', flush=True); time.sleep(0.5); print('bye')"]
    with held(helper, "ready", "the helper") as (process, line):
        assert line == ["ready", "now"]
        process.wait(timeout=30)  # gone before it is told to stop: its stdin is a dead pipe
        output, _ = finish(process, "stop")
    assert output == "bye\n"


def test_a_held_helper_that_never_says_ready_is_not_run():
    silent = [sys.executable, "-c", "import sys; sys.stderr.write('oops\\n')"]
    with pytest.raises(NotRun, match="the helper did not start: oops"), \
            held(silent, "ready", "the helper"):
        pass


@needs("backend:ns")
def test_a_storm_whose_own_task_has_the_victims_number_is_no_escape(probe_root):
    """On a freshly booted host (bullseye's box) the host process the clone storm looks for
    had pid 403, and in the jail's own pid namespace the storm's tasks came to have that
    number: kill(403, 0) found one of them, and the battery said ESCAPED on the ns backend.
    Pid 8 here is certainly one of the storm's; the same storm at a pid nobody in the jail
    has still finds nothing."""
    for target in ("8", "4000000"):
        done = hyjail("run", "--backend", "ns", "--net", "none", probe_root, "storm",
                      "127.0.0.1", "/bin/hjprobe", "storm", "64", f"storm:{target}:40")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"storm:{target}:40=ok\n", done.stdout
