"""One jail's life under the trace backend, read top to bottom, and the tracing supervisor
that a hybrid jail shares with it.

Owns: the order of the trace backend's host-side steps and their undoing (registry, cgroups,
the first process, the veth when the kernel holds R3), the jail side of its first process
(the plan's namespaces, chroot, READY, then the shared exec path with the traced
confinement: capabilities, no_new_privs and the filter whose RET_TRACE entries come from the
handler table), and, for both shapes, `Tracing`: the tracer, the door jexec asks to be
traced at, and the foreground loop of tracee events, forwarded signals, the terminal relay
and the exit status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

import prctl

from hyjail import enforcement, linux, phases, terminal
from hyjail.errors import EXIT_SETUP, SetupError
from hyjail.foreground import (
    caught_signals,
    make_jail_groups,
    place_in_cgroups,
    supervise,
    take_stdio,
    wait_ready,
)
from hyjail.net import host_link_name
from hyjail.ns import control, init, whom
from hyjail.ns.dilution import Confinement
from hyjail.ns.handshake import guarded, jail_stdio, wait_placed
from hyjail.plan import Plan
from hyjail.registry import Record, Registry
from hyjail.spec import JailSpec
from hyjail.trace.state import JailState
from hyjail.trace.tracer import Tracer

BACKEND = "trace"


def run(spec: JailSpec, plan: Plan, registry: Registry,
        on_ready: Callable[[Record], None] | None = None,
        stdio: Sequence[int] | None = None,
        console: Callable[[int], None] | None = None) -> int:
    spec = enforcement.fit_container(spec, plan)
    enforcement.refuse_what_the_plan_cannot_hold(spec, plan)
    namespaces = enforcement.namespaces_of(plan)
    confinement = enforcement.confinement(spec, plan)
    lan = spec.lan.request(spec.addresses, namespaces.net) if spec.lan else None
    with contextlib.ExitStack() as undo:
        pending = undo.enter_context(caught_signals((signal.SIGCHLD,)))
        record = registry.admit(
            name=spec.name, hostname=spec.hostname, path=spec.path,
            addresses=tuple(str(a) for a in spec.addresses), backend=BACKEND,
            params={**spec.record_params(), "confinement": confinement.to_params(),
                    "kernel_net": namespaces.net,
                    **({"lan": lan} if lan else {})},
            jid=spec.jid,
            link_name=host_link_name if (spec.needs_veth and namespaces.net) else lambda jid: None)
        undo.callback(registry.remove, record.jid)
        phases.mark("admitted")
        cgroup_paths, record = make_jail_groups(spec, record, registry, undo)
        phases.mark("cgroups made")
        root = spec.path
        if spec.mounts or spec.read_only:  # on a copy of the root of its own (a chroot has no
            from hyjail.ns import mounts  # mount namespace), under the registry's directory
            root = mounts.host_root_copy(registry.state_dir, record.jid)
            record = registry.update(record, params={**record.params, "host_root_copy": root})
            copy = mounts.carry_out_on_host(spec.path, root, spec.mounts, spec.read_only,
                                            "follow-symlinks" in confinement.weakened,
                                            "shared-root-copy" in confinement.weakened)
            undo.callback(mounts.undo_on_host, root, copy)  # after kill_and_reap

        tty_fds = (0, 1, 2) if console else terminal.tty_fds() if stdio is None else ()
        master = slave = None
        if tty_fds:  # the jail's terminal is a pty of its own, relayed (or its master handed
            # to `console`, an OCI runtime's --console-socket); never the host's
            master, slave = os.openpty()
            if not console:
                undo.callback(os.close, master)
        channel, jail_end = control.pair()
        undo.callback(channel.close)
        unshare = linux.CLONE_NEWNET | linux.CLONE_NEWIPC if namespaces.net else 0
        pid = os.fork()
        if pid == 0:
            channel.close()
            if stdio is not None:
                take_stdio(stdio)
            guarded(jail_end, lambda: _jail_side(spec, root, confinement, jail_end, unshare,
                                                 cgroup_paths, tty_fds, slave))
        jail_end.close()
        if slave is not None:
            os.close(slave)
        undo.callback(kill_and_reap, pid)
        phases.mark("first process forked")
        place_in_cgroups(pid, channel, cgroup_paths)
        wait_ready(channel)
        phases.mark("first process ready")

        tracing = Tracing(spec, plan, registry, record, pid, undo, persist=spec.persist)
        if spec.needs_veth and namespaces.net:
            from hyjail.net import link
            undo.enter_context(link.attached(record.host_link, pid, spec.veth_addresses,
                                             spec.veth_host_addresses))
        if lan:
            from hyjail.net import link
            made = undo.enter_context(link.on_lan(lan, None if lan["mode"] == "alias" else pid))
            tracing.update(params={**tracing.record.params, "lan": {
                **lan, "added": made["added"], "kind": made["kind"]}})
        record = tracing.update(init_pid=pid, init_start=linux.process_start_time(pid))
        if console and master is not None:  # before the process runs: read from the start
            terminal.hand_over(console, master)
        phases.mark("traced, network up")
        if on_ready:
            on_ready(record)
        phases.mark("command started")
        relay = None
        if master is not None and not console:
            relay = terminal.Relay(master, tuple(tty_fds))
            if relay.host_in is not None:
                undo.enter_context(terminal.raw_mode(relay.host_in))
        code = tracing.supervise(channel, relay, undo, pending)
        phases.mark("command ended")
        return code


class Tracing:
    """A jail's tracing supervisor, from the moment its first process is ready (before GO):
    the tracer of the plan's handlers, the jail's record (which sethostname inside renames),
    and the door jexec asks at. The trace backend's first process is the command (or the
    hold of a persistent jail); a hybrid jail's is its init, so every process the jail ever
    has is traced from its first instruction either way."""

    def __init__(self, spec: JailSpec, plan: Plan, registry: Registry, record: Record,
                 first: int, undo: contextlib.ExitStack, persist: bool = False):
        self.registry = registry
        self.record = record
        # A hybrid jail's own UTS namespace follows the name its supervisor answers with.
        uts = None
        if plan.kind == "hybrid" and enforcement.namespaces_of(plan).uts:
            uts = os.open(f"/proc/{first}/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
            undo.callback(os.close, uts)

        def renamed(which: str, name: str) -> None:
            if which == "hostname":
                self.update(hostname=name)
                if uts is not None:
                    _set_hostname_in(uts, name)

        self.jail = JailState(spec.hostname, spec.allowed, spec.addresses, on_rename=renamed,
                              domainname=spec.domainname, osrelease=spec.osrelease,
                              inherited=spec.inherit_ip)
        self.jail.unix_stand_in = enforcement.unix_stand_in(plan)
        self.jail.on_lan = spec.lan is not None
        if plan.kind == "hybrid":
            self.jail.init = first
        try:
            self.tracer = Tracer(self.jail, first, enforcement.handled(plan), persist=persist)
        except OSError as e:
            raise SetupError(f"ptrace: cannot trace the jail's first process ({e.strerror}); "
                             f"is hyjail itself being traced?") from None
        undo.callback(self.jail.kill_all)
        self.door = undo.enter_context(entry_door(registry, record.jid))

    def update(self, **changes) -> Record:
        self.record = self.registry.update(self.record, **changes)
        return self.record

    def supervise(self, channel: socket.socket, relay: terminal.Relay | None,
                  undo: contextlib.ExitStack, pending: list[int]) -> int:
        """Start the command, then judge, forward, relay and let jexec in until every
        tracee is gone; the first process's exit status."""
        tracer = self.tracer
        supervise(channel, relay, undo, pending, done=lambda: tracer.done,
                  forward=lambda signum: _forward(tracer, signum),
                  sources={tracer.wake_fd: tracer.finish_deferred,
                           self.door.fileno(): lambda: _let_in(tracer, self.door)},
                  tick=tracer.drain, timeout=1.0)
        return tracer.status


