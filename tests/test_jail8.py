"""jail(8) as FreeBSD's: its flags by getopt, FreeBSD's lifetime (a jail without persist lives
while it has processes), `jail -m`, stop.timeout=0, the positional form, and no traceback
for any parameter name or value."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyjail import jailparams
from hyjail.jail8 import USAGE

from conftest import hyjail, needs, needs_root, new_leaks

JAIL = [sys.executable, "-c", "from hyjail.cli import jail_main; jail_main()"]


def jail(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*JAIL, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def gone_within(name: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if hyjail("ps", "-j", name).returncode == 1:
            return True
        time.sleep(0.1)
    return False


@needs_root
@needs("backend:auto")
def test_an_rc_style_jail_lives_while_it_has_processes(busybox_root, tmp_path):
    """exec.start returns at once, leaving a daemon: the jail lives on (FreeBSD's lifetime,
    no persist); exec.poststart sees its JID; the jail ends when the daemon exits."""
    seen = tmp_path / "jid"
    result = jail("-c", "name=rcj", f"path={busybox_root}",
                  "exec.start=/bin/sleep 2 </dev/null >/dev/null 2>&1 &",
                  f"exec.poststart=echo $JID > {seen}")
    try:
        assert (result.returncode, result.stdout) == (0, "rcj: created\n"), result.stderr
        assert seen.read_text().strip().isdigit()
        listed = hyjail("ps", "-j", "rcj")
        assert listed.returncode == 0 and "sleep" in listed.stdout
        assert gone_within("rcj", 15)
    finally:
        jail("-r", "rcj")
    assert not new_leaks()


@needs_root
@needs("backend:auto")
def test_a_jail_whose_command_leaves_nothing_is_gone_when_jail_returns(busybox_root):
    result = jail("-c", "name=brief", f"path={busybox_root}", "command=/bin/true")
    assert (result.returncode, result.stdout) == (0, "brief: created\n"), result.stderr
    assert hyjail("ps", "-j", "brief").returncode == 1
    assert not new_leaks()


@needs_root
@needs("backend:auto")
def test_jail_m_takes_persist_away_and_the_empty_jail_ends(busybox_root):
    made = jail("-c", "name=held", f"path={busybox_root}", "persist=true")  # true is on
    try:
        assert made.returncode == 0, made.stderr
        assert hyjail("ps", "-j", "held").returncode == 0
        changed = jail("-m", "name=held", "host.hostname=other")
        assert (changed.returncode, changed.stderr) == (
            1, "jail: host.hostname: cannot be changed on a running jail\n")
        modified = jail("-m", "name=held", "nopersist")
        assert (modified.returncode, modified.stdout) == (0, "held: updated\n")
        assert gone_within("held", 10)
    finally:
        jail("-r", "held")
    assert not new_leaks()


@needs_root
@needs("backend:auto")
def test_stop_timeout_zero_removes_at_once(busybox_root):
    made = jail("-c", "name=zero", f"path={busybox_root}", "persist", "stop.timeout=0",
                "exec.start=/bin/sleep 60 </dev/null >/dev/null 2>&1 &")
    assert made.returncode == 0, made.stderr
    removed = jail("-r", "zero")
    assert (removed.returncode, removed.stdout, removed.stderr) == (0, "zero: removed\n", "")
    assert not new_leaks()


@needs_root
@needs("backend:auto")
def test_the_positional_form_with_no_address(busybox_root):
    result = jail(busybox_root, "old", "", "/bin/sh", "-c", "hostname; exit 3")
    assert (result.returncode, result.stdout) == (3, "old\n"), result.stderr
    assert not new_leaks()


def test_flags_are_freebsds():
    for argv, first in ((["-x"], "jail: illegal option -- x\n"),
                        (["-J"], "jail: option requires an argument -- J\n"), ([], "")):
        result = jail(*argv)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", first + USAGE)
    helped = jail("--help")
    assert (helped.returncode, helped.stdout) == (0, USAGE)


_NAMES = st.one_of(st.sampled_from(sorted(jailparams.TABLE)),
                   st.text(alphabet="abcdefghijklmnopqrstuvwxyz._", min_size=1, max_size=12))
_VALUES = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                         blacklist_characters="\0"), max_size=12)


@needs_root
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_NAMES, value=_VALUES, bare=st.booleans())
def test_any_parameter_gets_one_line_and_freebsds_status(name, value, bare):
    """Every parameter name and value, on a jail that cannot start (its path is missing):
    a refusal is one line and exit 1, never a traceback."""
    word = name if bare else f"{name}={value}"
    result = jail("-c", "path=/nonexistent/hyjail-test", "persist", word, timeout=30)
    assert result.returncode == 1, result
    assert result.stderr.startswith("jail: ") and result.stderr.count("\n") == 1, result
    assert "Traceback" not in result.stderr


def test_the_table_says_what_each_parameter_is():
    """Every row is one of three, with FreeBSD's meaning and hyjail's mapping or reason."""
    for row in jailparams.TABLE.values():
        assert row.status in ("mapped", "noop", "refused"), row
        assert row.freebsd and row.linux, row
    # FreeBSD's own names are never "unknown".
    for name in ("enforce_statfs", "children.max", "securelevel", "devfs_ruleset", "vnet",
                 "interface", "allow.quotas", "allow.mount.zfs", "exec.fib", "osrelease",
                 "sysvshm", "host.hostuuid", "ip4.saddrsel", "depend", "mount.fstab"):
        assert name in jailparams.TABLE, name


@needs_root
@needs("R1:kernel", "R4:kernel")  # read in the jail's own /proc
def test_host_domainname_is_the_jails(busybox_root):
    result = jail("-c", f"path={busybox_root}", "host.domainname=jails.example",
                  "command=/bin/cat", "/proc/sys/kernel/domainname")
    assert (result.returncode, result.stdout.splitlines()[0]) == (0, "jails.example"), result
    with open("/proc/sys/kernel/domainname") as host:
        assert host.read().strip() != "jails.example"


def test_the_readme_has_the_table():
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        readme = f.read()
    start = readme.index("<!-- jailparams:")
    block = readme[readme.index("\n", start) + 1:readme.index("<!-- /jailparams -->")]
    assert block == jailparams.markdown()
