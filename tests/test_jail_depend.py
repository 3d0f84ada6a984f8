"""jail(8)'s `depend` and `ip_hostname` on real jails: dependencies created first and removed
last (exec.poststart / exec.poststop hooks log the order), FreeBSD's messages for a missing
dependency and a loop (exit 1, nothing left running), and host.hostname's addresses in jls.
The order itself, and ip_hostname's choices, are checked without jails too."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys

import pytest

from hyjail import depend, jail8

from conftest import jail_ip, needs, needs_root, new_leaks

JAIL = [sys.executable, "-c", "from hyjail.commands import jail_main; jail_main()"]
JLS = [os.path.join(os.path.dirname(sys.executable), "jls")]


def jail(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([*JAIL, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def running_names() -> list[str]:
    from hyjail.jails import list_jails
    return [j.record.name for j in list_jails()]


def remove_all() -> None:
    """What a test started goes, whatever happened in it (-R: no hooks, no configuration)."""
    jail("-R", "*")


def _conf(tmp_path, root: str, log, blocks: str):
    conf = tmp_path / "jail.conf"
    conf.write_text(f"""
        path = "{root}";
        persist;
        exec.poststart = 'echo start $JNAME >> {log}';
        exec.poststop = 'echo stop $JNAME >> {log}';
        {blocks}
    """)
    return str(conf)


def _lines(log) -> list[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    log.write_text("")
    return lines


# ---- the order, without jails -----------------------------------------------------------

_GRAPH = {"a": ["b", "c"], "b": ["c"], "c": [], "x": ["y"], "y": ["x"], "z": ["x"],
          "u": ["nosuch"], "w": ["u", "c"], "s": ["s"], "e": ["outside"]}


def _creation(*targets: str) -> depend.Plan:
    return depend.creation(targets, _GRAPH.__getitem__, _GRAPH.__contains__,
                           lambda name: name == "outside")


def _dependents(name: str) -> list[str]:
    return [other for other, deps in _GRAPH.items() if name in deps]


def test_dependencies_come_first_each_once():
    assert _creation("a").order == ["c", "b", "a"]
    assert _creation("c", "a").order == ["c", "b", "a"]
    assert _creation("e").order == ["e"] and not _creation("e").problems  # a running one


def test_a_missing_dependency_or_a_loop_fails_before_anything_is_done():
    plan = _creation("w")
    assert plan.problems == {"u": ['u: depends on undefined jail "nosuch"']}
    assert plan.order == ["w"]  # c is not made for a jail that will not be
    plan = _creation("z")
    assert plan.problems == {"x": ["x: dependency loop"], "y": ["y: dependency loop"]}
    assert plan.order == ["z"]
    assert _creation("s").problems == {"s": ["s: dependency loop"]}


def test_removal_takes_dependents_first():
    assert depend.removal(["c"], _dependents).order == ["a", "b", "w", "c"]
    assert depend.removal(["b", "a"], _dependents).order == ["a", "b"]


# ---- ip_hostname, without jails ---------------------------------------------------------

def _answers(*addresses: str):
    return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
             (a, 0, 0, 0) if ":" in a else (a, 0)) for a in addresses]


def test_ip_hostname_adds_each_address_once(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: _answers(
        "10.77.9.1", "10.77.9.2", "fd77::9", "::1", "fe80::1%eth0"))
    params = jail8._ip_hostname({"host.hostname": ["web"], "ip_hostname": True,
                                 "ip4.addr": ["10.77.9.2/24"]}, "web")
    assert params == {"host.hostname": ["web"], "ip4.addr": ["10.77.9.2/24", "10.77.9.1"],
                      "ip6.addr": ["fd77::9", "fe80::1"]}
    disabled = jail8._ip_hostname({"host.hostname": ["web"], "ip_hostname": ["1"],
                                   "ip6": ["disable"]}, "web")
    assert disabled == {"host.hostname": ["web"], "ip6": ["disable"],
                        "ip4.addr": ["10.77.9.1", "10.77.9.2"]}
    for off in ({"ip_hostname": False}, {"noip_hostname": True}, {}):
        assert jail8._ip_hostname({"host.hostname": ["web"], **off}, "web") == {
            "host.hostname": ["web"]}
    assert jail8._ip_hostname({"ip_hostname": True}, None) == {}  # nothing to resolve


def test_a_name_that_does_not_resolve_is_one_line_and_exit_1(monkeypatch, capsys):
    def unresolved(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", unresolved)
    with pytest.raises(SystemExit) as exited:
        jail8.main(["-c", "name=nowhere", "path=/nonexistent/hyjail-test", "persist",
                    "ip_hostname", "host.hostname=nowhere.invalid"])
    assert exited.value.code == 1
    assert capsys.readouterr().err == (
        "jail: nowhere: host.hostname nowhere.invalid: Name or service not known\n")


# ---- real jails -------------------------------------------------------------------------

@needs_root
@needs("backend:auto")
def test_dependencies_are_created_first_and_removed_last(busybox_root, tmp_path):
    """A depends on B and C, B on C (the file lists them A, B, C): -c A makes C, B, A; -r C
    takes A and B away first; all of them come up and go down in that order; one running
    already is left alone; -rc B removes A first and does not make it again."""
    log = tmp_path / "order.log"
    ips = [jail_ip(), jail_ip(), jail_ip()]
    conf = _conf(tmp_path, busybox_root, log, f"""
        A {{ ip4.addr = {ips[0]}; depend = B, C; }}
        B {{ ip4.addr = {ips[1]}; depend = C; }}
        C {{ ip4.addr = {ips[2]}; }}
    """)
    try:
        made = jail("-f", conf, "-c", "A")
        assert (made.returncode, made.stdout, made.stderr) == (
            0, "C: created\nB: created\nA: created\n", "")
        assert _lines(log) == ["start C", "start B", "start A"]

        removed = jail("-f", conf, "-r", "C")
        assert (removed.returncode, removed.stdout, removed.stderr) == (
            0, "A: removed\nB: removed\nC: removed\n", "")
        assert _lines(log) == ["stop A", "stop B", "stop C"]
        assert running_names() == []

        everything = jail("-f", conf, "-c")
        assert everything.returncode == 0, everything.stderr
        assert _lines(log) == ["start C", "start B", "start A"]
        again = jail("-f", conf, "-c")  # all of the file: those running are left alone
        assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
        named = jail("-f", conf, "-c", "A")
        assert (named.returncode, named.stderr) == (1, 'jail: "A" already exists\n')
        gone = jail("-f", conf, "-r", "*")
        assert (gone.returncode, gone.stdout) == (0, "A: removed\nB: removed\nC: removed\n")
        assert _lines(log) == ["stop A", "stop B", "stop C"]

        assert jail("-f", conf, "-c", "C").returncode == 0
        assert _lines(log) == ["start C"]
        on_running = jail("-f", conf, "-c", "A")
        assert (on_running.returncode, on_running.stdout) == (0, "B: created\nA: created\n")
        assert _lines(log) == ["start B", "start A"]  # C was not made again

        restarted = jail("-f", conf, "-rc", "B")
        assert (restarted.returncode, restarted.stdout) == (
            0, "A: removed\nB: removed\nB: created\n"), restarted.stderr
        assert _lines(log) == ["stop A", "stop B", "start B"]
        assert sorted(running_names()) == ["B", "C"]
        assert jail("-f", conf, "-r", "*").returncode == 0
        assert _lines(log) == ["stop B", "stop C"]
    finally:
        remove_all()
    assert not new_leaks()


@needs_root
@needs("backend:auto")
def test_a_missing_dependency_is_freebsds_message_and_nothing_runs(busybox_root, tmp_path):
    log = tmp_path / "order.log"
    conf = _conf(tmp_path, busybox_root, log, """
        C { }
        D { depend = C, nosuch; }
        E { depend = D; }
    """)
    try:
        result = jail("-f", conf, "-c", "E")
        assert (result.returncode, result.stdout, result.stderr) == (
            1, "", 'jail: D: depends on undefined jail "nosuch"\njail: E: skipped\n')
        assert running_names() == [] and _lines(log) == []
        quiet = jail("-q", "-f", conf, "-c", "E")  # -q: no "skipped", the reason still
        assert (quiet.returncode, quiet.stderr) == (
            1, 'jail: D: depends on undefined jail "nosuch"\n')
        # Parameters on the command line: the dependency must be running.
        alone = jail("-c", "name=F", f"path={busybox_root}", "persist", "depend=nosuch")
        assert (alone.returncode, alone.stdout, alone.stderr) == (
            1, "", 'jail: depends on nonexistent jail "nosuch"\n')
        assert running_names() == []
    finally:
        remove_all()
    assert not new_leaks()


@needs_root
@needs("backend:auto")
def test_a_dependency_loop_is_freebsds_message_and_the_rest_goes_on(busybox_root, tmp_path):
    log = tmp_path / "order.log"
    conf = _conf(tmp_path, busybox_root, log, """
        X { depend = Y; }
        Y { depend = X; }
        Z { }
    """)
    try:
        looped = jail("-f", conf, "-c", "X")
        assert (looped.returncode, looped.stdout, looped.stderr) == (
            1, "", "jail: X: dependency loop\njail: Y: dependency loop\n")
        assert running_names() == [] and _lines(log) == []
        everything = jail("-f", conf, "-c")  # FreeBSD's main loop: the others are made
        assert (everything.returncode, everything.stdout, everything.stderr) == (
            1, "Z: created\n", "jail: X: dependency loop\njail: Y: dependency loop\n")
        assert running_names() == ["Z"]
    finally:
        remove_all()
    assert not new_leaks()


def _localhost_ipv4() -> list[str]:
    """localhost's IPv4 addresses as this host's /etc/hosts has them (read here: asking the
    resolver for a name the file lacks could send a query out)."""
    found = []
    try:
        with open("/etc/hosts") as f:
            for line in f:
                words = line.split("#", 1)[0].split()
                if len(words) > 1 and "localhost" in words[1:]:
                    address = ipaddress.ip_address(words[0])
                    if address.version == 4 and str(address) not in found:
                        found.append(str(address))
    except (OSError, ValueError):
        return []
    return found


@needs_root
@needs("backend:auto")
def test_ip_hostname_adds_localhosts_address(busybox_root, tmp_path):
    local = _localhost_ipv4()
    if not local:
        pytest.skip("needs localhost in /etc/hosts (resolved with no DNS query)")
    ip, other = jail_ip(), jail_ip()
    conf = tmp_path / "jail.conf"
    conf.write_text(f'lh {{ path = "{busybox_root}"; persist; ip4.addr = {other}; '
                    f'host.hostname = localhost; ip_hostname; }}\n')
    try:
        made = jail("-c", "name=iph", f"path={busybox_root}", "persist", f"ip4.addr={ip}",
                    "host.hostname=localhost", "ip_hostname")
        assert made.returncode == 0, made.stderr
        shown = subprocess.run([*JLS, "-j", "iph", "-n", "ip4.addr"], capture_output=True,
                               text=True, timeout=30)
        assert shown.stdout == f"ip4.addr={','.join([ip, *local])}\n", shown
        assert jail("-r", "iph").returncode == 0
        configured = jail("-f", str(conf), "-c", "lh")  # jail.conf's bare `ip_hostname;`
        assert configured.returncode == 0, configured.stderr
        shown = subprocess.run([*JLS, "-j", "lh", "-n", "ip4.addr"], capture_output=True,
                               text=True, timeout=30)
        assert shown.stdout == f"ip4.addr={','.join([other, *local])}\n", shown
    finally:
        remove_all()
    assert not new_leaks()
