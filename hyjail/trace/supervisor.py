"""One jail's life under the trace backend, read top to bottom.

Owns: what the trace backend refuses (each in one line, naming the rule or option), the order
of the host-side steps and their undoing (registry, cgroups, the first process, the veth when
the kernel holds R3), the jail side of the first process (the plan's namespaces, chroot,
READY, then the shared exec path with the trace confinement: capabilities, no_new_privs and
the filter whose RET_TRACE entries come from the handler table), and the foreground loop:
tracee events, forwarded signals, the terminal relay, the exit status.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

import prctl

from hyjail import cgroups, linux, rootless, terminal
from hyjail.errors import EXIT_SETUP, SetupError
from hyjail.foreground import caught_signals, supervise, wait_ready
from hyjail.net import host_link_name
from hyjail.ns import control, init
from hyjail.ns.dilution import Confinement
from hyjail.ns.jail import guarded, jail_stdio
from hyjail.plan import Plan
from hyjail.registry import Record, Registry
from hyjail.spec import JailSpec
from hyjail.trace import handlers
from hyjail.trace.tracer import JailState, Tracer, tags

BACKEND = "trace"
_PIDFD_SIGNAL_THREAD_GROUP = 2


def refuse_what_trace_cannot_hold(spec: JailSpec, plan: Plan) -> None:
    if not rootless.host_root():
        raise SetupError("the trace backend needs root (its R1 is chroot)")
    if plan.uses("R4", "ptrace") and _proc_is_mounted(spec.path):
        raise SetupError(f"R4 (processes): {spec.path}/proc is a mounted proc that shows the "
                         f"host's processes, and the trace backend cannot replace it")
    if "mount" in spec.allowed:
        raise SetupError("allow.mount: needs the ns backend (a mount namespace of the jail's)")
    if "sysvipc" in spec.allowed and not plan.uses("R3", "kernel"):
        raise SetupError("allow.sysvipc: without an IPC namespace the jail would share the "
                         "host's System V IPC")
    if plan.uses("R3", "ptrace"):
        if "raw_sockets" in spec.allowed:
            raise SetupError("allow.raw_sockets: without a network namespace a raw socket "
                             "could send from any address of the host")
        for address in spec.addresses:
            if not _is_local(address):
                raise SetupError(f"R3 (address): {address} is not an address of this host; "
                                 f"without a network namespace the jail shares the host's "
                                 f"network, so its address must be one of the host's")
    if spec.userns_base is not None:
        raise SetupError("--userns: needs the ns backend")


def _is_local(address) -> bool:
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


def _proc_is_mounted(path: str) -> bool:
    target = os.path.join(path, "proc")
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def handled(plan: Plan) -> dict[str, handlers.Handler]:
    """The handlers of the rules the plan gives ptrace."""
    return handlers.table({rule for rule, p in plan.chosen.items() if p.kind == "ptrace"})


def confinement_params(spec: JailSpec, plan: Plan) -> dict:
    """The trace confinement as the registry keeps it, for jexec to confine an entered
    process exactly like the command."""
    held = confinement(spec, plan)
    return {"traced": held.traced, "refused": held.refused,
            "refused_arguments": held.refused_arguments,
            "landlock_scopes": held.landlock_scopes, "kernel_net": plan.uses("R3", "kernel")}


def confinement(spec: JailSpec, plan: Plan) -> Confinement:
    scopes = 0
    if plan.probe.has("landlock.scope"):  # the kernel keeps signals and abstract sockets in
        scopes = linux.LANDLOCK_SCOPE_SIGNAL | linux.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
    refused_arguments = ()
    if plan.uses("R3", "ptrace"):  # protocols and options that add addresses
        from hyjail.trace import sockets
        versions = {address.version for address in spec.addresses}
        refused_arguments = (
            # A family the jail has no address of does not exist for it (as on FreeBSD), so
            # programs fall back to the other one.
            *(("socket", 0, family, errno.EAFNOSUPPORT)
              for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6))
              if version not in versions),
            *(("socket", 2, protocol, errno.EPROTONOSUPPORT)
              for protocol in sockets.REFUSED_PROTOCOLS),
            *(("setsockopt", 1, level, errno.EPERM) for level in sockets.REFUSED_OPTION_LEVELS))
    return Confinement(spec.allowed, spec.limits.rlimits, traced=tuple(tags(handled(plan)).items()),
                       refused=tuple(handlers.REFUSED_IN_TRACE.items()), landlock_scopes=scopes,
                       refused_arguments=refused_arguments)


def run(spec: JailSpec, plan: Plan, registry: Registry,
        on_ready: Callable[[Record], None] | None = None) -> int:
    refuse_what_trace_cannot_hold(spec, plan)
    kernel_net = plan.uses("R3", "kernel")
    with contextlib.ExitStack() as undo:
        pending = undo.enter_context(caught_signals((signal.SIGCHLD,)))
        record = registry.admit(
            name=spec.name, hostname=spec.hostname, path=spec.path,
            addresses=tuple(str(a) for a in spec.addresses), backend=BACKEND,
            params={**spec.record_params(), "trace": confinement_params(spec, plan)},
            jid=spec.jid,
            link_name=host_link_name if (spec.needs_veth and kernel_net) else lambda jid: None)
        undo.callback(registry.remove, record.jid)
        cgroup_paths = cgroups.create(record.jid, spec.limits)
        undo.callback(cgroups.remove, cgroup_paths)

        tty_fds = terminal.tty_fds()
        master = slave = None
        if tty_fds:  # the jail's terminal is a pty of its own, relayed; never the host's
            master, slave = os.openpty()
            undo.callback(os.close, master)
        channel, jail_end = control.pair()
        undo.callback(channel.close)
        unshare = linux.CLONE_NEWNET | linux.CLONE_NEWIPC if kernel_net else 0
        pid = os.fork()
        if pid == 0:
            channel.close()
            guarded(jail_end, lambda: _jail_side(spec, plan, jail_end, unshare, cgroup_paths,
                                                 tty_fds, slave))
        jail_end.close()
        if slave is not None:
            os.close(slave)
        undo.callback(_kill_and_reap, pid)
        wait_ready(channel)

        current = {"record": record}  # what sethostname inside updates (jls shows it)

        def renamed(which: str, name: str) -> None:
            if which == "hostname":
                current["record"] = registry.update(current["record"], hostname=name)

        jail = JailState(spec.hostname, spec.allowed, spec.addresses, on_rename=renamed)
        try:
            tracer = Tracer(jail, pid, handled(plan), persist=spec.persist)
        except OSError as e:
            raise SetupError(f"ptrace: cannot trace the jail's first process ({e.strerror}); "
                             f"is hyjail itself being traced?") from None
        undo.callback(jail.kill_all)
        if spec.needs_veth and kernel_net:
            from hyjail.net import veth
            undo.enter_context(veth.attached(record.host_link, pid, spec.veth_addresses,
                                             spec.veth_host_addresses))
        door = undo.enter_context(entry_door(registry, record.jid))
        record = current["record"] = registry.update(record, init_pid=pid,
                                                     init_start=linux.process_start_time(pid))
        if on_ready:
            on_ready(record)
        relay = None
        if master is not None:
            relay = terminal.Relay(master, tuple(tty_fds))
            if relay.host_in is not None:
                undo.enter_context(terminal.raw_mode(relay.host_in))
        return _supervise(tracer, channel, relay, undo, pending, door)


def _kill_and_reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        while True:
            os.waitpid(-1, 0x40000000)  # __WALL: every tracee, until none is left


def _jail_side(spec: JailSpec, plan: Plan, channel: socket.socket, unshare: int,
               cgroup_paths: Sequence[str], tty_fds: Sequence[int],
               tty: int | None) -> NoReturn:
    prctl.set_pdeathsig(signal.SIGKILL)  # the supervisor dies: so do we (EXITKILL later)
    cgroups.join(list(cgroup_paths))
    if unshare:
        linux.unshare(unshare)
    os.chroot(spec.path)
    os.chdir("/")
    if unshare:
        from hyjail.net.loopback import bring_up_loopback
        bring_up_loopback()
    control.send_ready(channel, [])
    message, _ = control.receive(channel)  # GO comes once the supervisor traces us
    if message != control.GO:
        os._exit(EXIT_SETUP)
    if spec.persist:
        _hold(spec, plan, channel, tty, tty_fds)
    init.exec_command(spec.command, dict(spec.environ), jail_stdio(tty, tty_fds), tty, channel,
                      confinement(spec, plan))


def _hold(spec: JailSpec, plan: Plan, channel: socket.socket, tty: int | None,
          tty_fds: Sequence[int]) -> NoReturn:
    """A persistent jail's first process: it starts the command (if any) as its child and
    then holds the jail, confined like every other process of it, until it is stopped."""
    if spec.command and os.fork() == 0:
        init.exec_command(spec.command, dict(spec.environ), jail_stdio(tty, tty_fds), tty,
                          channel, confinement(spec, plan))
    os.setsid()
    os.closerange(3, 2**31 - 1)  # nothing of the supervisor's: not the channel, not the lock
    for signum in (*init.FORWARDED, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its command's exit leaves no zombie
    prctl.set_dumpable(False)  # a Python of the host's: its memory stays out of the jail's reach
    prctl.set_name("hyjail-hold")
    prctl.set_proctitle("hyjail-hold")  # its argv would show the host's paths
    confinement(spec, plan).apply()
    while True:
        signal.pause()


def _supervise(tracer: Tracer, channel: socket.socket, relay: terminal.Relay | None,
               undo: contextlib.ExitStack, pending: list[int], door: socket.socket) -> int:
    """Start the command, then judge, forward, relay and let jexec in until every tracee is
    gone."""
    supervise(channel, relay, undo, pending, done=lambda: tracer.done,
              forward=lambda signum: _forward(tracer, signum),
              sources={tracer.wake_fd: tracer.finish_deferred,
                       door.fileno(): lambda: _let_in(tracer, door)},
              tick=tracer.drain, timeout=1.0)
    return tracer.status


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
    pidfd = tracer.jail.pidfd(tracer.first)
    if pidfd is not None:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(pidfd, signum, None, _PIDFD_SIGNAL_THREAD_GROUP)
