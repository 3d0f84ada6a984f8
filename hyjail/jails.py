"""The jails running on this host, as a library: list, look up, and map processes to jails.

Owns: turning registry records into what a user asks about (a jail by JID or name, its
processes, its uptime, what its cgroups count, where its log is) by looking at /proc. A
process belongs to a jail when it lives in that jail's pid namespace (the namespace of the
jail's pid 1), which is how jail(2)'s "is this process jailed?" is answered on Linux.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence

from hyjail.errors import HyjailError
from hyjail.frozen import asdict, frozen, replace
from hyjail.linux import process_start_time
from hyjail.registry import Record, Registry

# How long a killed jail's supervisor may take to remove what the jail made.
TEARDOWN_SECONDS = 30.0


@frozen
class JailedProcess:
    pid: int  # on the host
    jail_pid: int  # inside the jail's pid namespace
    jid: int
    command: str


@frozen
class Jail:
    record: Record
    processes: tuple[JailedProcess, ...]

    @property
    def uptime(self) -> float:
        return max(0.0, time.time() - self.record.started)

    def usage(self):
        """What its cgroups count now (`hyjail.cgroups.Usage`; a user's own jails have none,
        and show nothing)."""
        from hyjail import cgroups
        if self.record.params.get("rootless") if isinstance(self.record.params, dict) else 0:
            return cgroups.Usage()
        return cgroups.usage(cgroups.of_jail(self.record))

    def to_dict(self) -> dict:
        """hyjail ls --json: the record, and every jail parameter as jls shows it (the
        parameter table's names and types)."""
        from hyjail import jls
        r = self.record
        return {"jid": r.jid, "name": r.name, "hostname": r.hostname, "path": r.path,
                "addresses": list(r.addresses), "backend": r.backend, "host_link": r.host_link,
                "supervisor_pid": r.supervisor_pid, "init_pid": r.init_pid,
                "processes": len(self.processes), "uptime": round(self.uptime, 3),
                "usage": asdict(self.usage()),
                "params": r.params, "parameters": jls.params(r)}


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _describe(pid: int, jid: int) -> JailedProcess | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read().rstrip(b"\0").replace(b"\0", b" ")
        argv = raw.decode(errors="replace").rstrip()  # set_proctitle pads with spaces
    except OSError:
        return None
    return JailedProcess(pid=pid, jail_pid=int(status["NSpid"].split()[-1]), jid=jid,
                         command=printable(argv or f"[{status.get('Name', '?')}]"))


def printable(text: str) -> str:
    """A jailed process's own words (its argv, its name) as the host may show them: control
    characters (C0, DEL, C1) become '?', as ps(1) does, so a jail cannot write escape
    sequences to the administrator's terminal."""
    return "".join("?" if ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 else c for c in text)


def _jail_pid_namespace(record: Record) -> str | None:
    held = record.params.get("namespace_fds")
    if held:  # rootless: pid 1's own /proc/N/ns is closed even to its owner
        try:
            return os.readlink(f"/proc/{record.supervisor_pid}/fd/{held['pid']}")
        except OSError:
            return None
    return record.init_pid and _pid_namespace(record.init_pid)


def _tracer(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("TracerPid:"))
    except (OSError, StopIteration):
        return None


def _has_pid_namespace(record: Record) -> bool:
    return record.params.get("pid_namespace", record.backend != "trace")


def _processes(records: list[Record]) -> dict[int, list[JailedProcess]]:
    """Each jail's processes: those in its pid namespace, or, where ptrace holds R4 (no pid
    namespace of its own), those its supervisor traces."""
    by_namespace = {}
    by_init = {r.init_pid: r.jid for r in records if r.init_pid and _has_pid_namespace(r)}
    by_tracer = {r.supervisor_pid: r.jid for r in records if not _has_pid_namespace(r)}
    for record in records:
        if not _has_pid_namespace(record):
            continue
        namespace = _jail_pid_namespace(record)
        if namespace:
            by_namespace[namespace] = record.jid
    found: dict[int, list[JailedProcess]] = {r.jid: [] for r in records}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        jid = by_namespace.get(_pid_namespace(pid), by_init.get(pid))
        if jid is None and by_tracer:
            jid = by_tracer.get(_tracer(pid))
        if jid is not None and (process := _describe(pid, jid)):
            found[jid].append(process)
    return found


def list_jails(registry: Registry | None = None) -> list[Jail]:
    records = (registry or Registry()).live()
    processes = _processes(records)
    return [Jail(r, tuple(sorted(processes[r.jid], key=lambda p: p.jail_pid))) for r in records]


def get(which: str | int, registry: Registry | None = None) -> Jail:
    """The running jail with this JID or name; HyjailError (exit 1) if there is none."""
    for jail in list_jails(registry):
        if str(jail.record.jid) == str(which) or jail.record.name == str(which):
            return jail
    raise HyjailError(f'jail "{which}" not found', 1)


def remember(record: Record, remove_hooks: dict[str, list[str]], stop_timeout: str,
             registry: Registry | None = None, extra: dict | None = None) -> Record:
    """Keep a jail's remove hooks and stop timeout in its record, for `jail -r` to run, and
    `extra` parameters (a None value removes one)."""
    registry = registry or Registry()
    record = registry.read(record.jid) or record  # as its supervisor last wrote it
    params = {**record.params, "hooks": remove_hooks, "stop.timeout": stop_timeout,
              **(extra or {})}
    return registry.update(record, params={k: v for k, v in params.items() if v is not None})


def stop(which: str | int, timeout: float | None = None, registry: Registry | None = None,
         run_hooks: bool = True, verbose: bool = False) -> None:
    """Stop a jail as `jail -r` does: exec.prestop (host), exec.stop (inside), SIGTERM to its
    processes, SIGKILL to what remains after the timeout, wait for the supervisor's teardown,
    exec.poststop (host)."""
    from hyjail.hooks import HookOptions, console

    registry = registry or Registry()
    record = get(which, registry).record
    options = replace(
        HookOptions.from_record(record.params.get("hook_options", {})), verbose=verbose)
    with console(options.consolelog, record.path):
        _stop(record, timeout, registry, run_hooks, options)


def _stop(record: Record, timeout: float | None, registry: Registry, run_hooks: bool,
          options) -> None:
    from hyjail.hooks import run_host_hooks

    hooks = record.params.get("hooks", {}) if run_hooks else {}
    if timeout is None:
        timeout = _stop_timeout(record)
    run_host_hooks(hooks.get("exec.prestop", []), "exec.prestop", record.jid, record.name,
                   record.path, options)
    for command in hooks.get("exec.stop", []):
        options.tell(record.name, command, inside=True)
        exec_in(record.jid, ["/bin/sh", "-c", command], registry=registry,
                **options.inside(timed=True))
    # Pid 1 forwards what it gets to the command; signal the others directly, once each.
    # stop.timeout=0: no SIGTERM, the jail is removed at once (FreeBSD's meaning).
    if timeout > 0:
        for process in get(record.jid, registry).processes:
            if process.pid != record.init_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
    # A jail held by its pid 1 (persist, or FreeBSD's lifetime) keeps it when all else has
    # gone: that is its turn to go.
    held = bool(record.params.get("persist") or record.params.get("lifetime"))
    if timeout <= 0 or not _wait_for_teardown(record, timeout, give_up_early=held):
        if record.init_pid and process_start_time(record.init_pid) == record.init_start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.init_pid, signal.SIGKILL)  # the kernel kills the rest
        if not _wait_for_teardown(record, TEARDOWN_SECONDS):
            raise HyjailError(f"jail {record.name} (JID {record.jid}) did not stop")
    registry.live()  # a supervisor that died meanwhile leaves a record
    for hook in ("exec.poststop", "exec.release"):
        run_host_hooks(hooks.get(hook, []), hook, record.jid, record.name, record.path,
                       options)


