"""A jail's veth, or its place on the LAN, as its supervisor asks the network helper
(`hyjail.net.netd`) for it.

Owns the supervisor's side: reaching the helper (starting it when none answers, one at a
time) and making sure it is the helper (`hyjail.net.rendezvous`: the caller's own uid, and the
pid that holds the helper's lock) before sending it anything, asking for the veth with the
jail's network namespace, and holding the connection for the jail's life: when it closes, at
the jail's end or the supervisor's death, the helper deletes the link. Also asking it to
reclaim a link that a stale jail left.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator

from hyjail.errors import SetupError
from hyjail.net import netd, rendezvous
from hyjail.net.addresses import Address

_START_WAIT = 20.0  # seconds for a starting helper to answer (it loads pyroute2)
_STARTS = 3  # helpers started by one client at most (one that dies unready is a fault)


@contextlib.contextmanager
def attached(name: str, init_pid: int, addresses: tuple[Address, ...],
             host_addresses: tuple[Address, ...]) -> Iterator[None]:
    """Give the jail whose pid 1 is init_pid a veth holding `addresses`; it goes when this
    context is left (or its process dies)."""
    helper = _connect()
    try:
        netns = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _ask(helper, {"attach": name, "addresses": [str(a) for a in addresses],
                          "host_addresses": [str(a) for a in host_addresses]}, [netns])
        finally:
            os.close(netns)
        yield
    finally:
        _let_go(helper, until_released=True)  # the helper deletes the link now


def on_lan(lan: dict, init_pid: int | None):
    """Put the jail on the LAN as its record's `lan` says (`hyjail.net.lan`; init_pid: the
    jail's pid 1, whose network namespace a child or vnet goes into); yields the helper's
    answer (the kind made, the aliases added). Undone when this context is left (or its
    process dies)."""
    return _held({"lan": lan}, init_pid)


def nat_and_ports(wanted: dict):
    """The jail's masquerading and published ports as its record's `nat` says
    (`hyjail.net.nat`); yields the helper's answer (the interfaces whose forwarding it
    turned on). Undone when this context is left (or its process dies)."""
    return _held({"nat": wanted}, None)


@contextlib.contextmanager
def _held(request: dict, init_pid: int | None) -> Iterator[dict]:
    helper = _connect()
    try:
        fds = []
        if init_pid is not None:
            fds.append(os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC))
        try:
            answer = _ask(helper, request, fds)
        finally:
            for fd in fds:
                os.close(fd)
        yield answer
    finally:
        _let_go(helper)  # the helper undoes it now


def _let_go(helper: socket.socket, wait: float = 10.0, until_released: bool = False) -> None:
    """Tell the helper the jail is done and wait (a while) until it has undone what it
    made, so that a jail that has ended leaves nothing behind it; had this process died
    instead, the helper would undo it all the same. until_released: a veth's, only until
    the helper holds its name for the deletion (which then goes on without us; a jail given
    the same JID waits for it in the helper)."""
    try:
        helper.shutdown(socket.SHUT_WR)
        helper.settimeout(wait)
        while (answer := helper.recv(64)) and not (until_released and answer == netd.RELEASED):
            pass
    except OSError:
        pass
    finally:
        helper.close()


def reclaim_lan(lan: dict) -> None:
    """Remove the aliases a jail whose supervisor is gone left on the LAN's interface."""
    with _connect() as helper:
        _ask(helper, {"reclaim_lan": lan}, [])


def reclaim_nat(wanted: dict) -> None:
    """Remove the rules (and forwarding) a jail whose supervisor is gone left."""
    with _connect() as helper:
        _ask(helper, {"reclaim_nat": wanted}, [])


def reclaim(name: str) -> None:
    """Delete the link a jail whose supervisor is gone left behind."""
    with _connect() as helper:
        _ask(helper, {"reclaim": name}, [])


def _ask(helper: socket.socket, request: dict, fds: list[int]) -> dict:
    socket.send_fds(helper, [json.dumps(request).encode()], fds)
    answer = helper.recv(65536)
    if not answer:
        raise SetupError("the network helper went away while making the jail's network")
    reply = json.loads(answer)
    if "error" in reply:
        raise SetupError(reply["error"])
    return reply


def _connect() -> socket.socket:
    """A connection to this uid's helper, started if none answers, its peer checked."""
    if rendezvous.weakened():
        return _connect_unchecked()
    path = rendezvous.address()
    deadline = time.monotonic() + _START_WAIT
    starts = 0
    while True:
        directory = rendezvous.open_directory()
        try:
            helper = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            try:
                helper.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                helper.close()
                # No helper answers: start one, unless one holds the lock (starting or
                # leaving). Only this uid can take the lock, so no one else holds a start up.
                if starts < _STARTS and rendezvous.try_lock(directory):
                    _start(directory, {netd.LOCK_FD: str(directory)})
                    starts += 1
            else:
                try:
                    rendezvous.authenticate(helper, directory)
                except BaseException:
                    helper.close()
                    raise
                return helper
        finally:
            os.close(directory)  # a lock taken above is the started helper's now
        if time.monotonic() > deadline:
            raise SetupError("the network helper (python -m hyjail.net.netd) did not start")
        time.sleep(0.005)


def _connect_unchecked() -> socket.socket:
    """The old way, kept for the escape battery ("any-netd"): whoever holds the abstract name
    answers, unchecked, and whoever holds its ".starting" name holds every start up."""
    name = netd.address()
    deadline = time.monotonic() + _START_WAIT
    started = False
    while True:
        helper = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            helper.connect(name)
            return helper
        except (ConnectionRefusedError, FileNotFoundError):
            helper.close()
        if not started:
            starting = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                starting.bind(name + b".starting")
            except OSError:
                starting.close()
            else:
                with starting:
                    _start(starting.fileno(), {netd.STARTING_FD: str(starting.fileno())})
            started = True
        if time.monotonic() > deadline:
            raise SetupError("the network helper (python -m hyjail.net.netd) did not start")
        time.sleep(0.005)


def _start(handed: int, env: dict[str, str]) -> None:
    """Start a helper, handing it descriptor `handed` (what shows it is the one to start)."""
    env = {**os.environ, **env}
    # Started twice removed, so that it is nobody's child: not the supervisor's (whose jail
    # it outlives), not in its session.
    middle = os.fork()
    if middle == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.set_inheritable(handed, True)
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.execve(sys.executable, [sys.executable, "-m", "hyjail.net.netd"], env)
        finally:
            os._exit(0)
    os.waitpid(middle, 0)
