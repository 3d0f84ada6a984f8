"""The network helper cannot be impersonated (issue 13, finding 4): another host user who takes
its rendezvous first never receives root's request or the jail's network namespace, and
cannot hold a veth jail's start back. The impostor is a forked child of the test as uid 65534;
the jail's traffic stays on its own veth (SPEC section 4)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from hyjail.net import netd, rendezvous

from conftest import HOST_IP, fresh_ip, hyjail, needs, needs_jails, needs_probe_py, probe, running

# Veth jails over the host's tree, tests/probe.py binding their address.
pytestmark = [*needs_jails, needs("R3:kernel"), needs_probe_py]

NOBODY = 65534
WEAKEN = {"HYJAIL_UNSAFE_WEAKEN": "any-netd"}


def _listeners(name: str | bytes) -> list[int]:
    """The pids holding a unix socket bound at name (a path, or an abstract name)."""
    shown = ("@" + name[1:].decode()) if isinstance(name, bytes) else name
    with open("/proc/net/unix") as f:
        inodes = {fields[6] for fields in map(str.split, list(f)[1:])
                  if len(fields) == 8 and fields[7] == shown}
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            targets = {os.readlink(f"/proc/{pid}/fd/{fd}")
                       for fd in os.listdir(f"/proc/{pid}/fd")}
            if targets & {f"socket:[{inode}]" for inode in inodes}:
                pids.append(int(pid))
    return pids


def _end_helpers(*names: str | bytes) -> None:
    """End the network helpers listening at names (so a start must start one, and none that a
    test started runs on after it)."""
    for name in names:
        for pid in _listeners(name):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "hyjail-netd":
                    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(_listeners(name) for name in names) and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def names(monkeypatch) -> Iterator[dict]:
    """Root's rendezvous (the socket's path and directory) and the old computable abstract
    name with its ".starting" name; no helper listens at any of them before or after."""
    with monkeypatch.context() as weakened:
        weakened.setenv("HYJAIL_UNSAFE_WEAKEN", "any-netd")
        abstract = netd.address()
    assert isinstance(abstract, bytes)
    os.close(rendezvous.open_directory())  # made, as the first client would make it
    found = {"path": netd.address(), "directory": rendezvous.directory(),
             "abstract": abstract, "starting": abstract + b".starting"}
    _end_helpers(found["path"], found["abstract"])
    yield found
    _end_helpers(found["path"], found["abstract"])


def _take(names: dict, report: int) -> None:
    """The impostor, as uid 65534: take what it can of the rendezvous, say what, then answer
    every request as a helper would, reporting each (and how many descriptors came with it)."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    took, listeners = {}, []
    for what in ("path", "abstract", "starting"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.bind(names[what])
            sock.listen(16)
            listeners.append(sock)
            took[what] = "bound"
        except OSError as e:
            took[what] = errno.errorcode[e.errno]
            sock.close()
    try:
        os.close(os.open(names["directory"], os.O_RDONLY | os.O_DIRECTORY))
        took["directory"] = "opened"
    except OSError as e:
        took["directory"] = errno.errorcode[e.errno]
    os.write(report, (json.dumps(took) + "\n").encode())
    selector = selectors.DefaultSelector()
    for sock in listeners:
        selector.register(sock, selectors.EVENT_READ)
    held = []  # the connections, kept open as the helper keeps them for the jail's life
    while True:
        for key, _ in selector.select():
            connection, _ = key.fileobj.accept()
            held.append(connection)
            message, fds, _, _ = socket.recv_fds(connection, 65536, 4)
            for fd in fds:
                os.close(fd)
            got = {"request": json.loads(message or b"null"), "fds": len(fds)}
            os.write(report, (json.dumps(got) + "\n").encode())
            connection.send(b'{"ok": true}')  # "made": the jail runs without its address


@contextlib.contextmanager
def impostor(names: dict) -> Iterator[dict]:
    """A fake helper run by another user; yields {"took": what it took, "got": [requests]},
    the requests filled in when the block ends (the fake killed, its report read whole)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            _take(names, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    seen: dict = {"got": []}
    try:
        with os.fdopen(read_end, "rb") as report:
            line = report.readline()
            assert line, "the impostor died before taking anything"
            seen["took"] = json.loads(line)
            try:
                yield seen
            finally:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                seen["got"] = [json.loads(line) for line in report]
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _start_veth_jail(hostname: str, ip: str, env: dict | None = None):
    return hyjail("run", "--host-ip", HOST_IP, "/", hostname, ip,
                  *probe(hostname, "bind", ip), env={**os.environ, **(env or {})})


def test_another_user_cannot_take_the_rendezvous_or_hold_a_start_back(names):
    ip = fresh_ip()
    with impostor(names) as seen:
        # The socket's place is root's alone; the old names anyone may bind, and do nothing.
        assert seen["took"] == {"path": "EACCES", "directory": "EACCES", "abstract": "bound",
                                "starting": "bound"}
        result = _start_veth_jail("netdreal", ip)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"bind {ip}=ok"]  # its address, from the real helper
    assert seen["got"] == []  # no request, no descriptor


def test_a_socket_not_held_by_the_helper_is_refused_before_anything_is_sent(names):
    """Even root's own process at the helper's place, if it does not hold the helper's lock,
    gets nothing: the start is refused in one line."""
    ip = fresh_ip()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(names["path"])  # what a killed helper left
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as squatter:
        squatter.bind(names["path"])
        try:
            squatter.listen(4)
            squatter.settimeout(20)
            with running("run", "--host-ip", HOST_IP, "/", "netdpid", ip,
                         *probe("netdpid", "bind", ip)) as jail:
                connection, _ = squatter.accept()  # the client does connect, and check
                with connection:
                    connection.settimeout(20)
                    message, fds, _, _ = socket.recv_fds(connection, 65536, 4)
                    for fd in fds:
                        os.close(fd)
                assert (message, fds) == (b"", [])  # it left without sending anything
                assert jail.wait(timeout=30) == 125
                stdout, stderr = jail.communicate()
        finally:
            os.unlink(names["path"])
    # (a jail over / may first be told that it cannot reach the host's name servers)
    (line,) = [line for line in stderr.splitlines() if "/etc/resolv.conf names" not in line]
    assert "not by the helper holding its lock" in line and "Traceback" not in line
    assert stdout == ""


def test_weakened_any_netd_sends_the_jails_namespace_to_whoever_answers(names):
    """HYJAIL_UNSAFE_WEAKEN=any-netd keeps the old rendezvous: the impostor gets root's
    request with the jail's network namespace, and the jail runs without its address."""
    ip = fresh_ip()
    with impostor(names) as seen:
        assert seen["took"]["abstract"] == "bound"
        result = _start_veth_jail("netdfake", ip, WEAKEN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"bind {ip}=EADDRNOTAVAIL"]
    (got,) = seen["got"]
    assert got["request"]["attach"].startswith("hj") and got["fds"] == 1


def test_a_killed_helpers_socket_is_replaced_by_the_next_helper(names):
    """A helper killed outright leaves its socket behind; nobody answers there, so the next
    start takes the lock, starts a helper, and that one replaces the socket."""
    first, second = fresh_ip(), fresh_ip()
    result = _start_veth_jail("netdkill", first)
    assert result.stdout.splitlines() == [f"bind {first}=ok"], result.stderr
    (helper,) = _listeners(names["path"])
    os.kill(helper, signal.SIGKILL)
    while _listeners(names["path"]):
        time.sleep(0.02)
    assert os.path.exists(names["path"])  # what it left
    result = _start_veth_jail("netdkill", second)
    assert result.stdout.splitlines() == [f"bind {second}=ok"], result.stderr
    assert _listeners(names["path"]) not in ([], [helper])
