"""The OCI runtime's operations, as runc's command line names them: create, start, state,
kill, delete, run, list, ps (exec is `hyjail.oci.execute`).

Owns the container's life around its jail. `create` reads the bundle (`hyjail.oci.config`),
maps it onto a jail (`hyjail.oci.mapping`), and forks the container's stand-in, which
forks the jail's supervisor; both outlive it. The supervisor sets the jail up to the moment
before its process runs (pid 1 waits for GO, the runtime spec's "created"), then waits on
the container's start socket; `start` connects there and the supervisor lets the process
run. The stand-in (`hyjail.oci.standin`) is the process `--pid-file` names, in the jail's
namespaces: its caller's subreaper (conmon, containerd's shim) inherits it when `create`
exits and reaps it when the container ends, with the container's exit status (128+N for a
signal, as hyjail's supervisor reports it). Its state: `hyjail.oci.state`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Sequence

from hyjail import jsontext
from hyjail.errors import HyjailError, SetupError
from hyjail.oci import hooks
from hyjail.oci import state as states
from hyjail.oci.state import Container, Store

_STOP_WAIT = 10.0  # seconds delete --force waits for the jail's teardown
_ANSWER = 4096  # the supervisor's answer to start: ok, or a failing hook's line


# ---- create and start -----------------------------------------------------------------------

def create(store: Store, container_id: str, bundle: str, pid_file: str | None = None,
           console_socket: str | None = None, log: Callable[[str], None] | None = None,
           systemd_cgroup: bool = False) -> Container:
    """Set the container up, held before its process; returns once it is "created".
    systemd_cgroup: the systemd driver's cgroupsPath (`hyjail.oci.scope`) was asked for."""
    from hyjail.oci import config as configs
    from hyjail.oci import mapping, scope

    states.check_id(container_id)
    bundle = os.path.abspath(bundle)
    config = configs.load_bundle(bundle)
    spec = mapping.jail_spec(config, container_id)
    unit = scope.parse(config.linux.cgroups_path, container_id, systemd_cgroup)
    if unit is not None:
        from hyjail import cgroups
        scope.check_host(unit, all(h.version == 2 for h in cgroups.hierarchies()))
    terminal = bool(config.process and config.process.terminal)
    if terminal and console_socket is None:
        raise SetupError("process.terminal: needs --console-socket (the terminal's master "
                         "goes to the caller there)")
    container = Container(id=container_id, bundle=bundle, created=time.time(),
                          annotations=dict(config.annotations), rootfs=config.root_path,
                          hooks=hooks.to_record(config.hooks))
    store.make(container)
    try:
        pid, start = _fork_supervisor(store, container, spec, unit, config.hooks,
                                      console_socket if terminal else None,
                                      config.process.console_size if terminal else None, log)
    except BaseException:
        hooks.run_logged("poststop", config.hooks.poststop,
                         states.state_json(container, "stopped"), log)
        store.remove(container_id)
        raise
    container = store.update(container_id, pid=pid, pid_start=start)
    if pid_file:
        write_pid_file(pid_file, pid)
    return container


def write_pid_file(path: str, pid: int) -> None:
    """Atomically, as runc does: the caller may read it as soon as it exists."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def _fork_supervisor(store: Store, container: Container, spec, unit, given_hooks,
                     console_socket: str | None, console_size: tuple[int, int] | None,
                     log: Callable[[str], None] | None) -> tuple[int, int]:
    """Fork the container's stand-in (`hyjail.oci.standin`), which forks the supervisor;
    (the stand-in's pid, its start time) once the jail is held before its process, or the
    one line that stopped it. unit: the container's systemd scope, or None."""
    from hyjail.linux import process_start_time
    from hyjail.oci import standin

    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_read)
        standin.run(lambda told: _supervisor_main(store, container, spec, unit, given_hooks,
                                                  console_socket, console_size, told, log),
                    ready_write)
    os.close(ready_write)
    with os.fdopen(ready_read) as ready:
        answer = ready.readline().rstrip("\n")
    if answer != "ready":
        os.waitpid(pid, 0)
        code, _, message = answer.partition(" ")
        if not message:
            raise SetupError("the container's supervisor died while setting it up")
        raise HyjailError(message, int(code))
    return pid, process_start_time(pid) or 0