def _stop_timeout(record: Record) -> float:
    """stop.timeout as the record keeps it (checked when the jail was made; a record of an
    older hyjail, or one edited by hand, falls back to FreeBSD's default)."""
    try:
        return max(0.0, float(record.params.get("stop.timeout", 10)))
    except (TypeError, ValueError):
        return 10.0


def has_processes(record: Record) -> bool:
    """Whether the jail has a process besides the one that holds it (its pid 1, or a trace
    jail's first process): FreeBSD's test of whether a jail without persist lives on."""
    return any(p.pid != record.init_pid for p in _processes([record])[record.jid])


def _wait_for_teardown(record: Record, timeout: float, give_up_early: bool = False) -> bool:
    """Until the supervisor exits (it does so after removing everything of the jail); False
    at the timeout, or as soon as only pid 1 is left when `give_up_early`."""
    deadline = time.monotonic() + timeout
    while record.supervisor_alive():
        if time.monotonic() > deadline or (give_up_early and not has_processes(record)):
            return False
        time.sleep(0.01)
    return True


def log_of(which: str) -> tuple[str, Callable[[], bool]]:
    """(the log of the jail `which`, whether it still runs): a running jail's own (its record
    says where), else the default place of a jail of that name."""
    from hyjail import logs
    registry = Registry()
    try:
        record = get(which, registry).record
    except HyjailError as e:
        state = None if os.geteuid() == 0 else registry.state_dir
        path = logs.default_path(which, state)
        if not os.path.lexists(path) and not os.path.lexists(path + ".1"):
            raise HyjailError(f"{e}, nor a log of one ({path})", e.exit_code) from None
        return path, lambda: False
    path = record.params.get("log") if isinstance(record.params, dict) else None
    if not path:
        raise HyjailError(f"jail {record.name} has no log (a foreground jail's output is its "
                          f"caller's)")
    return path, lambda: any(r.jid == record.jid and r.supervisor_pid == record.supervisor_pid
                             for r in registry.live())


