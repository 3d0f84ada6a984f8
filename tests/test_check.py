"""`hyjail check`, the escape battery: its catalogue, its report, its verdict, and proof that
its attempts can fail. CI runs the whole battery on every backend (the README's test command);
here a sample runs against real jails, and against jails deliberately weakened (hyjail.weaken)
where the same attempts must report ESCAPED. A battery that tests nothing fails: a backend
this host can run with every row skipped, or no row run at all. Each test asks this host's
plan for the backends it needs, and skips with the plan's refusal (the missing feature's
name) where the host cannot run one."""

from __future__ import annotations

import functools
import json
import os

import pytest

from hyjail.check.attempts import CATALOGUE
from hyjail.errors import SetupError

from conftest import hyjail, needs_root

pytestmark = needs_root

# The rows of `hyjail check`'s table: where the BACKEND and RESULT columns are.
_BACKEND_AT = 4 + 2 + 52 + 2 + 6 + 2
_BACKEND_COLUMN = slice(_BACKEND_AT, _BACKEND_AT + len("auto/hybrid"))
_RESULT_COLUMN = slice(_BACKEND_AT + len("auto/hybrid") + 2 + 6 + 2, None)


@functools.cache
def _plan(backend: str):
    """This host's plan for a backend (the probe asked once per session), or its refusal."""
    from hyjail import platform
    from hyjail.plan import choose
    try:
        return choose(platform.current(), backend)
    except SetupError as e:
        return str(e)


def needs_backend(*backends: str) -> None:
    for backend in backends:
        plan = _plan(backend)
        if isinstance(plan, str):
            pytest.skip(f"--backend {backend} cannot run on this host: {plan}")


def check_json(*args: str, weaken: str | None = None, timeout: float = 300):
    env = {**os.environ, "HYJAIL_UNSAFE_WEAKEN": weaken or ""}
    result = hyjail("check", "--json", *args, timeout=timeout, env=env)
    return result, json.loads(result.stdout)


def check(*args: str, weaken: str | None = None, timeout: float = 300) -> tuple[int, list]:
    result, data = check_json(*args, weaken=weaken, timeout=timeout)
    return result.returncode, data["rows"]


def fully_skipped(rows: list) -> set[str]:
    """The backends whose every row was skipped."""
    return {row["backend"] for row in rows} - {row["backend"] for row in rows
                                               if row["result"] != "skipped"}


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
    needs_backend("ns", "trace")  # where both run, auto makes the ns jail again
    code, rows = check("--backend", "all", "-k", pattern)
    assert rows and {row["backend"] for row in rows} == {"ns", "trace"}
    assert all(row["result"] in ("held", "skipped") for row in rows), rows
    # A backend that ran nothing (here: trace, for "moved out") fails the battery.
    assert code == (1 if fully_skipped(rows) else 0), rows
    skipped = [row for row in rows if row["result"] == "skipped"]
    # Only the chroot's documented weakness is skipped, and it says why.
    assert all(row["backend"] == "trace" and "FreeBSD documents" in row["detail"]
               for row in skipped)


