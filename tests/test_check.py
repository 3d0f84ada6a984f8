"""`hyjail check`, the escape battery: its catalogue, its report, and proof that its attempts
can fail. CI runs the whole battery on every backend (the README's test command); here a
sample runs against real jails, and against jails deliberately weakened (hyjail.weaken) where
the same attempts must report ESCAPED."""

from __future__ import annotations

import json
import os

import pytest

from hyjail.check.attempts import CATALOGUE

from conftest import hyjail, needs_root

pytestmark = needs_root


def check(*args: str, weaken: str | None = None, timeout: float = 300) -> tuple[int, list]:
    env = {**os.environ, "HYJAIL_UNSAFE_WEAKEN": weaken or ""}
    result = hyjail("check", "--json", *args, timeout=timeout, env=env)
    return result.returncode, json.loads(result.stdout)["rows"]


def test_the_catalogue_covers_every_rule_with_judged_attempts():
    assert len(CATALOGUE) >= 50
    assert {a.rule for a in CATALOGUE} == {f"R{n}" for n in range(1, 8)}
    assert all(a.judge or a.driver for a in CATALOGUE)
    assert len({a.key for a in CATALOGUE}) == len(CATALOGUE)  # names tell them apart
    # Every R3, R4 and R5 attempt but the races goes through int 0x80 and a 32-bit binary.
    for attempt in CATALOGUE:
        if attempt.rule in ("R3", "R4", "R5") and "race" not in attempt.name \
                and "/proc" not in attempt.name and "setuid" not in attempt.name:
            assert {"64", "int80", "32"} <= set(attempt.abis), attempt.key


@pytest.mark.parametrize("pattern", ["R6", "R7", "moved out", "TIOCSTI", "symlink"])
def test_the_drivers_and_a_sample_hold_on_every_backend(pattern):
    code, rows = check("--backend", "all", "-k", pattern)
    assert rows and {row["backend"] for row in rows} == {"ns", "trace"}
    assert code == 0, [row for row in rows if row["result"] not in ("held", "skipped")]
    skipped = [row for row in rows if row["result"] == "skipped"]
    # Only the chroot's documented weakness is skipped, and it says why.
    assert all(row["backend"] == "trace" and "FreeBSD documents" in row["detail"]
               for row in skipped)


@pytest.mark.parametrize(("weaken", "backend", "pattern"), [
    ("no-pidns", "ns", "kill of a host process"),  # R4 without its pid namespace
    ("no-pidns", "ns", "/proc/<host pid> is not there"),  # ... and the host's /proc
    ("no-filter", "ns", "unshare_user"),  # R5 without the seccomp filter
    ("all-caps", "trace", "a raw socket"),  # R3 on the host's network with CAP_NET_RAW
    ("all-caps", "ns", "netlink: change a link"),  # R3 with CAP_NET_ADMIN kept
    ("all-caps", "ns", "a raw socket"),
    ("leak-fds", "ns", "descriptors leaked"),  # R1 with the caller's fds let in
    ("leak-fds", "trace", "descriptors leaked"),
    ("untraced-pids", "trace", "getpgid of a host process"),  # R4 unjudged by ptrace
])
def test_attempts_report_escaped_against_a_weakened_jail(weaken, backend, pattern):
    code, rows = check("--backend", backend, "-k", pattern, weaken=weaken)
    assert rows and code == 1
    assert all(row["result"] == "ESCAPED" for row in rows if row["result"] != "skipped"), rows


def test_a_weakening_is_announced_and_a_bad_one_refused(busybox_root):
    env = {**os.environ, "HYJAIL_UNSAFE_WEAKEN": "no-filter"}
    ran = hyjail("run", busybox_root, "w", "127.0.0.1", "/bin/true", env=env)
    assert ran.returncode == 0
    assert ran.stderr.startswith("hyjail: WARNING: this jail is deliberately weakened")
    bad = hyjail("run", busybox_root, "w", "127.0.0.1", "/bin/true",
                 env={**os.environ, "HYJAIL_UNSAFE_WEAKEN": "everything"})
    assert (bad.returncode, bad.stderr.count("\n")) == (125, 1)
    assert "HYJAIL_UNSAFE_WEAKEN=everything: unknown" in bad.stderr


def test_the_table_groups_by_rule_and_sums_up():
    result = hyjail("check", "--backend", "ns", "-k", "R2", timeout=120)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["RULE", "ATTEMPT", "ABI", "BACKEND", "TIME", "RESULT"]
    assert all(line.startswith("R2") and line.endswith("held") for line in lines[1:-1])
    assert lines[-1].startswith(f"{len(lines) - 2} runs of 2 attempts on ns: ")
    assert result.returncode == 0