def _supervisor_main(store: Store, container: Container, spec, unit, given_hooks,
                     console_socket: str | None, console_size: tuple[int, int] | None,
                     ready_write: int, log: Callable[[str], None] | None) -> None:
    """The supervisor's life: the container's process gets the caller's stdio (conmon's
    pipes), the supervisor itself none of it (its own lines go to the runtime's --log)."""
    from hyjail import foreground, supervisor
    from hyjail.frozen import replace

    container_id = container.id
    code = 1
    told = []
    stdio: list[int] = []
    try:
        os.setsid()  # no terminal, no job control of the caller's
        stdio += [os.dup(fd) for fd in (0, 1, 2)]
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        foreground.close_all_but([ready_write, *stdio])

        def ready(record) -> None:
            # The pid of the jail's first process: in the jail's namespaces already (the
            # stand-in joins them only once these hooks are done).
            state = {**states.state_json(container, "creating"), "pid": record.init_pid}
            if given_hooks.start_container and record.backend == "trace":
                raise SetupError("config.json: hooks.startContainer: needs the ns or hybrid "
                                 "backend (the trace backend's supervisor is busy holding "
                                 "the process then)")
            hooks.run_on_host("prestart", given_hooks.prestart, state)
            hooks.run_on_host("create_runtime", given_hooks.create_runtime, state)

            def before_start() -> None:
                hooks.run_in_jail(record.jid, given_hooks.start_container,
                                  {**state, "status": "created"}, spec.container)
            listener = _listen(store.start_socket(container_id))
            os.write(ready_write, f"ready {record.init_pid}\n".encode())
            told.append(True)
            os.close(ready_write)
            try:
                _wait_for_start(listener, record.init_pid, store, container_id, before_start)
            finally:
                listener.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(store.start_socket(container_id))

        console = (lambda master: _send_console(console_socket, master, console_size)
                   ) if console_socket else None
        # The stand-in, our parent, is counted in the jail's groups: engines read them
        # from the container's pid (podman stats), and runc's is in its container's.
        spec = replace(spec, companion=os.getppid())
        if unit is not None:  # the systemd driver: the jail's groups in the scope it makes
            from hyjail.oci import scope
            spec = replace(spec, cgroup_path=scope.start(unit, spec.companion))
        code = supervisor.run(spec, on_ready=ready,
                              stdio=None if console else stdio, console=console)
    except HyjailError as e:
        code = e.exit_code
        _report(str(e), told, ready_write, code, stdio, log)
    except BaseException as e:  # a bug: still one line, and the supervisor's exit
        _report(f"{type(e).__name__}: {e}", told, ready_write, code, stdio, log)
    finally:
        os._exit(code)


def _report(message: str, told: list, ready_write: int, code: int, stdio: list[int],
            log: Callable[[str], None] | None) -> None:
    """Before the container is created: to `create`, which fails with it. After: on the
    container's own stderr (what its engine logs: a command not found, say) and --log."""
    from hyjail.errors import one_line
    line = one_line(message)
    if not told:
        os.write(ready_write, f"{code} {line}\n".encode())
        return
    if log:
        log(line)
    if len(stdio) == 3:
        with contextlib.suppress(OSError):
            os.write(stdio[2], f"hyjail-oci: {line}\n".encode())


