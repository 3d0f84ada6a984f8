"""FreeBSD's own tests of jail(8), ported: usr.sbin/jail/tests/jail_basic_test.sh (its seven
cases, with commands.jail.conf) and usr.bin/hostname/tests (the jailed hostname case).

Each case runs the same command lines, against the same expectations, as the atf script;
what is adapted is only what is FreeBSD's alone, and each such line says why:
- addresses: FreeBSD's tests use 192.0.1.1; ours are 10.77.0.0/16 (test network safety,
  SPEC section 4), given fresh per jail;
- `jail`, `jls`, `jexec` are this venv's drop-ins, named by path (the atf tests find them
  on PATH);
- interfaces (`ifconfig epair create`, `ifconfig lo create`), VNET and the audit subsystem:
  FreeBSD's kernel facilities; the parts that need them are N/A, each named with why, and
  the refusal hyjail gives instead is tested (one line, exit 1).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from conftest import SLOW, fresh_ip, missing, needs, needs_root, new_leaks
from world import World

BIN = os.path.dirname(sys.executable)
JAIL, JLS, JEXEC = (os.path.join(BIN, name) for name in ("jail", "jls", "jexec"))

pytestmark = [needs_root, needs("backend:auto")]


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def check(*argv: str, status: int = 0) -> subprocess.CompletedProcess:
    """atf_check -s exit:STATUS: the command's status, with its output kept for matching."""
    result = run(*argv)
    assert result.returncode == status, (argv, result.stdout, result.stderr)
    return result


def jid_of(name: str) -> str:
    return check(JLS, "-j", name, "jid").stdout.strip()


def remove_all(*names: str) -> None:
    """The atf cleanup: every jail the case may have left, removed if it exists."""
    for name in names:
        if run(JLS, "-j", name).returncode == 0:
            run(JAIL, "-r", name)


def unused_jid() -> int:
    """find_unused_jid: from 5309 up, the first JID `jls -cj` says is free."""
    jid = 5309
    while run(JLS, "-cj", str(jid)).returncode == 0:
        jid += 1
    return jid


def test_basic():
    """Create, list (jls, -v, -n), remove by name and by JID, -cm, -rc."""
    ip = fresh_ip()
    try:
        check(JAIL, "-c", "name=basejail", "persist", f"ip4.addr={ip}")
        check(JLS)
        check(JLS, "-v")
        check(JLS, "-n")
        check(JAIL, "-r", "basejail")
        run(JAIL, "-c", "name=basejail", "persist", f"ip4.addr={ip}")
        check(JAIL, "-r", jid_of("basejail"))  # stop jail by jid
        check(JAIL, "-cm", "name=basejail", "persist", f"ip4.addr={ip}")  # recreate
        check(JAIL, "-rc", "name=basejail", "persist", f"ip4.addr={ip}")  # restart
    finally:
        remove_all("basejail")
    assert not new_leaks()


@needs("R3:kernel")
def test_list():
    """Parameters as lists: both ends of an epair given to a vnet jail (vnet.interface=A,B),
    seen inside by ifconfig. Adapted: the epair is a veth pair (`ip link`, not FreeBSD's
    ifconfig, which a Linux host may not have), made on the host of a network of the test's
    own (tests/world.py), never the real host's; each end comes back when the jail is
    removed (once the kernel has ended the jail's network namespace)."""
    with World() as world:
        world.sh(world.host, "ip link add epair0a type veth peer name epair0b")
        jail = [*world.enter(world.host), JAIL]
        try:
            made = world.run(*jail, "-c", "name=basejail", "vnet", "persist",
                             "vnet.interface=epair0a,epair0b")
            assert made.returncode == 0, made.stderr
            for end in ("epair0a", "epair0b"):
                inside = world.run(*world.enter(world.host), JEXEC, "basejail", "ip", "link",
                                   "show", end)
                assert inside.returncode == 0 and end in inside.stdout, inside.stderr
        finally:
            world.run(*jail, "-r", "basejail")
        deadline = time.monotonic() + 5 * SLOW  # a namespace ends after its last process
        while "epair0a" not in world.sh(world.host, "ip -o link").stdout:  # back on the host
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_nested():
    """N/A in part: jails do not nest on Linux (SPEC R5: a jailed process makes no
    namespaces), so children.max=1 is refused in one line. The case's second half holds as
    FreeBSD's: in a jail with children.max=0 (the default), jail -c fails with status 1, one
    line, and creates nothing."""
    ip = fresh_ip()
    refused = run(JAIL, "-c", "name=basejail", "persist", f"ip4.addr={ip}", "children.max=1")
    assert refused.returncode == 1 and refused.stderr.startswith("jail: children.max"), \
        refused.stderr
    assert refused.stderr.count("\n") == 1
    try:
        check(JAIL, "-c", "name=basejail_nochild", "persist", f"ip4.addr={ip}")
        nested = run(JEXEC, "basejail_nochild", JAIL, "-c", "name=nestedjail", "persist",
                     f"ip4.addr={fresh_ip()}")
        assert nested.returncode == 1, (nested.stdout, nested.stderr)
        assert nested.stdout == ""
        assert nested.stderr.startswith("jail: ") and nested.stderr.count("\n") == 1, \
            nested.stderr
        assert run(JLS, "-j", "nestedjail").returncode == 1
        # jls inside the jail works (FreeBSD's shows the jail's children: none here).
        check(JEXEC, "basejail_nochild", JLS)
        check(JEXEC, "basejail_nochild", JLS, "-v")
        check(JEXEC, "basejail_nochild", JLS, "-n")
    finally:
        remove_all("nestedjail", "basejail_nochild")
    assert not new_leaks()


