"""R3 on the ns backend: the jail's addresses on a veth, reachable from the host, and the only
addresses it can use. Traffic goes only to the jail's own address and to its veth's host end."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from conftest import (
    HOST_IP,
    HOST_IP6,
    connect_to_jail,
    fresh_ip,
    guard,
    hyjail,
    needs,
    needs_jails,
    needs_probe_py,
    probe,
    running,
)

pytestmark = [*needs_jails, needs("R3:kernel")]  # the jail's network namespace and veth

IP_FREEBIND = 15


@pytest.mark.parametrize("family", [4, 6])
def test_server_on_any_address_answers_the_host_at_the_jail_ip(busybox_root, family):
    if family == 4:
        ip, host_ip = fresh_ip(), HOST_IP
    else:
        ip, host_ip = f"fd77::{fresh_ip().split('.')[-1]}", HOST_IP6
    with running("run", "--host-ip", host_ip, busybox_root, "server", ip, "/bin/sh", "-c",
                 guard("server") + "nc -l -p 8080 -e /bin/hostname") as jail:
        with connect_to_jail(ip, 8080) as sock:
            assert sock.recv(100) == b"server\n"
        assert jail.wait(timeout=30) == 0


def test_connection_to_the_host_end_comes_from_the_jail_ip(busybox_root):
    ip = fresh_ip()
    with socket.socket() as listener:
        # The host end's address exists only once the jail is up: bind it ahead of time.
        listener.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        listener.bind((HOST_IP, 0))
        listener.listen(1)
        listener.settimeout(30)
        port = listener.getsockname()[1]
        with running("run", "--host-ip", HOST_IP, busybox_root, "client", ip, "/bin/sh", "-c",
                     guard("client") + f"for i in $(seq 200); do echo hello | nc {HOST_IP} "
                     f"{port} && exit 0; sleep 0.05; done; exit 1") as jail:
            conn, (peer, _port) = listener.accept()
            with conn:
                assert conn.recv(100) == b"hello\n"
            assert peer == ip
            assert jail.wait(timeout=30) == 0


@needs_probe_py
def test_only_the_jails_addresses_can_be_bound():
    ip, other = fresh_ip(), fresh_ip()
    result = hyjail("run", "--host-ip", HOST_IP, "/", "binder", ip,
                    *probe("binder", "bind", ip, "0.0.0.0", other, HOST_IP, "127.0.0.1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"bind {ip}=ok", "bind 0.0.0.0=ok", f"bind {other}=EADDRNOTAVAIL",
        f"bind {HOST_IP}=EADDRNOTAVAIL", "bind 127.0.0.1=ok"]


@needs("R1:kernel")  # a jail over the host's tree
def test_host_gets_only_a_route_to_the_jail_on_its_own_veth():
    ip = fresh_ip()
    forwarding_before = _read("/proc/sys/net/ipv4/ip_forward")
    default_before = _routes("default")
    with running("run", "--host-ip", HOST_IP, "/", "routes", ip, "/bin/sh", "-c",
                 guard("routes", marker=False) + "echo up; sleep 30") as jail:
        assert jail.stdout.readline() == "up\n"
        (veth,) = [name for name in os.listdir("/sys/class/net") if name.startswith("hj")]
        assert _routes("dev", veth) == [f"{ip} proto static scope link"]
        assert _routes("default") == default_before
        assert _read("/proc/sys/net/ipv4/ip_forward") == forwarding_before


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _routes(*selector: str) -> list[str]:
    out = subprocess.run(["ip", "-o", "route", "show", *selector], capture_output=True,
                         text=True, check=True).stdout
    return [line.strip() for line in out.splitlines()]


def test_the_network_helper_serves_only_a_jails_own_supervisor(busybox_root):
    """Veths are made by one warm helper (hyjail.net.netd); it makes or removes a link only
    for the live supervisor of the jail that owns it."""
    import json

    from hyjail.net import netd

    from conftest import jail_record
    ip = fresh_ip()
    with running("run", "--host-ip", HOST_IP, busybox_root, "netd", ip, "/bin/sleep", "60"):
        link = jail_record(ip)["host_link"]
        for request in ({"attach": link, "addresses": [ip], "host_addresses": [HOST_IP]},
                        {"reclaim": link}):
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as helper:
                helper.connect(netd.address())
                netns = os.open("/proc/self/ns/net", os.O_RDONLY)
                try:
                    socket.send_fds(helper, [json.dumps(request).encode()], [netns])
                finally:
                    os.close(netns)
                reply = json.loads(helper.recv(4096))
            assert "error" in reply and link in reply["error"], reply
        assert os.path.exists(f"/sys/class/net/{link}")  # still the jail's


def test_back_to_back_jails_each_get_a_link_of_their_own(busybox_root):
    """`hyjail run` returns once the network helper holds its link's name for deletion, not
    after the kernel's deletion (about 30 ms): the next jail, given the same JID and so the
    same link name, waits for that in the helper, and never has its own link deleted."""
    ip = fresh_ip()
    seen = []
    for _ in range(5):
        done = hyjail("run", "--host-ip", HOST_IP, busybox_root, "b2b", ip, "/bin/sh", "-c",
                      "sleep 0.1; cat /proc/net/dev")
        assert done.returncode == 0, done.stderr
        links = [line.split(":")[0].strip() for line in done.stdout.splitlines()[2:]]
        seen.append(sorted(link for link in links if link != "lo"))
    assert all(len(found) == 1 for found in seen), seen
