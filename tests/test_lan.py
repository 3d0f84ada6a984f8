"""Jails on the LAN (issue 17), in a network of the test's own (tests/world.py: namespaces
that play the host, a LAN machine and a server beyond): FreeBSD's `interface=` as a macvlan
(or ipvlan) child in the jail's own network namespace (ns) or as aliases of the interface
(trace, FreeBSD's way), and `vnet` with `vnet.interface` (the interface moved in and back).
Nothing of the real host's network is touched; every namespace goes with its test."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import backends, needs_jails
from world import LAN_MACHINE, World

pytestmark = needs_jails
HTTPD = "mkdir -p /tmp/www; echo {text} > /tmp/www/index.html; exec httpd -f -p 80 -h /tmp/www"
BIN = os.path.dirname(sys.executable)


@pytest.fixture
def world():
    with World() as made:
        yield made


def _served(world: World, address: str, text: str, timeout: float = 20) -> bool:
    """Whether the LAN machine gets `text` from the jail's web server at address."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if world.fetch(world.lan, f"http://{address}/index.html", 3) == f"{text}\n":
            return True
        time.sleep(0.2)
    return False


def _listed(world: World, name: str) -> dict:
    return next(j for j in json.loads(world.hyjail("ls", "--json").stdout) if j["name"] == name)


@pytest.mark.parametrize("backend", backends("ns", "trace"))
def test_a_lan_machine_reaches_the_jail_at_its_own_address(world, busybox_root, backend):
    """ns: a macvlan child in the jail's namespace; trace: an alias of the interface. The
    server sees the LAN client's own address; the jail's address is gone at its end."""
    jail = world.popen(world.host, *world.hyjail_argv(
        "run", "--name", "lanj", "--backend", backend, "--interface", "uplink", busybox_root,
        "lanj", "10.77.100.5/24", "/bin/sh", "-c",
        HTTPD.format(text=backend) + " -vv"))
    try:
        assert _served(world, "10.77.100.5", backend), jail.stderr.read() if jail.poll() else ""
        lan = _listed(world, "lanj")["params"]["lan"]
        assert lan["mode"] == ("child" if backend == "ns" else "alias")
        assert lan["kind"] in (("macvlan", "ipvlan") if backend == "ns" else ("alias",))
        on_uplink = world.sh(world.host, "ip -o -4 addr show uplink").stdout
        assert ("10.77.100.5/24" in on_uplink) == (backend == "trace")  # FreeBSD's alias
    finally:
        jail.terminate()
        _, err = jail.communicate(timeout=30)
    # the server saw the LAN client's own address (as ::ffff:A.B.C.D on a dual-stack socket)
    assert re.search(rf"(^|\[::ffff:){re.escape(LAN_MACHINE)}\]?:\d+: url:/index.html", err,
                     re.M), err
    assert "10.77.100.5" not in world.sh(world.host, "ip -o addr").stdout
    assert world.hyjail("ls", "--json").stdout.strip() == "[]"


def test_the_lan_prefix_comes_from_the_interface_and_a_gateway_routes(world, busybox_root):
    shown = world.hyjail("run", "--interface", "uplink", "--gateway", "10.77.100.1",
                         busybox_root, "lanj", "10.77.100.6", "/bin/sh", "-c",
                         "ip -o -4 addr show eth0; ip route")
    assert shown.returncode == 0, shown.stderr
    assert "10.77.100.6/24" in shown.stdout  # the uplink's own network's prefix
    assert "default via 10.77.100.1 dev eth0" in shown.stdout