def test_the_entry_group_covers_issue_13s_findings():
    entry = {a.name: a for a in CATALOGUE if a.rule == "E"}
    wanted = ("NSS module before jexec -u root and -l", "/proc scanner racing 200 jexecs",
              "dev, proc, tmp swapped for symlinks", "root swapped for a symlink before jexec",
              "a bind's source swapped for a symlink", "impersonated network helper",
              "jail over / writes the cache", "allow-all filter planted in the cache",
              "a vsock socket",
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
    needs_backend("ns", "trace")
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
    ("host-mqueue", "trace", "POSIX message queue"),  # no IPC namespace, no gate
    ("shared-root-copy", "trace", "bind seen over a shared root"),  # the copy a peer
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
    ("follow-symlinks", "ns", "a bind's source swapped"),  # the source resolved by name
    ("follow-symlinks", "trace", "a bind's source swapped"),  # ... on the host's tree
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
    needs_backend(backend)
    for _ in range(3):  # a race may lose all its rounds once; a hole that is open never does
        code, rows = check("--backend", backend, "-k", pattern, weaken=weaken)
        assert rows and code == 1
        if all(row["result"] == "ESCAPED" for row in rows if row["result"] != "skipped"):
            break
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
    needs_backend("ns")
    result = hyjail("check", "--backend", "ns", "-k", "R2", timeout=120)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["RULE", "ATTEMPT", "ABI", "BACKEND", "TIME", "RESULT"]
    assert all(line.startswith("R2") and line.endswith("held") for line in lines[1:-1])
    assert lines[-1].startswith(f"{len(lines) - 2} runs of 2 attempts on ns: ")
    assert result.returncode == 0


_SWAPPED = "descriptor swapped under"  # the fd-swap races: the trace supervisor's to hold


def test_a_backend_that_runs_here_with_every_row_skipped_fails_the_battery():
    """The fd-swap races skip on ns (the kernel holds R3 there): a battery of them alone on ns
    tested nothing, and says so, in one line, with a non-zero exit."""
    needs_backend("ns")
    races = [a for a in CATALOGUE if _SWAPPED in a.name]
    assert len(races) == 6 and all("ns" not in a.only for a in races)
    reason = races[0].unheld
    result, data = check_json("--backend", "ns", "-k", _SWAPPED, timeout=120)
    assert result.returncode == 1
    assert [row["result"] for row in data["rows"]] == ["skipped"] * 6
    assert data["failure"] == (f"ns can run on this host, but all 6 of its runs were skipped "
                               f"(6: {reason})")
    assert result.stderr.splitlines() == [f"hyjail check: {data['failure']}"]
    # The skips counted per backend and reason, in JSON and in the table.
    assert data["skipped"] == [{"backend": "ns", "reason": reason, "count": 6}]
    table = hyjail("check", "--backend", "ns", "-k", _SWAPPED, timeout=120)
    assert table.returncode == 1
    lines = table.stdout.splitlines()
    lines[-1] = lines[-1].partition("; paced")[0]  # a box's pace (HYJAIL_CHECK_SLOW), if any
    assert lines[-3:] == ["skipped, by backend and reason:",
                          f"  {6:>4}  {'ns':<11}  {reason}",
                          "6 runs of 6 attempts on ns: 0 held, 0 escaped, 6 skipped, 0 errors"]


def test_a_battery_that_runs_nothing_fails():
    result, data = check_json("--backend", "all", "-k", "no attempt is called this",
                              timeout=120)
    assert (result.returncode, data["rows"]) == (1, [])
    assert result.stderr.splitlines() == [
        "hyjail check: nothing ran: no attempt matches -k 'no attempt is called this'"]


def test_a_slow_host_gets_longer_timeouts_and_shorter_races_and_is_told():
    """HYJAIL_CHECK_SLOW (script/boxes under software emulation): the races run fewer rounds,
    which the summary says, and still hold (a weakened jail's run whole); a bad factor is one
    line, exit 125."""
    env = {**os.environ, "HYJAIL_CHECK_SLOW": "20"}
    result = hyjail("check", "--json", "-k", "path flipped between inside", timeout=300, env=env)
    data = json.loads(result.stdout)
    assert result.returncode == 0 and {row["result"] for row in data["rows"]} == {"held"}
    assert data["summary"].endswith(
        "; paced for a host 20x slower (HYJAIL_CHECK_SLOW): timeouts x20, races of 1000 "
        "rounds (fd swaps 100), not 20000 (2000)")
    # A weakened jail's races run whole: they are the proof that the attempt can escape.
    weak = hyjail("check", "--json", "-k", "path flipped between inside", timeout=300,
                  env={**env, "HYJAIL_UNSAFE_WEAKEN": "follow-symlinks"})
    assert json.loads(weak.stdout)["summary"].endswith(
        "; paced for a host 20x slower (HYJAIL_CHECK_SLOW): timeouts x20, races at full "
        "length (a weakened jail's)")
    bad = hyjail("check", "-k", "R2", env={**os.environ, "HYJAIL_CHECK_SLOW": "fast"})
    assert (bad.returncode, bad.stdout) == (125, "")
    assert bad.stderr == "hyjail: HYJAIL_CHECK_SLOW=fast: not a factor from 1 to 1000\n"


def test_all_runs_every_shape_the_plan_makes_here_and_auto_once():
    """ns, trace and auto, each as this host's plan makes it (a hybrid jail labelled so);
    auto, where it makes a jail already listed, is named in a line and not run twice; a
    backend the host cannot run has its rows skipped with the plan's refusal."""
    expected, made = {}, []
    notes = []
    for name in ("ns", "trace", "auto"):
        plan = _plan(name)
        if isinstance(plan, str):
            expected[name] = False
            notes.append(f"{name}: this host cannot run it: {plan}")
            continue
        label = name if plan.kind == name else f"{name}/{plan.kind}"
        twin = next((seen for other, seen in made
                     if (other.kind, other.chosen) == (plan.kind, plan.chosen)), None)
        if twin:
            notes.append(f"{name}: same jail as {twin} (not run twice)")
        else:
            made.append((plan, label))
            expected[label] = True
    if not isinstance(_plan("ns"), str):  # auto takes the kernel's every rule: ns's jail
        assert "auto: same jail as ns (not run twice)" in notes
    result = hyjail("check", "--backend", "all", "-k", "uname gives", timeout=120)
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.startswith("R2 ")]
    got: dict = {}  # label: its rows' results
    for line in rows:
        got.setdefault(line[_BACKEND_COLUMN].strip(), set()).add(
            line[_RESULT_COLUMN].split(":")[0])
    assert set(got) == set(expected), lines
    for label, ran in expected.items():
        if ran:  # held; a skip (e.g. no i386 ABI here) is the host's, not the shape's
            assert "held" in got[label] and got[label] <= {"held", "skipped"}, lines
        else:
            assert got[label] == {"skipped"}, lines
    for note in notes:
        assert note in lines, lines
    assert lines[-1].startswith(f"{len(rows)} runs of 1 attempts on {', '.join(expected)}: ")
    assert result.returncode == (0 if made else 1), result.stderr