COMMANDS_CONF = """
exec.prestop = "echo STOP";
exec.prestart = "echo START";
exec.poststart = "env";
persist;

basejail {}
"""  # commands.jail.conf as FreeBSD 14 ships it, with the exec.poststart its test reads


def test_commands(tmp_path):
    """exec.prestart's output, JID/JNAME/JPATH in exec.poststart's environment, exec.prestop
    by name and by JID; the jail's path is the test's own directory (an empty directory:
    FreeBSD's jail of a bare directory)."""
    os.chdir(tmp_path)
    conf = tmp_path / "jail.conf"
    conf.write_text(COMMANDS_CONF + f'path = "{tmp_path}";\n')
    try:
        made = check(JAIL, "-f", str(conf), "-qc", "basejail")
        assert made.stderr == ""
        assert re.search(r"^START$", made.stdout, re.M), made.stdout
        assert re.search(r"^JID=[0-9]+", made.stdout, re.M)
        assert re.search(r"^JNAME=basejail$", made.stdout, re.M)
        assert re.search(rf"^JPATH={re.escape(str(tmp_path))}$", made.stdout, re.M)
        assert check(JAIL, "-f", str(conf), "-qr", "basejail").stdout == "STOP\n"
        check(JAIL, "-f", str(conf), "-qc", "basejail")
        assert check(JAIL, "-f", str(conf), "-qr", jid_of("basejail")).stdout == "STOP\n"
    finally:
        remove_all("basejail")
    assert sorted(os.listdir(tmp_path)) == ["jail.conf"]  # nothing made in the jail's root
    assert not new_leaks()


def test_jid_name_set(tmp_path):
    """Both jid and name in a config: a numbered block with name=, ${name} in a numbered
    block expanding to the JID, jid= in a named block."""
    conf = tmp_path / "jail.conf"
    jid = unused_jid()
    try:
        conf.write_text(f"{jid} {{ name = basejail; persist; }}\n")
        assert re.search(f"{jid}: created", check(JAIL, "-f", str(conf), "-c", str(jid)).stdout)
        assert "basejail" in check(JLS, "-j", str(jid), "name").stdout
        assert re.search(f"{jid}: removed", check(JAIL, "-f", str(conf), "-r", str(jid)).stdout)

        conf.write_text(f'{jid} {{ host.hostname = "${{name}}"; persist; }}\n')
        assert re.search(f"{jid}: created", check(JAIL, "-f", str(conf), "-c", str(jid)).stdout)
        assert str(jid) in check(JLS, "-j", str(jid), "host.hostname").stdout
        assert re.search(f"{jid}: removed", check(JAIL, "-f", str(conf), "-r", str(jid)).stdout)

        conf.write_text(f"basejail {{ jid = {jid}; persist; }}\n")
        assert "basejail: created" in check(JAIL, "-f", str(conf), "-c", "basejail").stdout
        assert str(jid) in check(JLS, "-j", "basejail", "jid").stdout
        assert "basejail: removed" in check(JAIL, "-f", str(conf), "-r", "basejail").stdout
    finally:
        remove_all("basejail", str(jid))
    assert not new_leaks()


