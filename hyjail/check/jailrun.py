"""Running one jail command for the escape battery, and reading what it answered.

Owns: the `hyjail` command line the battery runs its jails with, running one to its end (its
answers, or NotRun when the jail did not run: no verdict, an error row), reading a line with
a deadline, a probe's jail held while the host acts (ready, then told to finish), parsing
hjprobe's "OP=RESULT" lines, and the battery's pace on a slower host (HYJAIL_CHECK_SLOW: its
drivers' own waits lengthened as the attempts' timeouts are). The runner and the entry
group's drivers (`hyjail.check.entry`) share it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import subprocess
import sys
from collections.abc import Iterator


def _installed_hyjail() -> list[str]:
    """How to run `hyjail` as users do: the launcher installed beside this interpreter (bin/'s),
    else `python -m hyjail` (a tree used without installing). The battery's jails, the tests'
    and the bench's all start so: runpy imports modules a start does not, which once hid a
    lazy import that fails in a jail's root."""
    command = os.path.join(os.path.dirname(sys.executable), "hyjail")
    return [command] if os.access(command, os.X_OK) else [sys.executable, "-m", "hyjail"]


HYJAIL = _installed_hyjail()


class NotRun(Exception):
    """The attempt's jail did not run (no verdict: an error row)."""


def results(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.replace("\r", "").splitlines()
                if "=" in line and not line.startswith(("race_bound=", "sitting=", "scanning=",
                                                        "swapping=")))


def run(argv: list[str], timeout: float, leaked: list[int]) -> dict[str, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, pass_fds=leaked)
    except subprocess.TimeoutExpired:
        raise NotRun(f"no answer in {timeout:.0f} s") from None
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise NotRun(last[0])
    return results(done.stdout)


def readline(stream, timeout: float) -> str:
    """A line of stream's, or "" if none comes within timeout seconds (as paced here)."""
    ready, _, _ = select.select([stream], [], [], scaled(timeout))
    return stream.readline() if ready else ""


def error_lines(stderr: str) -> list[str]:
    """stderr without the weakened jail's announcement: what a refusal said."""
    return [line for line in stderr.strip().splitlines()
            if line and not line.startswith("hyjail: WARNING: this jail is deliberately")]


@contextlib.contextmanager
def held(argv: list[str], ready: str, what: str
         ) -> Iterator[tuple[subprocess.Popen, list[str]]]:
    """A probe's jail (or a helper) in the background, once its first line's first word is
    `ready` (NotRun, naming `what`, if not), with that line's words; killed on the way out
    unless `finish` ended it."""
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = readline(process.stdout, 30).split()
        if line[:1] != [ready]:
            process.kill()
            raise NotRun(f"{what} did not start: "
                         f"{(error_lines(process.stderr.read()) or ['?'])[-1]}")
        yield process, line
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def finish(process: subprocess.Popen, word: str, timeout: float = 60) -> tuple[str, str]:
    """Tell a held probe to finish (a line on its stdin); its stdout and stderr (within
    timeout seconds, as paced for this host)."""
    try:
        process.stdin.write(f"{word}\n")
        process.stdin.flush()
    except BrokenPipeError:
        pass  # it has ended already (a helper's own wait ran out): what it wrote is still read
    return process.communicate(timeout=scaled(timeout))


@functools.cache
def slowness() -> float:
    """HYJAIL_CHECK_SLOW: how many times slower than a host of normal speed this one is (a
    box under software emulation): every attempt's timeout is multiplied by it, and each
    race's rounds divided by it, so a race takes the time it would take here. The summary
    says so: fewer rounds are a weaker race."""
    text = os.environ.get("HYJAIL_CHECK_SLOW", "").strip()
    if not text:
        return 1.0
    try:
        slow = float(text)
    except ValueError:
        slow = 0.0
    if not 1 <= slow <= 1000:
        from hyjail.errors import SetupError
        raise SetupError(f"HYJAIL_CHECK_SLOW={text}: not a factor from 1 to 1000")
    return slow


def scaled(seconds: float) -> float:
    """A driver's own wait, lengthened on a slower host as every attempt's timeout is."""
    return seconds * slowness()