@pytest.mark.parametrize("args,says", [
    (["--interface", "nosuch0"], "interface=nosuch0: no such interface on this host"),
    (["--interface", "lo"], "interface=lo: the loopback is no LAN"),
    (["--interface", "uplink", "--allow", "raw_sockets"], "allow.raw_sockets with interface"),
    (["--gateway", "10.77.100.1"], "--gateway 10.77.100.1: only for a jail on the LAN"),
])
def test_refusals_are_one_line_and_leave_nothing(world, busybox_root, args, says):
    done = world.hyjail("run", *args, busybox_root, "lanj", "10.77.100.7", "/bin/true")
    assert done.returncode == 125 and done.stderr.count("\n") == 1, done.stderr
    assert says in done.stderr, done.stderr
    assert "10.77.100.7" not in world.sh(world.host, "ip -o addr").stdout


def test_an_address_of_the_host_is_refused(world, busybox_root):
    done = world.hyjail("run", "--interface", "uplink", busybox_root, "lanj", "10.77.100.1",
                        "/bin/true")
    assert done.returncode == 125 and "an address of this host already" in done.stderr


def test_jail_conf_interface_forms_and_vnet(world, busybox_root, tmp_path):
    """jail.conf as FreeBSD writes it: `interface` with ip4.addr, `uplink|ADDR/MASK`, and a
    vnet jail given a whole interface (a veth the world makes), moved back at its end."""
    world.sh(world.host, "ip link add vn0 type veth peer name vn1; ip link set vn1 up")
    conf = tmp_path / "jail.conf"
    conf.write_text(f"""
path = "{busybox_root}";
persist;
a {{ interface = uplink; ip4.addr = 10.77.100.8; }}
b {{ ip4.addr = "uplink|10.77.100.9/255.255.255.0"; }}
c {{ vnet; vnet.interface = vn0; ip4.addr = 10.77.150.2/24; }}
""")
    jail = [*world.enter(world.host), os.path.join(BIN, "jail"), "-f", str(conf)]
    made = world.run(*jail, "-c")
    try:
        assert made.returncode == 0, made.stderr
        for name, expected in (("a", "10.77.100.8/24"), ("b", "10.77.100.9/24"),
                               ("c", "10.77.150.2/24")):
            inside = world.hyjail("exec", name, "/bin/sh", "-c", "ip -o -4 addr").stdout
            assert expected in inside, (name, inside)
        assert "vn0" not in world.sh(world.host, "ip -o link").stdout  # the jail's now
        assert "vn0" in world.hyjail("exec", "c", "/bin/sh", "-c", "ip -o link").stdout
    finally:
        removed = world.run(*jail, "-r", "a", "b", "c")
    assert removed.returncode == 0, removed.stderr
    links = world.sh(world.host, "ip -o link; ip -o addr").stdout
    assert "vn0" in links and "10.77.150.2" not in links  # back, without the jail's address


@pytest.mark.parametrize("backend", backends("trace"))
def test_gc_takes_the_aliases_a_killed_supervisor_and_helper_left(world, busybox_root, backend):
    """FreeBSD's way leaves the host holding the jail's address if nothing takes it away:
    with the supervisor and the network helper both SIGKILLed, `hyjail gc` does."""
    started = world.hyjail("run", "--persist", "--name", "aliasj", "--backend", backend,
                           "--interface", "uplink", busybox_root, "aliasj", "10.77.100.11")
    assert started.returncode == 0, started.stderr
    supervisor = _listed(world, "aliasj")["supervisor_pid"]
    assert "10.77.100.11/24" in world.sh(world.host, "ip -o addr show uplink").stdout
    for pid in _helpers(world):
        os.kill(pid, signal.SIGKILL)  # the helper: nobody undoes the alias now
    os.kill(supervisor, signal.SIGKILL)
    time.sleep(0.5)
    assert "10.77.100.11" in world.sh(world.host, "ip -o addr show uplink").stdout
    assert world.hyjail("gc").returncode == 0
    assert "10.77.100.11" not in world.sh(world.host, "ip -o addr show uplink").stdout
    assert world.hyjail("ls", "--json").stdout.strip() == "[]"


