"""The supervisor: one jail's life on the host, from admission to teardown, read top to bottom.

Owns: the order of the host-side steps and their undoing (each step registers its undo on an
ExitStack, so a failure at any step undoes exactly the steps before it), forking pid 1 into a
new pid namespace, the veth, the terminal relay, signal forwarding, and the exit status.
The jail-side steps are `hyjail.ns.jail`; the kernel guarantees that pid 1, and with it every
jailed process, dies when the supervisor dies (parent-death signal, set before READY).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
from collections.abc import Sequence

from hyjail import linux, terminal
from hyjail.errors import HyjailError, SetupError
from hyjail.net import host_link_name
from hyjail.ns import control, init
from hyjail.registry import Record, Registry
from hyjail.spec import JailSpec

BACKEND = "ns"


def reclaim(record: Record) -> None:
    """Undo what a jail whose supervisor is gone left on the host."""
    if record.init_pid and linux.process_start_time(record.init_pid) == record.init_start:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.init_pid, signal.SIGKILL)
    if record.host_link and os.path.exists(f"/sys/class/net/{record.host_link}"):
        from hyjail.net import veth
        veth.delete(record.host_link)


class JailProcess:
    """The jail's pid 1 as seen from the host: forked into a new pid namespace."""

    def __init__(self, spec: JailSpec, jail_end: socket.socket, tty_fds: Sequence[int]):
        host_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            # The next child becomes pid 1 of a new pid namespace; then restore, so that
            # anything else this process forks stays in the host's.
            linux.unshare(linux.CLONE_NEWPID)
            try:
                self.pid = os.fork()
                if self.pid == 0:
                    from hyjail.ns import jail
                    jail.main(spec, jail_end, tty_fds)  # never returns
            finally:
                linux.setns(host_pidns, linux.CLONE_NEWPID)
        finally:
            os.close(host_pidns)
        self.pidfd = os.pidfd_open(self.pid)
        self.status: int | None = None

    def signal(self, signum: int) -> None:
        if self.status is None:
            signal.pidfd_send_signal(self.pidfd, signum)

    def reap(self) -> int:
        _, wait_status = os.waitpid(self.pid, 0)
        self.status = init.exit_code(wait_status)
        os.close(self.pidfd)
        return self.status

    def kill(self) -> None:
        """Teardown on any path: SIGKILL pid 1 (the kernel kills the rest) and reap it."""
        if self.status is None:
            self.signal(signal.SIGKILL)
            self.reap()


def require_root() -> None:
    if os.geteuid() != 0:
        raise SetupError(f"must run as root (effective uid {os.geteuid()})")


def run(spec: JailSpec, registry: Registry | None = None) -> int:
    """Run spec.command in a new jail, in the foreground; return its exit status (SPEC 2).

    Raises SetupError (exit 125) when the jail cannot be set up, and a HyjailError with exit
    code 126 or 127 when the command cannot be executed or found inside the jail.
    """
    require_root()
    registry = registry or Registry()
    with contextlib.ExitStack() as undo:
        record = registry.admit(
            name=spec.name, hostname=spec.hostname, path=spec.path,
            addresses=tuple(str(a) for a in spec.addresses), backend=BACKEND,
            reclaim=reclaim, link_name=host_link_name if spec.needs_veth else lambda jid: None)
        undo.callback(registry.remove, record.jid)

        tty_fds = terminal.tty_fds()
        channel, jail_end = control.pair()
        undo.callback(channel.close)
        with jail_end:
            jail = JailProcess(spec, jail_end, tty_fds)
        undo.callback(jail.kill)

        message, fds = control.receive(channel)
        failure = control.parse_failure(message)
        if failure:
            raise SetupError(failure.message, failure.exit_code)
        if message != control.READY:
            raise SetupError("the jail's pid 1 died while setting up")

        if spec.needs_veth:
            from hyjail.net import veth
            undo.enter_context(veth.attached(
                record.host_link, jail.pid, spec.veth_addresses, spec.veth_host_addresses))
        registry.update(record, init_pid=jail.pid,
                        init_start=linux.process_start_time(jail.pid))

        relay = None
        if fds:
            relay = terminal.Relay(fds[0], tty_fds)
            undo.callback(os.close, fds[0])
            if relay.host_in is not None:
                undo.enter_context(terminal.raw_mode(relay.host_in))
        return _supervise(jail, channel, relay, undo)


def _supervise(jail: JailProcess, channel: socket.socket, relay: terminal.Relay | None,
               undo: contextlib.ExitStack) -> int:
    """Start the command, then forward signals and relay the terminal until pid 1 exits."""
    wake_read, wake_write = socket.socketpair()
    undo.callback(wake_read.close)
    undo.callback(wake_write.close)
    wake_write.setblocking(False)
    wake_read.setblocking(False)
    # Python writes each caught signal's number to the wakeup fd; the handler does nothing.
    undo.callback(signal.set_wakeup_fd, signal.set_wakeup_fd(wake_write.fileno()))
    for signum in init.FORWARDED:
        undo.callback(signal.signal, signum, signal.signal(signum, lambda *_: None))

    control.send_go(channel)

    selector = selectors.DefaultSelector()
    undo.callback(selector.close)
    selector.register(jail.pidfd, selectors.EVENT_READ, "exit")
    selector.register(wake_read, selectors.EVENT_READ, "signal")
    selector.register(channel, selectors.EVENT_READ, "control")
    if relay:
        selector.register(relay.master, selectors.EVENT_READ, "jail-output")
        if relay.host_in is not None:
            selector.register(relay.host_in, selectors.EVENT_READ, "host-input")

    failure = None
    while jail.status is None:
        for key, _events in selector.select():
            match key.data:
                case "exit":
                    jail.reap()
                case "signal":
                    for signum in wake_read.recv(256):
                        if signum == signal.SIGWINCH and relay:
                            relay.resize()
                        else:
                            jail.signal(signum)
                case "control":
                    message, _ = control.receive(channel)
                    failure = failure or control.parse_failure(message)
                    if not message:
                        selector.unregister(channel)
                case "jail-output":
                    if not relay.from_jail():
                        selector.unregister(relay.master)
                case "host-input":
                    if not relay.from_host():
                        selector.unregister(relay.host_in)
                    relay.to_jail()
    if relay:
        relay.drain()
    if failure is None:
        with contextlib.suppress(OSError):
            failure = control.parse_failure(control.receive(channel)[0])
    if failure:
        raise HyjailError(failure.message, failure.exit_code)
    return jail.status