def test_the_verdict_on_hosts_this_one_is_not():
    """A backend the host cannot run fails nothing by itself; but a run where no backend
    could run, or where one that could ran nothing, fails."""
    from hyjail.check import report
    from hyjail.check.runner import Outcome, Planned, Row, Shape
    refused = Planned("trace", refused="R4 (processes) cannot be enforced: pidfd.thread")
    hybrid = Planned("auto", Shape("auto", "hybrid", veth=False))
    assert hybrid.label == "auto/hybrid"
    skip = Row("R1", "x", "64", "trace", "skipped", refused.refused)
    held = Row("R1", "x", "64", "auto/hybrid", "held")
    passed = Outcome([refused, hybrid], [skip, held])
    assert report.exit_status(passed) == 0 and report.failure(passed) is None
    assert "trace: this host cannot run it: R4 (processes)" in report.table(passed)
    assert report.skips(passed) == [{"backend": "trace", "reason": refused.refused,
                                     "count": 1}]
    nothing = Outcome([refused], [skip])
    assert report.exit_status(nothing) == 1
    assert report.failure(nothing).startswith("nothing ran: this host can run none of the "
                                              "backends asked for (trace: this host cannot")
    empty = Outcome([refused, hybrid], [skip, Row("R1", "x", "int80", "auto/hybrid",
                                                   "skipped", "no i386 ABI")])
    assert report.failure(empty) == ("auto/hybrid can run on this host, but its one run was "
                                      "skipped (1: no i386 ABI)")
