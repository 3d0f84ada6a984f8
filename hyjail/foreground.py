"""A process started inside a jail and run in the foreground: the part `hyjail run` and
`jexec` share.

Owns: forking a child into a pid namespace (a new one for pid 1, the jail's for jexec) with
the host's restored for later forks, or through a helper for a rootless caller, which cannot
come back out; the READY/GO handshake on the supervisor's side, the terminal relay,
forwarding signals, and the exit status (SPEC section 2); the jail's cgroups as both
supervisors make them and move a child in.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
from collections.abc import Callable, Iterator, Sequence

import prctl

from hyjail import linux, terminal, warmup
from hyjail.errors import EXIT_SETUP, HyjailError, SetupError
from hyjail.ns import control, init

TYPE_CHECKING = False  # typing's own costs every start 2 ms; only a checker reads these
if TYPE_CHECKING:
    from typing import NoReturn


class Child:
    """A child forked into another pid namespace, seen from the host.

    Root of the host enters the pid namespace, forks, and comes back out, so that nothing
    else it forks lands there. A caller that could not come back out (a rootless one, root
    of its own user namespace only) passes through_helper: a helper process enters, forks
    the child, waits for it and exits with its status, so the caller never leaves the host's
    pid namespace at all. Either way `pid` is the child's host pid. enter_pid_namespace
    None: the child stays in the caller's pid namespace (a trace jail's, R4 by the tracer).
    """

    def __init__(self, enter_pid_namespace: Callable[[], None] | None,
                 child_main: Callable[[], None],
                 through_helper: bool = False, *, hidden: bool = False,
                 keep_fds: Sequence[int] | None = None, weakened: bool = False,
                 stdio: Sequence[int] | None = None):
        """hidden: the child is born non-dumpable (the caller is, around the fork), so that
        from its first instant in the jail's pid namespace no jailed process can open its
        /proc files or ptrace it; and, given keep_fds, it closes every descriptor but 0-2
        and those first thing. It never keeps the host's pid namespace, unless `weakened`
        (the dumpable-entry weakening, for the battery). stdio: the child's 0-2 (the
        library's stdin, stdout and stderr), in place of the caller's."""
        if hidden:
            child_main = _shedding(keep_fds, child_main)
        if stdio is not None:
            child_main = _with_stdio(stdio, child_main)
        with _undumpable(hidden):
            if through_helper:
                self._waited, self.pid, self.pidfd = _fork_through_helper(enter_pid_namespace,
                                                                          child_main)
            else:
                self.pid = self._waited = _fork_into(enter_pid_namespace, child_main,
                                                     keep_host_pidns=weakened)
                self.pidfd = os.pidfd_open(self.pid)
        self.status: int | None = None

    def signal(self, signum: int) -> None:
        if self.status is None:
            signal.pidfd_send_signal(self.pidfd, signum)

    def reap(self) -> int:
        try:
            _, wait_status = os.waitpid(self._waited, 0)
        finally:
            os.close(self.pidfd)
        self.status = init.exit_code(wait_status)
        return self.status

    def kill(self) -> None:
        """Teardown on any path: SIGKILL and reap (for pid 1, the kernel kills the rest).
        A child its tracer has reaped already (a hybrid jail's) is simply let go."""
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGKILL)
            try:
                self.reap()
            except ChildProcessError:
                self.status = -1


@contextlib.contextmanager
def _undumpable(hidden: bool) -> Iterator[None]:
    """Non-dumpable while the child is forked (it inherits that from its first instant),
    then as before."""
    if not hidden:
        yield
        return
    was = prctl.get_dumpable()
    prctl.set_dumpable(False)
    try:
        yield
    finally:
        prctl.set_dumpable(was)


def take_stdio(stdio: Sequence[int]) -> None:
    """In a forked child: stdio's three descriptors become its 0, 1 and 2."""
    for target, fd in enumerate(stdio):
        if fd == target:
            os.set_inheritable(fd, True)
        else:
            os.dup2(fd, target)


def _with_stdio(stdio: Sequence[int], child_main: Callable[[], None]) -> Callable[[], None]:
    def main() -> None:
        take_stdio(stdio)
        child_main()
    return main


def _shedding(keep_fds: Sequence[int] | None, child_main: Callable[[], None]
              ) -> Callable[[], None]:
    """child_main, preceded by closing every descriptor but 0-2 and keep_fds: whatever the
    caller held (its registry lock, a netd socket, the host's namespaces, fds it inherited)
    never sits in a process inside the jail."""
    def shed_then_run() -> None:
        if keep_fds is not None:
            close_all_but(keep_fds)
        child_main()
    return shed_then_run


def close_all_but(keep: Sequence[int]) -> None:
    """Close every descriptor but 0, 1, 2 and keep."""
    kept = sorted({0, 1, 2, *keep})
    for low, high in zip([0, *(fd + 1 for fd in kept)], [*kept, 2**31 - 1], strict=True):
        if low < high:
            os.closerange(low, high)