def exec_in(which: str | int, argv: Sequence[str], *, user: str | None = None,
            host_user: str | None = None, login: bool = False,
            environ: dict[str, str] | None = None, cwd: str | None = None,
            user_environment: bool = False, clean: bool = False,
            timeout: float | None = None, to_log: bool = False,
            stdio: Sequence[int] | None = None, registry: Registry | None = None,
            process=None, console: Callable[[int], None] | None = None) -> int:
    """Run argv inside a running jail, in the foreground; return its exit status (SPEC 2).

    user: as this user of the jail's /etc/passwd (name or uid); host_user: as this user of
    the host's, its ids and groups looked up on the host first (FreeBSD's `jexec -u`); not
    both. login: a login's clean environment, in the user's home. user_environment: a named
    user's USER, HOME, SHELL and PATH without login (FreeBSD's jexec). clean: the user's
    (root's by default) HOME, SHELL, USER, LOGNAME and PATH under environ alone (hyjail
    exec's; environ None is then empty, never the caller's). cwd: the working
    directory, as the jail resolves it (SetupError "chdir: DIR: ..." if it is none). An
    empty argv runs the user's shell (its passwd entry's, else /bin/sh) with -i, as jexec(8).
    timeout: after that many seconds the command's process group is killed (SIGKILL) and
    SetupError "...: timed out after N s" raised (exec.timeout). to_log: the command's
    output goes to the jail's log (its supervisor's pipe, `hyjail.logs`), its input is
    /dev/null: what jail(8) does under exec.consolelog, so that a daemon the command starts
    holds no file of the host's. stdio: the command's 0-2 (no terminal relay), else ours.
    process: an OCI exec's (`hyjail.container.ContainerProcess`): its ids, groups and
    capabilities exactly, environ as given. console: the command's 0-2 are a terminal of
    the jail's, whose master goes to console (an OCI --console-socket), not relayed."""
    from hyjail import accounts, cgroups, terminal, weaken
    from hyjail.errors import SetupError
    from hyjail.foreground import (
        Child,
        caught_signals,
        place_in_cgroups,
        run_in_foreground,
        wait_ready,
    )
    from hyjail.ns import control, enter
    from hyjail.ns.dilution import Confinement

    if user is not None and host_user is not None:
        raise SetupError("a user of the jail's or of the host's, not both")
    if timeout is not None and not timeout >= 0:  # also NaN
        raise SetupError(f"timeout {timeout}: not a number of seconds")
    # The host's user before the jail, as FreeBSD's jexec: looked up while this process is
    # still wholly the host's.
    host = accounts.host_user(host_user) if host_user is not None else None
    asked = accounts.Asked(user=user, host=host, login=login, clean=clean,
                           user_environment=user_environment, cwd=cwd, process=process)
    registry = registry or Registry()
    record = get(which, registry).record
    traced = record.backend in ("trace", "hybrid")  # the supervisor must trace it first
    chrooted = record.backend == "trace"
    if traced:
        from hyjail.trace import enter as trace_enter
    if not record.init_pid:
        raise HyjailError(f"jail {record.name} (JID {record.jid}) is still starting")
    env = dict(environ if environ is not None else {} if clean else os.environ)
    # The entry path's weakenings, from the jail's record or this caller's (root's) own.
    weakened = (Confinement.from_params(record.params).weakened | weaken.weakened()) & {
        "host-nss", "dumpable-entry", "follow-symlinks"}
    hidden = "dumpable-entry" not in weakened
    with contextlib.ExitStack() as undo:
        pending = undo.enter_context(caught_signals())
        try:
            namespaces = (trace_enter if chrooted else enter).open_namespaces(record)
        except (FileNotFoundError, ProcessLookupError):  # its first process has just ended
            raise HyjailError(f"jail {record.name} (JID {record.jid}) is gone", 1) from None
        for fd in namespaces.values():
            undo.callback(os.close, fd)
        # The fds name pid 1's namespaces only if pid 1 is still the process the record names.
        if process_start_time(record.init_pid) != record.init_start:
            raise HyjailError(f"jail {record.name} (JID {record.jid}) is gone", 1)
        if to_log:
            undo.enter_context(_stdio_to_log(record))
        tty_fds = (0, 1, 2) if console else terminal.tty_fds() if stdio is None else ()
        channel, jail_end = control.pair()
        undo.callback(channel.close)
        rootless = bool(record.params.get("rootless"))
        cgroup_paths = [] if rootless else cgroups.of_jail(record)
        # What the entering process keeps: its end of the channel and the jail's namespaces
        # (and root) it joins; nothing else of ours (SPEC 1, the entry path).
        keep = (jail_end.fileno(), *(fd for name, fd in namespaces.items() if name != "pid"))
        with jail_end:
            if chrooted:
                child = Child(None,  # no pid namespace: the tracer holds R4
                              lambda: trace_enter.main(record, namespaces, cgroup_paths, argv,
                                                       env, asked, jail_end, tty_fds,
                                                       weakened),
                              hidden=hidden, keep_fds=keep, weakened=not hidden,
                              stdio=stdio)
            else:
                child = Child(lambda: _enter_pid_namespace(namespaces["pid"], rootless),
                              lambda: enter.main(namespaces, record.params, cgroup_paths,
                                                 argv, env, asked, jail_end, tty_fds,
                                                 weakened),
                              through_helper=rootless, hidden=hidden, keep_fds=keep,
                              weakened=not hidden, stdio=stdio)
        undo.callback(child.kill)
        place_in_cgroups(child.pid, channel, cgroup_paths)
        fds, _ = wait_ready(channel)
        if console and fds:
            terminal.hand_over(console, fds[0])
            fds = []
        if traced:
            trace_enter.ask_to_be_traced(record, registry.door_path(record.jid), child.pid)
        if timeout is None:
            return run_in_foreground(child, channel, tty_fds, fds, undo, pending)
        if _in_foreground_until(child, channel, tty_fds, fds, undo, pending, timeout):
            return child.status
        import shlex  # it imports re: only for this line, never on every jexec
        command = shlex.join(argv) if argv else "the user's shell"
        raise SetupError(f"jail {record.name}: {command}: timed out after {timeout:g} s")


