"""jail(8) as FreeBSD's: its flags by getopt, FreeBSD's lifetime (a jail without persist lives
while it has processes), `jail -m`, stop.timeout=0, the positional form, and no traceback
for any parameter name or value."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyjail import jailparams
from hyjail.jail8 import USAGE

from conftest import hyjail, needs, needs_root, new_leaks

JAIL = [sys.executable, "-c", "from hyjail.commands import jail_main; jail_main()"]
JEXEC = [os.path.join(os.path.dirname(sys.executable), "jexec")]
JLS = [os.path.join(os.path.dirname(sys.executable), "jls")]
JEXEC = [os.path.join(os.path.dirname(sys.executable), "jexec")]


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


# Every name but path, which alone could make the jail startable (path=/) and so run it.
_NAMES = st.one_of(st.sampled_from(sorted(jailparams.TABLE)),
                   st.text(alphabet="abcdefghijklmnopqrstuvwxyz._", min_size=1, max_size=12)
                   ).filter(lambda name: name != "path")
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


def _conf_string(text: str) -> str:
    """text as a jail.conf double-quoted string (jailparse.y's escapes)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@needs_root
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_NAMES, value=_VALUES, bare=st.booleans())
def test_any_parameter_in_a_jail_conf_gets_one_line_and_freebsds_status(
        tmp_path_factory, name, value, bare):
    """The same through a jail.conf: a jail block with the parameter (bare, or `=` a
    quoted value), a refusal of one line and exit 1 whatever the name or value."""
    conf = tmp_path_factory.mktemp("conf") / "jail.conf"
    statement = name if bare else f"{name} = {_conf_string(value)}"
    conf.write_text(f'j {{\n  path = "/nonexistent/hyjail-test";\n  persist;\n'
                    f'  {statement};\n}}\n')
    result = jail("-f", str(conf), "-c", "j", timeout=30)
    assert result.returncode == 1, (conf.read_text(), result)
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


@needs_root
@needs("R1:kernel", "R2:ptrace@trace")
def test_osrelease_is_unames_release_in_the_jail(busybox_root):
    """osrelease: uname(2)'s release inside (the tracer answers it: R2 goes to ptrace, a
    hybrid jail), the host's elsewhere; jls shows it."""
    result = jail("-c", "name=relj", f"path={busybox_root}", "osrelease=13.2-RELEASE",
                  "command=/bin/uname", "-r")
    assert (result.returncode, result.stdout) == (0, "13.2-RELEASE\nrelj: created\n"), result
    assert os.uname().release != "13.2-RELEASE"
    assert not new_leaks()


def test_osrelease_is_refused_where_only_the_kernel_may_hold_r2():
    from hyjail import plan
    from hyjail.errors import SetupError

    from conftest import host_probe
    try:
        plan.choose(host_probe(), "ns", {"R2": "osrelease"})
    except SetupError as refused:
        assert str(refused).startswith("osrelease: needs ptrace's provider of R2")
    else:
        raise AssertionError("--backend ns took osrelease")


