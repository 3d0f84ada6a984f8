"""jail(8)'s -c, -f and -r forms on real jails: parameters, jail.conf, hooks in order with
JID/JNAME/JPATH, and bad input."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from hyjail.jail8 import USAGE
from hyjail.lifecycle import parse_command_line

from conftest import hyjail, jail_ip, needs, needs_root, new_leaks

JAIL = [sys.executable, "-c", "from hyjail.commands import jail_main; jail_main()"]


def jail(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*JAIL, *args], capture_output=True, text=True, timeout=60)


def test_command_line_parameters():
    assert parse_command_line(["path=/x", "ip4.addr=10.1.1.1,10.1.1.2", "ip4.addr+=10.1.1.3",
                               "persist", "nopersist", "command=/bin/sh", "-c", "a=b"]) == {
        "path": ["/x"], "ip4.addr": ["10.1.1.1", "10.1.1.2", "10.1.1.3"], "persist": False,
        "command": ["/bin/sh", "-c", "a=b"]}


@needs_root
@needs("backend:auto")
def test_jail_c_runs_its_command_in_the_foreground(busybox_root):
    result = jail("-c", "name=fg", f"path={busybox_root}", "host.hostname=fg.example",
                  "ip4.addr=127.0.0.1", "command=/bin/sh", "-c", "hostname; exit 4")
    assert (result.returncode, result.stdout) == (4, "fg.example\nfg: created\n"), result.stderr
    assert hyjail("ps", "-j", "fg").returncode == 1


@needs_root
@needs("backend:auto")
def test_jail_conf_with_defaults_and_hooks(busybox_root, tmp_path):
    log = tmp_path / "hooks.log"
    ips = [jail_ip(), jail_ip()]
    conf = tmp_path / "jail.conf"
    conf.write_text(f"""
        # defaults for both jails
        path = "{busybox_root}";
        host.hostname = "$name.example";  # a bare reference ends at the dot
        persist;
        exec.prestart = 'echo prestart $JNAME $JPATH >> {log}';
        exec.created = 'echo created $JID $JNAME >> {log}';
        exec.poststart = 'echo poststart $JID $JNAME >> {log}';
        exec.prestop = 'echo prestop $JID $JNAME >> {log}';
        exec.poststop = 'echo poststop $JID $JNAME >> {log}';

        alpha {{ ip4.addr = {ips[0]}; exec.start = "echo alpha > /tmp/started"; }}
        beta  {{ ip4.addr = {ips[1]}; $greeting = hello;
                 exec.start = "echo $greeting \\$HOME"; }}
    """)
    try:
        created = jail("-f", str(conf), "-c", "alpha", "beta")
        assert created.returncode == 0, created.stderr
        listing = subprocess.run([os.path.join(os.path.dirname(sys.executable), "jls"), "-n",
                                  "jid", "name", "host.hostname", "persist"],
                                 capture_output=True, text=True).stdout.splitlines()
        assert listing == ["jid=1 name=alpha host.hostname=alpha.example persist",
                           "jid=2 name=beta host.hostname=beta.example persist"]
        entered = subprocess.run([sys.executable, "-m", "hyjail", "exec", "alpha", "cat",
                                  "/tmp/started"], capture_output=True, text=True)
        assert entered.stdout == "alpha\n"
        removed = jail("-f", str(conf), "-r", "alpha", "beta")
        assert removed.returncode == 0, removed.stderr
    finally:
        jail("-r", "*")
    assert log.read_text().splitlines() == [
        f"prestart alpha {busybox_root}", "created 1 alpha", "poststart 1 alpha",
        f"prestart beta {busybox_root}", "created 2 beta", "poststart 2 beta",
        "prestop 1 alpha", "poststop 1 alpha", "prestop 2 beta", "poststop 2 beta"]


@needs_root
@needs("backend:auto")
def test_requested_jid_and_the_library(busybox_root):
    import hyjail
    record = hyjail.start(hyjail.JailSpec.create(busybox_root, "lib", "127.0.0.1", [],
                                                 persist=True, jid=7, name="lib"))
    try:
        assert record.jid == 7
        assert [j.record.jid for j in hyjail.list_jails()] == [7]
        assert hyjail.get("lib").record.hostname == "lib"
        taken = jail("-c", "jid=7", f"path={busybox_root}", "command=/bin/true")
        assert (taken.returncode, taken.stderr) == (1, 'jail: "7" already exists\n')
        bad = jail("-c", "jid=x", f"path={busybox_root}", "command=/bin/true")
        assert (bad.returncode, bad.stderr) == (1, "jail: jid=x: not a whole number\n")
    finally:
        hyjail.stop("lib")
    assert hyjail.list_jails() == []


@needs_root
@needs("backend:auto")
def test_failing_prestart_leaves_nothing(busybox_root, tmp_path):
    result = jail("-c", "name=never", f"path={busybox_root}", "persist",
                  "exec.prestart=exit 3", f"exec.created=touch {tmp_path}/created")
    assert result.returncode == 1
    assert result.stderr == "jail: exec.prestart: 'exit 3' failed with status 3\n"
    assert not (tmp_path / "created").exists()
    assert not new_leaks()


@needs_root
@needs("backend:auto")
def test_failing_start_removes_the_jail(busybox_root):
    result = jail("-c", "name=halfway", f"path={busybox_root}", "persist", "exec.start=exit 6")
    assert (result.returncode, result.stderr) == (
        1, "jail: halfway: exec.start 'exit 6' failed with status 6\n")
    assert hyjail("ps", "-j", "halfway").returncode == 1


@pytest.mark.parametrize("args,code,message", [
    # FreeBSD's jail exits 1 for its own errors (SPEC 2), naming what it refuses and why.
    (["-c", "path=/", "bogus=1"], 1, "jail: unknown parameter: bogus\n"),
    (["-c", "path=/", "allow.raw_sockets=maybe"], 1,
     "jail: allow.raw_sockets=maybe: not a boolean (true, false, 1 or 0)\n"),
    (["-c", "path=/", "allow.bogus", "command=/bin/true"], 1,
     "jail: unknown parameter: allow.bogus\n"),
    (["-c", "path=/", "allow.mount.procfs", "command=/bin/true"], 1,
     "jail: allow.mount.procfs: a new proc needs the jail's pid namespace "
     "to belong to its user namespace, which hyjail keeps the host's\n"),
    (["-c", "path=/", "memory=lots", "persist"], 1,
     "jail: --memory lots: a size such as 256M, 1G or 1048576 (bytes)\n"),
    (["-c", "path=/", "rlimit.nofile=1:99999999999", "persist"], 1,
     f"jail: --rlimit nofile=1:99999999999: above the host's hard limit "
     f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]} (a jail's limits can only be lower)\n"),
    (["-c", "host.hostname=x"], 1, "jail: a jail needs persist, exec.start or command "
     "(FreeBSD: it would have no process to live by)\n"),
    (["-c", "path=/", "stop.timeout=abc", "persist"], 1,
     "jail: stop.timeout=abc: not a whole number\n"),
    (["-c", "path=/", "command"], 1, "jail: command: needs a value (command=...)\n"),
    (["-c", "path=/", "enforce_statfs=0", "persist"], 1,
     "jail: enforce_statfs=0: only 1, 2 (1 and 2: the jail sees only its own mounts (its "
     "mount namespace or chroot); 0 would be the host's)\n"),
    (["-c", "path=/", "vnet.interface=eth9", "persist"], 1,
     "jail: vnet.interface: needs vnet\n"),
    (["-c", "path=/", "vnet", "ip4.addr=10.77.9.9", "persist"], 1,
     "jail: 10.77.9.9: a vnet jail holds its addresses on the interfaces vnet.interface gives "
     "it, and has none\n"),
    (["-c", "path=/", "interface=lo", "ip4.addr=10.77.9.9", "persist"], 1,
     "jail: interface=lo: the loopback is no LAN\n"),
    (["-c", "path=/", "dying", "persist"], 1,
     "jail: dying: read-only (jls shows it; it cannot be set)\n"),
    (["-x"], 1, "jail: illegal option -- x\n" + USAGE),
    (["-f"], 1, "jail: option requires an argument -- f\n" + USAGE),
    (["/", "h"], 1, USAGE),
])
def test_bad_parameters(args, code, message):
    if os.geteuid() != 0:
        pytest.skip("jails need root")
    result = jail(*args)
    assert (result.returncode, result.stderr) == (code, message)


@needs_root
@needs("R5:kernel", "R4:kernel")  # sys_admin in a user namespace of the jail's, read in its /proc
def test_allow_and_limit_parameters_reach_the_jail(busybox_root):
    script = "hostname other; ulimit -n; cat /proc/self/status | grep CapBnd"
    result = jail("-c", f"path={busybox_root}", "host.hostname=fixed", "allow.noset_hostname",
                  "allow.raw_sockets=1", "pids=30", "rlimit.nofile=77",
                  "command=/bin/sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "hostname" in result.stderr  # refused: allow.set_hostname is off
    # sys_admin gone (set_hostname off), net_raw there (raw_sockets on).
    assert result.stdout.split()[:3] == ["77", "CapBnd:", "00000000200424fb"]


@needs_root
def test_syntax_error_names_file_and_line(tmp_path):
    conf = tmp_path / "broken.conf"
    conf.write_text('web {\n  path = "/srv/web"\n  persist;\n}\n')
    result = jail("-f", str(conf), "-c", "web")
    assert (result.returncode, result.stderr) == (
        1, f"jail: {conf}:2: missing ';' after path\n")
    missing = jail("-f", str(conf) + ".nope", "-c", "web")
    assert missing.returncode == 1 and "No such file" in missing.stderr
