"""Running one jail command for the escape battery, and reading what it answered.

Owns: the `hyjail` command line the battery runs its jails with, running one to its end (its
answers, or NotRun when the jail did not run: no verdict, an error row), reading a line with
a deadline, and parsing hjprobe's "OP=RESULT" lines. The runner and the entry group's drivers
(`hyjail.check.entry`) share it.
"""

from __future__ import annotations

import select
import subprocess
import sys

HYJAIL = [sys.executable, "-m", "hyjail"]


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
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def error_lines(stderr: str) -> list[str]:
    """stderr without the weakened jail's announcement: what a refusal said."""
    return [line for line in stderr.strip().splitlines()
            if line and not line.startswith("hyjail: WARNING: this jail is deliberately")]