@needs_root
@needs("R1:kernel", "R3:ptrace@trace")
def test_ip4_inherit_shares_the_hosts_addresses_and_nothing_else(probe_root):
    """ip4=inherit: the host's network and its addresses, unchanged (a service on the host's
    127.0.0.1 answers the jail, the jail's listener answers the host there); the tracer
    still holds the rest of R3 (the host's abstract unix names stay out of reach)."""
    import socket
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0hjinherit{os.getpid()}".encode())
    abstract.listen(4)
    try:
        made = jail("-c", "name=inh", f"path={probe_root}", "host.hostname=inh", "ip4=inherit",
                    "persist")
        assert made.returncode == 0, made.stderr
        got = subprocess.run([*JEXEC, "inh", "/bin/hjprobe", "inh", "64",
                              f"connect:127.0.0.1:{port}", "bind:127.0.0.2", "bind:0.0.0.0",
                              f"uconnect:hjinherit{os.getpid()}"],
                             capture_output=True, text=True, timeout=60)
        answers = dict(line.split("=", 1) for line in got.stdout.splitlines())
        assert answers[f"connect:127.0.0.1:{port}"] == "127.0.0.1", (got.stdout, got.stderr)
        # Any host address, the unspecified one not rewritten (a jail of 127.0.0.1: neither)
        assert (answers["bind:127.0.0.2"], answers["bind:0.0.0.0"]) == ("127.0.0.2", "0.0.0.0")
        # refused by the Landlock scope (EPERM) or the stand-in (ECONNREFUSED)
        assert answers[f"uconnect:hjinherit{os.getpid()}"] in ("EPERM", "ECONNREFUSED")
        shown = subprocess.run([*JLS, "-j", "inh", "-n", "ip4"], capture_output=True, text=True)
        assert shown.stdout == "ip4=inherit\n"
    finally:
        jail("-r", "inh")
        listener.close()
        abstract.close()
    refused = jail("-c", "name=inh2", f"path={probe_root}", "ip4=inherit", "ip4.addr=10.77.9.9",
                   "persist")
    assert (refused.returncode, refused.stderr) == (
        1, "jail: ip4.addr with ip4=inherit: the jail has every host address already\n")
    assert not new_leaks()


def test_ip4_inherit_is_refused_where_only_the_kernel_may_hold_r3():
    from hyjail import plan
    from hyjail.errors import SetupError

    from conftest import host_probe
    with pytest.raises(SetupError, match="ip4=inherit: needs ptrace's provider of R3"):
        plan.choose(host_probe(), "ns", {"R3": "ip4=inherit"})


@needs_root
@needs("backend:auto")
def test_a_persistent_jails_supervisor_keeps_none_of_the_callers_descriptors(busybox_root):
    """jail -c returns while the jail lives on: a pipe the caller handed it reaches EOF
    (the supervisor forked from jail(8) closed its copy), under exec.consolelog too."""
    read_end, write_end = os.pipe()
    try:
        made = subprocess.run([*JAIL, "-c", "name=fds", f"path={busybox_root}", "persist",
                               "exec.consolelog=/dev/null"], pass_fds=(write_end,),
                              capture_output=True, text=True, timeout=60)
        os.close(write_end)
        write_end = -1
        assert made.returncode == 0, made.stderr
        os.set_blocking(read_end, False)
        assert os.read(read_end, 1) == b""  # EOF: no writer left
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)
        jail("-r", "fds")
    assert not new_leaks()


@needs_root
@needs("backend:auto")
def test_allow_nosuser_leaves_jailed_root_no_power(busybox_root):
    """allow.nosuser (FreeBSD: root inside is an ordinary user): uid 0 keeps no capability,
    so it can neither give a file away nor set the jail's hostname; by default it can."""
    script = ('f=$(mktemp); chown 1:1 "$f" && echo chown-ok; rm -f "$f"; '
              'hostname nosuser-x 2>/dev/null && echo hostname-ok; id -u')
    ran = {}
    for allow_suser in ("allow.suser", "allow.nosuser"):
        result = jail("-c", f"path={busybox_root}", allow_suser, "command=/bin/sh", "-c",
                      script)
        assert result.returncode == 0, result.stderr
        ran[allow_suser] = result.stdout.splitlines()[:-1]  # less "jail: created"
    assert ran["allow.suser"] == ["chown-ok", "hostname-ok", "0"]
    assert ran["allow.nosuser"] == ["0"]
    assert not new_leaks()