def _fork_into(enter_pid_namespace: Callable[[], None] | None,
               child_main: Callable[[], None], keep_host_pidns: bool = False) -> int:
    if enter_pid_namespace is None:  # the child stays in ours: no setns (a host may deny it)
        pid = os.fork()
        if pid == 0:
            child_main()  # never returns
            os._exit(125)
        return pid
    host_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        # Our next child lands in the chosen pid namespace; then restore, so that anything
        # else this process forks stays in the host's.
        enter_pid_namespace()
        try:
            pid = os.fork()
            if pid == 0:
                if not keep_host_pidns:  # the host's pid namespace never goes into the jail
                    os.close(host_pidns)
                child_main()  # never returns
                os._exit(125)
            return pid
        finally:
            linux.setns(host_pidns, linux.CLONE_NEWPID)
    finally:
        os.close(host_pidns)


def _fork_through_helper(enter_pid_namespace: Callable[[], None],
                         child_main: Callable[[], None]) -> tuple[int, int, int]:
    """(helper pid, child pid, child pidfd). The helper reports the child's pid, or why it
    could not fork it (raised here as SetupError), and waits until we hold the child's pidfd
    before it may reap it (and its pid be reused)."""
    mine, helpers = socket.socketpair()
    helper = os.fork()
    if helper == 0:
        mine.close()
        _helper_main(enter_pid_namespace, child_main, helpers)
    helpers.close()
    with mine:
        answer = mine.recv(4096).decode(errors="replace")
        if answer.isdigit():
            pidfd = os.pidfd_open(int(answer))
            mine.send(b"held")
            return helper, int(answer), pidfd
    os.waitpid(helper, 0)
    code, _, message = answer.partition(" ")
    if not code.isdigit():
        raise SetupError("the helper that forks the jail's first process died")
    raise SetupError(message, int(code))


def _helper_main(enter_pid_namespace: Callable[[], None], child_main: Callable[[], None],
                 report: socket.socket) -> NoReturn:
    code = EXIT_SETUP
    try:
        parent = os.getppid()
        prctl.set_pdeathsig(signal.SIGKILL)  # the caller dies: so do we, and so does the child
        if os.getppid() != parent:
            os._exit(code)
        for signum in init.FORWARDED:  # the caller forwards them to the child itself
            signal.signal(signum, signal.SIG_IGN)
        try:
            enter_pid_namespace()
        except HyjailError as e:
            report.send(f"{e.exit_code} {e}".encode())
            os._exit(code)
        except OSError as e:
            report.send(f"{EXIT_SETUP} jail setup: {e.strerror or e}".encode())
            os._exit(code)
        pid = os.fork()
        if pid == 0:
            for signum in init.FORWARDED:
                signal.signal(signum, signal.SIG_DFL)
            report.close()
            child_main()  # never returns
            os._exit(EXIT_SETUP)
        report.send(str(pid).encode())
        report.recv(16)  # the caller holds the child's pidfd (or is gone)
        os.closerange(0, 2**31 - 1)  # hold nothing of the caller's: not its channel, not stdio
        _, wait_status = os.waitpid(pid, 0)
        code = init.exit_code(wait_status)
    finally:
        os._exit(code)


@contextlib.contextmanager
def caught_signals(extra: tuple[int, ...] = ()) -> Iterator[list[int]]:
    """Catch the signals a jail's command gets forwarded (and `extra`), queueing their numbers
    in the list yielded, until the very end of the supervisor's teardown: a SIGTERM that
    arrives while the jail is being taken down must not kill the supervisor half way (and
    leave its record, veth or cgroups behind). Enter it first, so it is left last."""
    pending: list[int] = []
    saved = {signum: signal.signal(signum, lambda signum, _frame: pending.append(signum))
             for signum in (*init.FORWARDED, *extra)}
    try:
        yield pending
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def make_jail_groups(spec, record, registry, undo: contextlib.ExitStack) -> tuple[list[str],
                                                                                  object]:
    """The jail's cgroups (`cgroups.create`, where spec.cgroup_path says if it does), and on
    undo their end: emptied and removed, OOM kills reported, and spec.companion (an OCI
    container's stand-in) counted in them until just before. Where jexec and gc would not
    look (a delegated unit's groups, a cgroupsPath) the record says where. Returns the paths
    and the record. (Both supervisors', the ns and the trace backend's.)"""
    from hyjail import cgroups
    paths = cgroups.create(record.jid, spec.limits, spec.cgroup_path)
    undo.callback(cgroups.remove, paths)
    undo.callback(cgroups.report_oom, paths, record.name)
    if paths and spec.companion:  # out again before the groups are emptied
        undo.callback(cgroups.take_in(spec.companion, paths))
    if paths and (cgroups.delegated() or spec.cgroup_path):
        record = registry.update(record, params={**record.params, "cgroups": paths})
    return paths, record