def test_param_consistency(tmp_path):
    """exec.poststart of a jail without a config (nor a name), the same with vnet and a
    vnet.interface, exec.prestop of jails known by name, by a JID-like name, and a named
    JID-jail; JID in exec.poststop. Adapted: the interface (FreeBSD's `ifconfig lo create`)
    is a veth made on the host of a network of the test's own (tests/world.py)."""
    conf = tmp_path / "jail.conf"
    jid = unused_jid()
    try:
        check(JAIL, "-c", "path=/", "exec.poststart=true", "command=/usr/bin/true")
        if missing("R3:kernel") is None:
            with World() as world:
                world.sh(world.host, "ip link add lo1 type veth peer name lo1p")
                made = world.run(*world.enter(world.host), JAIL, "-c", "path=/", "vnet=new",
                                 "vnet.interface=lo1", "command=/usr/bin/true")
                assert made.returncode == 0, made.stderr

        conf.write_text("basejail {path = /; exec.prestop = 'echo STOP'; persist; }\n")
        check(JAIL, "-f", str(conf), "-c", "basejail")
        assert "STOP" in check(JAIL, "-f", str(conf), "-r", "basejail").stdout

        conf.write_text(f"{jid} {{path = /; exec.prestop = 'echo STOP'; persist; }}\n")
        check(JAIL, "-f", str(conf), "-c", str(jid))
        assert "STOP" in check(JAIL, "-f", str(conf), "-r", str(jid)).stdout

        conf.write_text(f"{jid} {{name = basejail; path = /; exec.prestop = 'echo STOP'; "
                        f"persist; }}\n")
        check(JAIL, "-f", str(conf), "-c", str(jid))
        assert "STOP" in check(JAIL, "-f", str(conf), "-r", str(jid)).stdout

        conf.write_text("basejail {path = /; exec.poststop = 'echo JID=$JID'; persist; }\n")
        check(JAIL, "-f", str(conf), "-c", "basejail")
        running = jid_of("basejail")
        assert f"JID={running}" in check(JAIL, "-f", str(conf), "-r", "basejail").stdout
    finally:
        remove_all("basejail", str(jid))
    assert not new_leaks()


def test_setaudit_is_refused():
    """N/A: setaudit(8) and allow.setaudit are FreeBSD's audit subsystem, which a Linux
    jail has no part of (the audit subsystem is the host's). The case's first half holds:
    without allow.setaudit nothing audit-related runs; allow.setaudit is refused in one
    line with that reason, exit 1, nothing created."""
    result = run(JAIL, "-c", "name=setaudit_jail", "allow.setaudit", "command=/bin/true")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("jail: allow.setaudit") and "audit" in result.stderr
    assert result.stderr.count("\n") == 1
    assert run(JLS, "-j", "setaudit_jail").returncode == 1


HOSTNAME_CONF = """test-hostname-jail {
    host.hostname = "test-hostname.example.org";
    path = "/";
    persist;
}
"""


@pytest.mark.skipif(not os.path.exists("/bin/hostname") and not os.path.exists(
    "/usr/bin/hostname"), reason="no hostname(1) on this host")
def test_hostname_in_a_jail(tmp_path):
    """usr.bin/hostname/tests' basic case: a jail's hostname, -s, and root inside setting
    it (allow.set_hostname is on by default, as FreeBSD's). N/A: `hostname -d`, which on
    Linux asks the resolver for the DNS domain (FreeBSD's prints what follows the first
    dot)."""
    conf = tmp_path / "jail.conf"
    conf.write_text(HOSTNAME_CONF)
    check(JAIL, "-f", str(conf), "-c", "test-hostname-jail")
    try:
        name = "test-hostname-jail"
        assert check(JEXEC, name, "hostname").stdout.strip() == "test-hostname.example.org"
        assert check(JEXEC, name, "hostname", "-s").stdout.strip() == "test-hostname"
        check(JEXEC, name, "hostname", "test-bsd2")
        assert check(JEXEC, name, "hostname").stdout.strip() == "test-bsd2"
        assert os.uname().nodename != "test-bsd2"  # never the host's
    finally:
        run(JAIL, "-f", str(conf), "-r", "test-hostname-jail")
    assert not new_leaks()
