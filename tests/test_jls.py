"""jls(8) drop-in: FreeBSD's layouts byte for byte (pure formatting), and the command on real
jails."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys

from hyjail import jls
from hyjail.registry import Record

from conftest import guard, jail_ip, jail_record, needs, needs_root, running, veth_args


def _record(jid, name, hostname, path, addresses):
    return Record(jid=jid, name=name, hostname=hostname, path=path, addresses=addresses,
                  backend="ns", supervisor_pid=1, supervisor_start=0, started=0.0)


ONE = _record(1, "1", "ahost", "/", ("127.0.0.1",))
TWO = _record(12, "web", "a-very-long-host-name.example.org", "/srv/jails/web",
              ("10.0.0.5", "fd00::5", "10.0.0.6"))
V6 = _record(3, "six", "six", "/srv/six", ("fd00::6",))

DEFAULT = (
    "   JID  IP Address      Hostname                      Path\n"
    "     1  127.0.0.1       ahost                         /\n"
    "    12  10.0.0.5        a-very-long-host-name.example /srv/jails/web\n"
    "     3                  six                           /srv/six\n")


def test_default_table():
    assert jls.default_table([ONE, TWO, V6]) == DEFAULT
    assert jls.default_table([]) == DEFAULT.splitlines(keepends=True)[0]


def test_names_table():
    assert jls.default_table([ONE, TWO], by_name=True) == (
        " JID             IP Address      Hostname                      Path\n"
        " 1               127.0.0.1       ahost                         /\n"
        " web             10.0.0.5        a-very-long-host-name.example /srv/jails/web\n")


def test_verbose_table():
    assert jls.verbose_table([TWO]) == (
        "   JID  Hostname                      Path\n"
        "        Name                          State\n"
        "        CPUSetID\n"
        "        IP Address(es)\n"
        "    12  a-very-long-host-name.example /srv/jails/web\n"
        "        web                           ACTIVE\n"
        "        12\n"
        "        10.0.0.5\n"
        "        10.0.0.6\n"
        "        fd00::5\n")


def test_name_value_forms():
    names = list(jls.ALL_PARAMS)
    assert jls.param_lines([ONE], names, jls.Style(nameval=True)) == (
        "nodying jid=1 name=1 path=/ nopersist host.hostname=ahost ip4.addr=127.0.0.1 "
        "ip6.addr=\n")
    assert jls.param_lines([ONE], names, jls.Style(nameval=True, quoted=True, skip=True)) == (
        'jid=1 name=1 path=/ nopersist host.hostname=ahost ip4.addr=127.0.0.1 ip6.addr=""\n')
    assert jls.param_lines([TWO], ["ip4.addr", "ip6.addr"], jls.Style(header=True)) == (
        "ip4.addr ip6.addr\n10.0.0.5,10.0.0.6 fd00::5\n")
    assert jls.param_lines([V6], ["ip4.addr", "persist"], jls.Style()) == "- false\n"


def test_quoting():
    spaced = _record(4, "q", "q", "/srv/with space", ())
    quote = _record(5, "q2", "q2", "/srv/it's", ())
    style = jls.Style(nameval=True, quoted=True)
    assert jls.param_lines([spaced], ["path"], style) == 'path="/srv/with space"\n'
    assert jls.param_lines([quote], ["path"], style) == "path=\"/srv/it's\"\n"
    assert jls.param_lines([spaced], ["path"], jls.Style(nameval=True)) == (
        "path=/srv/with space\n")


def test_libxo_json_shape():
    data = json.loads(jls.libxo_json([ONE, TWO], None, verbose=False))
    assert data == {"__version": "2", "jail-information": {"jail": [
        {"jid": 1, "ipv4": "127.0.0.1", "hostname": "ahost", "path": "/"},
        {"jid": 12, "ipv4": "10.0.0.5", "hostname": TWO.hostname, "path": "/srv/jails/web"}]}}
    named = json.loads(jls.libxo_json([TWO], ["name", "ip4.addr"], verbose=False))
    assert named["jail-information"]["jail"] == [
        {"name": "web", "ip4.addr": ["10.0.0.5", "10.0.0.6"]}]


JLS = os.path.join(os.path.dirname(sys.executable), "jls")


def _jls(*args):
    return subprocess.run([JLS, *args], capture_output=True, text=True, timeout=30)


@needs_root
@needs("backend:auto")
def test_jls_on_running_jails(busybox_root):
    ip = jail_ip()
    with running("run", "--name", "web", *veth_args(ip), busybox_root, "www", ip,
                 "/bin/sh", "-c", guard("www") + "echo up; sleep 30") as jail:
        assert jail.stdout.readline() == "up\n"
        jid = jail_record(ip)["jid"]
        table = _jls().stdout
        assert f"{jid:6d}  {ip:<15} {'www':<29} {busybox_root}\n" in table
        assert table.startswith("   JID  IP Address      Hostname                      Path\n")
        one = _jls("-j", "web", "-n", "name", "host.hostname", "ip4.addr")
        assert one.stdout == f"name=web host.hostname=www ip4.addr={ip}\n"
        assert _jls("-j", str(jid), "-q", "path").stdout == f"{busybox_root}\n"
        data = json.loads(_jls("--libxo", "json", "-j", "web").stdout)
        assert data["jail-information"]["jail"] == [
            {"jid": jid, "ipv4": ip, "hostname": "www", "path": busybox_root}]
    missing = _jls("-j", "nosuch")
    assert (missing.returncode, missing.stderr) == (1, 'jls: jail "nosuch" not found\n')
    assert _jls("nosuchparam").returncode == 1


@needs_root
@needs("backend:auto")
def test_twenty_concurrent_jails_get_distinct_jids(busybox_root):
    with contextlib.ExitStack() as stack:
        jails = [stack.enter_context(running("run", "--name", f"c{i}", busybox_root, f"c{i}",
                                             "127.0.0.1", "/bin/sh", "-c", "echo up; sleep 60"))
                 for i in range(20)]
        # While they start, every jls read must be whole: no half-written record, ever.
        started = 0
        while started < 20:
            listing = _jls("-n", "jid", "name")
            assert listing.returncode == 0, listing.stderr
            for line in listing.stdout.splitlines():
                assert re.fullmatch(r"jid=\d+ name=c\d+", line), line
            started = len(listing.stdout.splitlines())
        for jail in jails:
            assert jail.stdout.readline() == "up\n"
        pairs = [line.split() for line in _jls("-n", "jid", "name").stdout.splitlines()]
        jids = sorted(int(jid.split("=")[1]) for jid, _ in pairs)
        assert jids == list(range(1, 21))
        assert sorted(name.split("=")[1] for _, name in pairs) == sorted(
            f"c{i}" for i in range(20))
    assert _jls().stdout == DEFAULT.splitlines(keepends=True)[0]
    assert os.listdir("/run/hyjail/jails") == []