def _in_foreground_until(child, channel, tty_fds: Sequence[int], fds: list[int],
                         undo: contextlib.ExitStack, pending: list[int],
                         timeout: float) -> bool:
    """run_in_foreground with a deadline: past it, SIGKILL the command's process group (the
    entered process is its session's leader from its exec on) and the entered process
    itself (in case it had not got so far). False if it had to. Only the loop's own tick
    kills, before the child is reaped: its pid, and so its group's id, is not reused yet."""
    from hyjail.foreground import relay_of, supervise

    deadline = time.monotonic() + timeout
    killed = []

    def tick() -> None:
        if child.status is None and not killed and time.monotonic() >= deadline:
            killed.append(True)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                child.signal(signal.SIGKILL)

    supervise(channel, relay_of(fds, tty_fds, undo), undo, pending,
              done=lambda: child.status is not None, forward=child.signal,
              sources={child.pidfd: child.reap}, tick=tick,
              timeout=max(0.01, min(0.1, timeout)))
    return not killed


@contextlib.contextmanager
def _stdio_to_log(record: Record):
    """This process's 0-2 (which the entering process inherits) as /dev/null and the jail's
    log pipe, the supervisor's own output (checked to be the live supervisor's, and a pipe),
    while the entered command runs; then ours again."""
    import stat
    if process_start_time(record.supervisor_pid) != record.supervisor_start:
        raise HyjailError(f"jail {record.name} (JID {record.jid}) is gone", 1)
    pipe = os.open(f"/proc/{record.supervisor_pid}/fd/1", os.O_WRONLY | os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    try:
        if not stat.S_ISFIFO(os.fstat(pipe).st_mode):
            raise HyjailError(f"jail {record.name} has no log pipe", 1)
        _flush_stdio()
        for fd, target in ((null, 0), (pipe, 1), (pipe, 2)):
            os.dup2(fd, target)
        yield
    finally:
        _flush_stdio()
        for target, fd in enumerate(saved):
            os.dup2(fd, target)
            os.close(fd)
        os.close(pipe)
        os.close(null)


def _flush_stdio() -> None:
    import sys
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _enter_pid_namespace(pidns: int, rootless: bool) -> None:
    from hyjail import linux
    if rootless:  # first the user's own namespace, which owns the jail's pid namespace
        owner = linux.owning_userns(pidns)
        try:
            linux.setns(owner, linux.CLONE_NEWUSER)
        finally:
            os.close(owner)
    linux.setns(pidns, linux.CLONE_NEWPID)