@needs_root
@needs("R1:kernel", "R2:ptrace@trace")
def test_a_traced_jail_renamed_inside_keeps_what_jail_8_recorded(busybox_root):
    """The tracer answers sethostname (osrelease puts R2 in its hands) and writes the new
    name into the record jail(8) has since added the hooks to: exec.prestop still runs."""
    made = jail("-c", "name=ren", f"path={busybox_root}", "osrelease=1.0", "persist",
                "exec.prestop=echo STOP")
    try:
        assert made.returncode == 0, made.stderr
        renamed = subprocess.run([*JEXEC, "ren", "hostname", "renamed"], capture_output=True,
                                 text=True, timeout=30)
        assert renamed.returncode == 0, renamed.stderr
        assert subprocess.run([*JEXEC, "ren", "hostname"], capture_output=True, text=True,
                              timeout=30).stdout == "renamed\n"
        removed = jail("-r", "ren")
        assert (removed.returncode, removed.stdout) == (0, "STOP\nren: removed\n"), removed
    finally:
        jail("-r", "ren")
    assert not new_leaks()


@needs_root
@needs("backend:auto")
def test_exec_system_jail_user_is_the_hosts(busybox_root):
    """exec.jail_user of the host's passwd with exec.system_jail_user (the busybox root's
    passwd has no such user): the command runs inside with the host's ids for it."""
    import pwd
    daemon = pwd.getpwnam("daemon")
    result = jail("-c", f"path={busybox_root}", "exec.jail_user=daemon",
                  "exec.system_jail_user", "command=/bin/sh", "-c", "id -u; id -g")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [str(daemon.pw_uid), str(daemon.pw_gid)]
    refused = jail("-c", f"path={busybox_root}", "exec.jail_user=daemon", "command=/bin/true")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused
    assert not new_leaks()


@needs_root
@needs("backend:auto")
def test_exec_timeout_ends_an_exec_start_that_hangs(busybox_root):
    """exec.timeout bounds exec.start inside as it does the host's hooks: the jail is not
    created, one line, exit 1, nothing left."""
    started = time.monotonic()
    result = jail("-c", "name=slowj", f"path={busybox_root}", "persist", "exec.timeout=1",
                  "exec.start=sleep 30")
    assert result.returncode == 1, result
    assert "timed out after 1 s" in result.stderr and result.stderr.count("\n") == 1
    assert time.monotonic() - started < 20
    assert hyjail("ps", "-j", "slowj").returncode == 1
    assert not new_leaks()


@needs_root
@needs("backend:auto")
def test_verbose_tells_each_command_before_it_runs(busybox_root):
    """jail -v: FreeBSD's `NAME: run command[ in jail][ with timeout]: COMMAND` before each
    host hook and each command inside, at -c and -r."""
    made = jail("-v", "-c", "name=vj", f"path={busybox_root}", "persist",
                "exec.prestart=echo pre", "exec.start=echo start", "exec.stop=echo stop")
    try:
        assert made.stdout == ("vj: run command: echo pre\npre\n"
                               "vj: run command in jail: echo start\nstart\nvj: created\n"), made
    finally:
        removed = jail("-v", "-r", "vj")
    assert removed.stdout == "vj: run command in jail: echo stop\nstop\nvj: removed\n", removed
    assert not new_leaks()


@needs_root
@needs("backend:auto", "R1:kernel")
@pytest.mark.parametrize("ruleset,nodes", [
    ("1", ""),  # devfsrules_hide_all
    ("2", "fd null random shm stderr stdin stdout urandom zero"),  # devfsrules_unhide_basic
    ("4", "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"),
    ("0", "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"),
])
def test_devfs_ruleset_chooses_the_jails_device_nodes(busybox_root, ruleset, nodes):
    shown = jail("-c", "name=devj", f"path={busybox_root}", f"devfs_ruleset={ruleset}",
                 "command=/bin/ls", "/dev")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split()[:-2] == nodes.split()  # then "devj: created"
    assert not new_leaks()


def test_a_local_devfs_ruleset_is_refused_in_one_line(busybox_root):
    refused = jail("-c", "name=devj", f"path={busybox_root}", "devfs_ruleset=10", "persist")
    assert (refused.returncode, refused.stderr) == (
        1, "jail: devfs_ruleset=10: hyjail has FreeBSD's default rulesets (0-5: "
           "/etc/defaults/devfs.rules), not a local one\n")
