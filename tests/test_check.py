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
    # R1-R7, and "E": the entry path (SPEC section 1), the host's own way into a jail.
    assert {a.rule for a in CATALOGUE} == {f"R{n}" for n in range(1, 8)} | {"E"}
    assert all(a.judge or a.driver for a in CATALOGUE)
    assert len({a.key for a in CATALOGUE}) == len(CATALOGUE)  # names tell them apart
    # Every R3, R4 and R5 attempt but the races goes through int 0x80 and a 32-bit binary.
    for attempt in CATALOGUE:
        if attempt.rule in ("R3", "R4", "R5") and "race" not in attempt.name \
                and "/proc" not in attempt.name and "setuid" not in attempt.name:
            assert {"64", "int80", "32"} <= set(attempt.abis), attempt.key


@pytest.mark.parametrize("pattern", ["R6", "R7", "moved out", "TIOCSTI", "symlink pointing out"])
def test_the_drivers_and_a_sample_hold_on_every_backend(pattern):
    code, rows = check("--backend", "all", "-k", pattern)
    assert rows and {row["backend"] for row in rows} == {"ns", "trace"}
    assert code == 0, [row for row in rows if row["result"] not in ("held", "skipped")]
    skipped = [row for row in rows if row["result"] == "skipped"]
    # Only the chroot's documented weakness is skipped, and it says why.
    assert all(row["backend"] == "trace" and "FreeBSD documents" in row["detail"]
               for row in skipped)


def test_the_entry_group_covers_issue_13s_findings():
    entry = {a.name: a for a in CATALOGUE if a.rule == "E"}
    wanted = ("NSS module before jexec -u root and -l", "/proc scanner racing 200 jexecs",
              "dev, proc, tmp swapped for symlinks", "root swapped for a symlink before jexec",
              "impersonated network helper", "jail over / writes the cache",
              "allow-all filter planted in the cache", "a vsock socket",
              "other families no namespace confines", "runc and podman mask")
    for words in wanted:
        assert any(words in name for name in entry), words
    vsock = next(a for name, a in entry.items() if "vsock" in name)
    assert set(vsock.abis) == {"64", "int80", "int80s", "32"}  # every socket ABI
    # What tampers with every jail's filter runs alone, after the others.
    assert [a.name for a in entry.values() if a.alone] == \
        ["an allow-all filter planted in the cache"]


def test_the_entry_group_holds_on_every_backend():
    """Issue 13's attempts as a whole: held (or skipped, saying why) on ns and trace, and every
    jail they started ran or was refused in one line (no error row)."""
    code, rows = check("--backend", "all", "-k", "E", timeout=600)
    assert rows and {row["rule"] for row in rows} == {"E"}
    assert {row["backend"] for row in rows} == {"ns", "trace"}
    assert code == 0, [row for row in rows if row["result"] not in ("held", "skipped")]
    assert all(row["detail"] for row in rows if row["result"] == "skipped")
    ran = {(row["attempt"], row["backend"]) for row in rows if row["result"] == "held"}
    for attempt in ("a planted NSS module before jexec -u root and -l",
                    "a jail's root swapped for a symlink before jexec", "a vsock socket"):
        assert {(attempt, "ns"), (attempt, "trace")} <= ran
    assert ("a /proc scanner racing 200 jexecs (exe, mem, fd, ptrace)", "ns") in ran


@pytest.mark.parametrize(("weaken", "backend", "pattern"), [
    ("no-pidns", "ns", "kill of a host process"),  # R4 without its pid namespace
    ("no-pidns", "ns", "/proc/<host pid> is not there"),  # ... and the host's /proc
    ("no-filter", "ns", "unshare_user"),  # R5 without the seccomp filter
    ("all-caps", "trace", "a raw socket"),  # R3 on the host's network with CAP_NET_RAW
    ("all-caps", "ns", "netlink: change a link"),  # R3 with CAP_NET_ADMIN kept
    ("all-caps", "ns", "a raw socket"),
    ("leak-fds", "ns", "descriptors leaked"),  # R1 with the caller's fds let in
    ("leak-fds", "trace", "descriptors leaked"),
    ("judged-fd-passthrough", "trace", "descriptor swapped"),
    ("untraced-pids", "trace", "getpgid of a host process"),  # R4 unjudged by ptrace
    # The entry group (issue 13): each attempt against the weakening that reopens its hole.
    ("host-nss", "ns", "NSS module"),  # jexec -u/-l looks the user up through the jail's NSS
    ("host-nss", "trace", "NSS module"),
    ("dumpable-entry", "ns", "/proc scanner"),  # the entering process is a handle until exec
    ("follow-symlinks", "ns", "dev, proc, tmp swapped"),  # mounts follow a swapped dev
    ("follow-symlinks", "trace", "root swapped for a symlink before jexec"),  # chroot by name
    ("any-netd", "ns", "impersonated network helper"),  # nobody takes the helper's name
    ("unchecked-cache", "ns", "a jail over / writes the cache"),
    ("unchecked-cache", "ns", "allow-all filter planted in the cache"),
    ("unchecked-cache", "trace", "allow-all filter planted in the cache"),  # the prefilter
    ("open-families", "ns", "a vsock socket"),
    ("open-families", "trace", "a vsock socket"),
    ("open-families", "ns", "raw sockets allowed"),  # AF_XDP, with CAP_NET_RAW kept
    ("unmasked-proc", "ns", "runc and podman mask"),
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