def _set_hostname_in(uts: int, name: str) -> None:
    """sethostname in the jail's UTS namespace, from a thread of ours that joins it (a
    thread may change its own UTS namespace) and ends."""
    def worker() -> None:
        with contextlib.suppress(OSError):
            linux.setns(uts, linux.CLONE_NEWUTS)
            socket.sethostname(name)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()


def kill_and_reap(pid: int) -> None:
    """Teardown: SIGKILL the first process, then reap every child and tracee until none is
    left (the tracees are killed first, by JailState.kill_all). A tracee the jail's task set
    missed would hold this wait for ever: when nothing is ready, whatever we still trace is
    killed too."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    quiet_since = time.monotonic()
    with contextlib.suppress(ChildProcessError):
        while True:
            # __WALL: every tracee, until none is left
            if os.waitpid(-1, 0x40000000 | os.WNOHANG) != (0, 0):
                quiet_since = time.monotonic()
                continue
            if time.monotonic() - quiet_since > 0.2:  # the killed are dead by now
                _kill_our_tracees()
                quiet_since = time.monotonic()
            time.sleep(0.001)


def _kill_our_tracees() -> None:
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                traced_by_us = any(line.split()[1:] == [me] for line in f
                                   if line.startswith("TracerPid:"))
            if traced_by_us:
                os.kill(int(entry), signal.SIGKILL)
        except OSError:
            continue


def _jail_side(spec: JailSpec, root_path: str, confinement: Confinement,
               channel: socket.socket, unshare: int, cgroup_paths: Sequence[str],
               tty_fds: Sequence[int], tty: int | None) -> NoReturn:
    prctl.set_pdeathsig(signal.SIGKILL)  # the supervisor dies: so do we (EXITKILL later)
    # Out of the jail's reach from the start (the command's fork inherits it until its exec):
    # non-dumpable, and holding nothing of the supervisor's (the pty master, the registry's
    # fds) but the channel and the jail's terminal. (Unless the battery weakens either.)
    if "dumpable-entry" not in confinement.weakened:
        prctl.set_dumpable(False)
    if not {"dumpable-entry", "leak-fds"} & confinement.weakened:
        from hyjail.foreground import close_all_but
        close_all_but((channel.fileno(), *(() if tty is None else (tty,))))
    # The root, resolved once and used by descriptor from here on.
    root = os.open(root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    if unshare:
        linux.unshare(unshare)
    os.fchdir(root)
    os.chroot(".")
    os.close(root)
    os.chdir("/")
    if unshare:
        from hyjail.net.loopback import bring_up_loopback
        bring_up_loopback()
    command = whom.first_command(spec, confinement) if spec.command else None
    wait_placed(channel, cgroup_paths)
    control.send_ready(channel, [])
    message, _ = control.receive(channel)  # GO comes once the supervisor traces us
    if message != control.GO:
        os._exit(EXIT_SETUP)
    if spec.persist:
        _hold(command, confinement, channel, tty, tty_fds)
    argv, env, confinement = command
    init.exec_command(argv, env, jail_stdio(tty, tty_fds), tty, channel, confinement)


def _hold(command: tuple | None, confinement: Confinement, channel: socket.socket,
          tty: int | None, tty_fds: Sequence[int]) -> NoReturn:
    """A persistent jail's first process: it starts the command (if any, as
    `whom.first_command` settled it) as its child and then holds the jail, confined like
    every other process of it, until it is stopped."""
    if command is not None and os.fork() == 0:
        argv, env, as_user = command
        init.exec_command(argv, env, jail_stdio(tty, tty_fds), tty, channel, as_user)
    os.setsid()
    os.closerange(3, 2**31 - 1)  # nothing of the supervisor's: not the channel, not the lock
    for signum in (*init.FORWARDED, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its command's exit leaves no zombie
    prctl.set_dumpable(False)  # a Python of the host's: its memory stays out of the jail's reach
    prctl.set_name("hyjail-hold")
    prctl.set_proctitle("hyjail-hold")  # its argv would show the host's paths
    confinement.apply()
    while True:
        signal.pause()


@contextlib.contextmanager
def entry_door(registry: Registry, jid: int) -> Iterator[socket.socket]:
    """The socket jexec asks the supervisor on to trace a process it is about to let into the
    jail; in the registry's directory (0700), removed with the jail."""
    path = registry.door_path(jid)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    door = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        door.bind(path)
        os.chmod(path, 0o600)
        door.listen(8)
        yield door
    finally:
        door.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _let_in(tracer: Tracer, door: socket.socket) -> None:
    """One request, `TRACE <pid>`: traced when the asker is root (or this supervisor's own
    user) and the pid is the asker's own child, not yet in the jail."""
    connection, _ = door.accept()
    with connection:
        try:
            pid = int(connection.recv(64).decode().removeprefix("TRACE "))
            peer_pid, peer_uid, _ = struct.unpack("3i", connection.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            if peer_uid not in (0, os.geteuid()) or _parent_of(pid) != peer_pid:
                raise PermissionError("not the asker's own child")
            tracer.adopt(pid)
            connection.send(b"OK")
        except (OSError, ValueError) as e:
            with contextlib.suppress(OSError):
                connection.send(f"FAIL {e}".encode())


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[1])


def _forward(tracer: Tracer, signum: int) -> None:
    tracer.jail.signal_process(tracer.first, signum)