def _helpers(world: World) -> list[int]:
    """The network helpers running on the world's host."""
    pids = subprocess.run(["ip", "netns", "pids", world.host], capture_output=True,
                          text=True).stdout.split()
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "hyjail-netd":
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_nat_reaches_beyond_the_host_and_publish_lets_the_lan_in(world, busybox_root):
    """--nat wan: the jail fetches from a server beyond the host (which sees the host's
    address); --publish 8080:80: the LAN reaches the jail's server at the host's address
    (the server sees the LAN client). Forwarding is on only where hyjail needed it, a guard
    keeps the uplink from forwarding anything else, and all of it goes with the jail."""
    from world import INTERNET, LAN_HOST, WAN_HOST
    server = world.popen(world.inet, "busybox", "httpd", "-f", "-vv", "-p", "80", "-h", "/etc")
    jail = world.popen(world.host, *world.hyjail_argv(
        "run", "--name", "natj", "--nat", "wan", "--publish", "8080:80", busybox_root, "natj",
        "10.77.1.40", "/bin/sh", "-c",
        f"timeout 10 wget -q -O /tmp/got http://{INTERNET}/hostname && echo fetched; "
        + HTTPD.format(text="published") + " -vv"))
    try:
        assert _served(world, f"{LAN_HOST}:8080", "published")
        assert jail.stdout.readline() == "fetched\n"
        assert world.sh(world.host, "cat /proc/sys/net/ipv4/conf/wan/forwarding").stdout == "1\n"
        rules = world.sh(world.host, "nft list table inet hyjail").stdout
        assert "masquerade" in rules and "dnat ip to 10.77.1.40:80" in rules
        assert 'iifname "wan" oifname != "hj*" ct state new drop' in rules  # the guard
    finally:
        jail.terminate()
        _, jail_err = jail.communicate(timeout=30)
        server.terminate()
        _, server_err = server.communicate(timeout=10)
    assert f"{WAN_HOST}]:" in server_err  # masqueraded: the server saw the host's address
    assert re.search(rf"(^|\[::ffff:){re.escape(LAN_MACHINE)}\]?:\d+: url:/index.html",
                     jail_err, re.M), jail_err
    assert world.sh(world.host, "nft list tables").stdout == ""  # the table went too
    for interface in ("wan", "uplink"):
        assert world.sh(world.host, f"cat /proc/sys/net/ipv4/conf/{interface}/forwarding"
                        ).stdout == "0\n"


def test_gc_takes_the_rules_and_forwarding_a_killed_jail_left(world, busybox_root):
    started = world.hyjail("run", "--persist", "--name", "natk", "--nat", "wan", "--publish",
                           "8081:80", busybox_root, "natk", "10.77.1.41")
    assert started.returncode == 0, started.stderr
    supervisor = _listed(world, "natk")["supervisor_pid"]
    for pid in _helpers(world):
        os.kill(pid, signal.SIGKILL)  # nobody undoes the rules now
    os.kill(supervisor, signal.SIGKILL)
    time.sleep(0.5)
    assert "hyjail" in world.sh(world.host, "nft list tables").stdout
    assert world.hyjail("gc").returncode == 0
    assert world.sh(world.host, "nft list tables").stdout == ""
    for interface in ("wan", "uplink"):
        assert world.sh(world.host, f"cat /proc/sys/net/ipv4/conf/{interface}/forwarding"
                        ).stdout == "0\n"