def _listen(path: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(4)
    return listener


def _wait_for_start(listener: socket.socket, init_pid: int, store: Store,
                    container_id: str, before_start: Callable[[], None]) -> None:
    """Until `start` asks (startContainer hooks run, marked started, then told so), or the
    jail's pid 1 ends first (killed while created: SetupError, and the supervisor takes the
    jail down). A failing hook's line goes to `start`, and the jail is taken down."""
    pidfd = os.pidfd_open(init_pid)
    try:
        while True:
            readable, _, _ = select.select([listener, pidfd], [], [])
            if pidfd in readable:
                raise SetupError("the container was killed before it started", 137)
            connection, _ = listener.accept()
            with connection:
                if connection.recv(16) == b"start":
                    try:
                        before_start()
                    except HyjailError as e:
                        connection.send(f"error {e}".encode()[:_ANSWER])
                        raise
                    store.update(container_id, started=True)
                    connection.send(b"ok")
                    return
    finally:
        os.close(pidfd)


def _send_console(path: str, master: int, size: tuple[int, int] | None) -> None:
    """The terminal's master to the caller's console socket (SCM_RIGHTS), as runc sends it."""
    if size:
        import fcntl
        import struct
        import termios
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
        try:
            peer.connect(path)
            socket.send_fds(peer, [b"/dev/ptmx"], [master])
        except OSError as e:
            raise SetupError(f"--console-socket {path}: {e.strerror}") from None


def start(store: Store, container_id: str,
          log: Callable[[str], None] | None = None) -> None:
    container = store.read(container_id)
    current = states.status(container)
    if current != "created":
        raise HyjailError(f"cannot start a container that is {current}", 1)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as peer:
            peer.settimeout(None if container.hooks.get("start_container") else 30)
            peer.connect(store.start_socket(container_id))
            peer.send(b"start")
            answer = peer.recv(_ANSWER)
    except OSError:
        answer = b""
    if answer.startswith(b"error "):
        raise HyjailError(answer.removeprefix(b"error ").decode(errors="replace"), 1)
    if answer != b"ok":
        raise HyjailError(f"cannot start container {container_id}: its process has ended", 1)
    poststart = hooks.from_record(container.hooks, "poststart")
    if poststart:
        record = _record(container_id)
        state = states.state_json(container, "running")
        hooks.run_logged("poststart", poststart,
                         {**state, "pid": record.init_pid if record else 0}, log)


# ---- state, kill, delete ----------------------------------------------------------------------

def current_state(store: Store, container_id: str) -> dict:
    container = store.read(container_id)
    return states.state_json(container, states.status(container, _paused(container_id)))


def _paused(container_id: str) -> bool:
    from hyjail.oci import freezer
    record = _record(container_id)
    return record is not None and freezer.frozen(record)


def _record(container_id: str):
    """The container's jail in the registry (None once it is gone)."""
    from hyjail.registry import Registry
    return next((r for r in Registry().live() if r.name == container_id), None)


def parse_signal(text: str) -> int:
    """runc's forms: a number, or a name with or without SIG."""
    if text.isdigit():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        found = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if found is not None:
            return int(found)
    raise HyjailError(f"invalid signal {text!r}", 1)


def kill(store: Store, container_id: str, signum: int, all_processes: bool = False) -> None:
    container = store.read(container_id)
    current = states.status(container)
    record = _record(container_id)
    if current == "stopped" or record is None or not record.init_pid:
        raise HyjailError("container not running", 1)
    targets = _processes(record) if all_processes else [record.init_pid]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _processes(record) -> list[int]:
    """Every process of the jail, pid 1 last (a SIGKILL to it ends the rest anyway)."""
    from hyjail import jails
    found = [p.pid for p in jails.get(record.jid).processes]
    return [pid for pid in found if pid != record.init_pid] + [record.init_pid]


def pause(store: Store, container_id: str, freeze: bool) -> None:
    from hyjail.oci import freezer
    container = store.read(container_id)
    current = states.status(container, _paused(container_id))
    if current != ("running" if freeze else "paused"):
        raise HyjailError(f"container not {'running' if freeze else 'paused'}: {current}", 1)
    freezer.set_frozen(_record(container_id), freeze)


def delete(store: Store, container_id: str, force: bool = False,
           log: Callable[[str], None] | None = None) -> None:
    container = store.read(container_id)
    current = states.status(container, False)
    if current != "stopped":
        if not force:
            raise HyjailError(f"cannot delete container {container_id} that is not stopped: "
                              f"{current}", 1)
        record = _record(container_id)
        if record is not None and record.init_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.init_pid, signal.SIGKILL)
            _thaw(record)  # a frozen process dies only once thawed
        if not _wait_until(lambda: not container.alive(), _STOP_WAIT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(container.pid, signal.SIGKILL)
    hooks.run_logged("poststop", hooks.from_record(container.hooks, "poststop"),
                     states.state_json(container, "stopped"), log)
    store.remove(container_id)


def _thaw(record) -> None:
    from hyjail.oci import freezer
    with contextlib.suppress(HyjailError, OSError):
        if freezer.frozen(record):
            freezer.set_frozen(record, False)


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---- run, list, ps ----------------------------------------------------------------------------

def run(store: Store, container_id: str, bundle: str, pid_file: str | None = None,
        console_socket: str | None = None, detach: bool = False,
        log: Callable[[str], None] | None = None, systemd_cgroup: bool = False) -> int:
    """create, start, and (unless detached) wait for the container's end: its exit status,
    with the container deleted."""
    container = create(store, container_id, bundle, pid_file, console_socket, log,
                       systemd_cgroup)
    try:
        start(store, container_id, log)
    except BaseException:
        delete(store, container_id, force=True, log=log)
        raise
    if detach:
        return 0
    try:
        while True:
            try:
                _, status = os.waitpid(container.pid, 0)
                break
            except InterruptedError:
                continue
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + (
            os.WTERMSIG(status))
    finally:
        delete(store, container_id, force=True, log=log)


def listing(store: Store) -> list[dict]:
    found = []
    for container_id in store.ids():
        with contextlib.suppress(HyjailError):
            found.append(current_state(store, container_id))
    return found


def format_list(states_: Sequence[dict], quiet: bool = False) -> str:
    if quiet:
        return "".join(f"{s['id']}\n" for s in states_)
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"] or
              "root") for s in states_]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join("   ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                        strict=True)).rstrip()
                   + "\n" for row in rows)


def processes(store: Store, container_id: str) -> list[int]:
    store.read(container_id)
    record = _record(container_id)
    return [] if record is None else sorted(_processes(record))


def dumps(value) -> str:
    return jsontext.dumps(value) + "\n"