def place_in_cgroups(pid: int, channel: socket.socket, cgroup_paths: Sequence[str]) -> None:
    """Our child pid (a jail's first process, or one entering it; unreaped, so the pid is
    its) into the jail's groups, moved from here while it sets itself up (`cgroups.place`:
    a move may wait out an RCU grace period; `warmup`, ended here, keeps it short). It waits
    for PLACED before it reports READY (pid 1 also before it makes its cgroup namespace), and
    exits on anything else. A child that failed first has its own failure reported. No
    groups (a rootless jail's): no move, no PLACED, as `ns.handshake.wait_placed` expects."""
    if not cgroup_paths:
        warmup.stop()
        return
    from hyjail import cgroups
    try:
        try:
            cgroups.place(pid, list(cgroup_paths))
        finally:
            warmup.stop()  # the move it kept warm is done (or failed)
        control.send_placed(channel)
    except OSError as e:
        with contextlib.suppress(OSError):
            channel.shutdown(socket.SHUT_WR)  # no PLACED: the child gives up
        failure = control.parse_failure(control.receive(channel)[0])
        if failure:
            raise SetupError(failure.message, failure.exit_code) from None
        raise SetupError(f"cgroup {e.filename or ''}: {e.strerror}") from None


def wait_ready(channel: socket.socket) -> tuple[list[int], dict[str, int]]:
    """The child's READY and the fds it carries, with any namespaces it handed over first;
    a reported failure raises it."""
    namespaces: dict[str, int] = {}
    while True:
        message, fds = control.receive(channel)
        handed = control.parse_namespaces(message, fds)
        if handed is None:
            break
        namespaces = handed
    failure = control.parse_failure(message)
    if failure:
        raise SetupError(failure.message, failure.exit_code)
    if message != control.READY:
        raise SetupError("the jailed process died while setting up")
    return fds, namespaces


def run_in_foreground(child: Child, channel: socket.socket, tty_fds: Sequence[int],
                      fds: list[int], undo: contextlib.ExitStack, pending: list[int]) -> int:
    """Send GO, then relay the terminal and forward signals until the child exits."""
    return _supervise(child, channel, relay_of(fds, tty_fds, undo), undo, pending)


def relay_of(fds: list[int], tty_fds: Sequence[int],
             undo: contextlib.ExitStack) -> terminal.Relay | None:
    """The terminal relay for the pty master READY carried (fds[0]), if any; the host's
    terminal in raw mode until the end."""
    if not fds:
        return None
    relay = terminal.Relay(fds[0], tuple(tty_fds))
    undo.callback(os.close, fds[0])
    if relay.host_in is not None:
        undo.enter_context(terminal.raw_mode(relay.host_in))
    return relay


def _supervise(jail: Child, channel: socket.socket, relay: terminal.Relay | None,
               undo: contextlib.ExitStack, pending: list[int]) -> int:
    """Start the command, then forward signals and relay the terminal until pid 1 exits."""
    supervise(channel, relay, undo, pending, done=lambda: jail.status is not None,
              forward=jail.signal, sources={jail.pidfd: jail.reap})
    return jail.status


def supervise(channel: socket.socket, relay: terminal.Relay | None, undo: contextlib.ExitStack,
              pending: list[int], *, done: Callable[[], bool], forward: Callable[[int], None],
              sources: dict[int, Callable[[], object]], tick: Callable[[], object] = lambda: 0,
              timeout: float | None = None) -> None:
    """Send GO, then, until done(): forward the caught signals (`pending`, from
    caught_signals), relay the terminal, call each source's callback when its fd is readable
    and tick() after every wake-up. Raises the failure the jail side reported, if any."""
    wake_read, wake_write = socket.socketpair()
    undo.callback(wake_read.close)
    undo.callback(wake_write.close)
    wake_write.setblocking(False)
    wake_read.setblocking(False)
    # The wakeup fd only wakes the loop (a full buffer loses nothing); `pending` says which.
    undo.callback(signal.set_wakeup_fd,
                  signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False))

    control.send_go(channel)

    selector = selectors.DefaultSelector()
    undo.callback(selector.close)
    for fd, callback in sources.items():
        selector.register(fd, selectors.EVENT_READ, callback)
    selector.register(wake_read, selectors.EVENT_READ, "signal")
    selector.register(channel, selectors.EVENT_READ, "control")
    if relay:
        selector.register(relay.master, selectors.EVENT_READ, "jail-output")
        if relay.host_in is not None:
            selector.register(relay.host_in, selectors.EVENT_READ, "host-input")

    def handle_caught_signals() -> None:
        while pending:
            signum = pending.pop(0)
            if signum == signal.SIGWINCH and relay:
                relay.resize()
            elif signum != signal.SIGCHLD:  # a child stopped or exited: tick()
                forward(signum)

    failure = None
    tick()
    # A signal caught before the wakeup fd was set woke nothing: take it now, not at the
    # next wake-up, which may never come (a SIGTERM right after start would be lost).
    handle_caught_signals()
    while not done():
        for key, _events in selector.select(timeout):
            match key.data:
                case "signal":
                    with contextlib.suppress(BlockingIOError):
                        while wake_read.recv(4096):
                            pass
                    handle_caught_signals()
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
                case callback:
                    callback()
        tick()
    if relay:
        relay.drain()
    if failure is None:
        with contextlib.suppress(OSError):
            failure = control.parse_failure(control.receive(channel)[0])
    if failure:
        raise HyjailError(failure.message, failure.exit_code)