@pytest.mark.parametrize("backend", backends("ns", "trace"))
def test_a_jail_on_the_lan_has_its_address_only(world, probe_root, backend):
    """It binds no other address, and reaches the host's own services on the host's other
    addresses no more than a LAN machine could (a macvlan never reaches its parent; the
    tracer refuses the host's own addresses), while the LAN machine's are in reach."""
    host_service = world.popen(world.host, "busybox", "httpd", "-f", "-p",
                               "10.77.100.1:8090", "-h", "/etc")
    lan_service = world.popen(world.lan, "busybox", "httpd", "-f", "-p", "8090", "-h", "/etc")
    try:
        time.sleep(0.3)
        done = world.hyjail("run", "--backend", backend, "--interface", "uplink", probe_root,
                            "lanp", "10.77.100.12", "/bin/hjprobe", "lanp", "64",
                            "bind:10.77.100.99", "bind:10.77.100.12",
                            "connect:10.77.100.1:8090", f"connect:{LAN_MACHINE}:8090",
                            timeout=120)
        assert done.returncode == 0, done.stderr
        got = dict(line.split("=", 1) for line in done.stdout.splitlines())
    finally:
        for server in (host_service, lan_service):
            server.kill()
            server.wait()
    assert got["bind:10.77.100.99"] == "EADDRNOTAVAIL"
    assert got["bind:10.77.100.12"] == "10.77.100.12"
    assert got["connect:10.77.100.1:8090"] in ("ECONNREFUSED", "ETIMEDOUT", "EHOSTUNREACH")
    assert got[f"connect:{LAN_MACHINE}:8090"] == "10.77.100.12"  # its own address, seen


def test_an_address_held_by_another_jail_is_refused(world, busybox_root):
    first = world.hyjail("run", "--persist", "--name", "one", "--interface", "uplink",
                         busybox_root, "one", "10.77.100.20")
    assert first.returncode == 0, first.stderr
    try:
        second = world.hyjail("run", "--backend", "trace", "--interface", "uplink",
                              busybox_root, "two", "10.77.100.20", "/bin/true")
        assert second.returncode == 125 and second.stderr.count("\n") == 1, second.stderr
        assert "10.77.100.20: already held by running jail one" in second.stderr
    finally:
        world.hyjail("stop", "one")
    assert "10.77.100.20" not in world.sh(world.host, "ip -o addr").stdout


def test_a_restarted_jail_is_the_same_machine_to_the_lan(world, busybox_root):
    """Its MAC comes from its address: the LAN's neighbour cache still holds after a
    restart (a new random MAC would leave the jail unreachable until the entry expires)."""
    for turn in range(2):
        jail = world.popen(world.host, *world.hyjail_argv(
            "run", "--interface", "uplink", busybox_root, "mac", "10.77.100.30", "/bin/sh",
            "-c", HTTPD.format(text=f"turn{turn}")))
        try:
            assert _served(world, "10.77.100.30", f"turn{turn}", timeout=5)
        finally:
            jail.terminate()
            jail.communicate(timeout=30)
    assert "02:68:0a:4d:64:1e" in world.sh(world.lan, "ip neigh show 10.77.100.30").stdout


def test_an_ipv6_jail_on_the_lan(world, busybox_root):
    jail = world.popen(world.host, *world.hyjail_argv(
        "run", "--interface", "uplink", busybox_root, "six", "fd77:100::5/64", "/bin/sh", "-c",
        HTTPD.format(text="six")))
    try:
        assert _served(world, "[fd77:100::5]", "six")
    finally:
        jail.terminate()
        jail.communicate(timeout=30)


def test_a_vnet_interface_comes_back_after_its_supervisor_is_killed(world, busybox_root):
    world.sh(world.host, "ip link add vk0 type veth peer name vk1")
    started = world.run(
        *world.enter(world.host), os.path.join(BIN, "jail"), "-c", "name=vk",
        f"path={busybox_root}", "vnet", "vnet.interface=vk0", "ip4.addr=10.77.150.3/24",
        "persist")
    assert started.returncode == 0, started.stderr
    assert "vk0" not in world.sh(world.host, "ip -o link").stdout
    os.kill(_listed(world, "vk")["supervisor_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "vk0" not in world.sh(world.host, "ip -o link").stdout:
        assert time.monotonic() < deadline, "vk0 did not come back"
        time.sleep(0.1)
    assert world.hyjail("gc").returncode == 0
    assert "10.77.150.3" not in world.sh(world.host, "ip -o addr").stdout
    assert world.hyjail("ls", "--json").stdout.strip() == "[]"
