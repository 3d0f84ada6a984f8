"""`hyjail-oci exec`: a process in a running container, as runc's exec runs one.

Owns reading the process (`--process FILE`, podman's and containerd's way, else the
arguments with --env, --cwd, --user UID[:GID], --additional-gids, --cap, --tty), and running
it through the jail's entry path (`hyjail.jails.exec_in`: every namespace of the jail,
its root, its confinement, with this process's ids and a capability set within the
container's). With --detach, the entering process's waiter is forked and named by
--pid-file; the caller's subreaper (conmon) reaps it with the process's exit status. A
terminal (`process.terminal`, --tty) is the jail's own pty, its master sent to
--console-socket (or, in the foreground without one, relayed to ours).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hyjail.container import ContainerProcess
from hyjail.errors import HyjailError
from hyjail.oci import state as states
from hyjail.oci.config import OciProcess


def run(store, container_id: str, args: list[str], flags: dict,
        log: Callable[[str], None]) -> int:
    from hyjail.oci import runtime
    container = store.read(container_id)
    current = states.status(container, runtime._paused(container_id))
    if current not in ("running", "created"):
        raise HyjailError(f"cannot exec in a {current} container", 1)
    process = _process(args, flags)
    console_socket = flags.get("console-socket")
    if process.terminal and console_socket is None and flags.get("detach"):
        raise HyjailError("cannot allocate tty if runc will detach without setting console "
                          "socket", 1)
    console = None
    if process.terminal and console_socket:
        size = process.console_size
        console = (lambda master: runtime._send_console(console_socket, master, size))  # noqa: E731
    caps = None if process.capabilities is None else tuple(process.capabilities.bounding)
    from hyjail import apparmor
    profile = apparmor.wanted(process.apparmor_profile or flags.get("apparmor"),
                              "exec: process.apparmorProfile")
    wanted = ContainerProcess(uid=process.uid, gid=process.gid, groups=process.additional_gids,
                              umask=process.umask, oom_score_adj=process.oom_score_adj,
                              caps=caps, apparmor=profile)

    def enter() -> int:
        from hyjail import jails
        stdio = None if process.terminal and not console else (0, 1, 2)
        return jails.exec_in(container_id, list(process.args), environ=dict(process.env),
                             cwd=process.cwd, stdio=stdio, process=wanted, console=console)

    pid_file = flags.get("pid-file")
    if not flags.get("detach"):
        if pid_file:
            runtime.write_pid_file(pid_file, os.getpid())
        return enter()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            code = enter()
        except HyjailError as e:
            log(str(e))
            code = e.exit_code
        finally:
            os._exit(code)
    if pid_file:
        runtime.write_pid_file(pid_file, pid)
    return 0


def _process(args: list[str], flags: dict) -> OciProcess:
    """The process to run: --process FILE, else runc's arguments and flags."""
    from hyjail.oci import config
    if flags.get("process"):
        return config.load_process(str(flags["process"]))
    if not args:
        raise HyjailError("exec: no command (give --process FILE or the arguments)", 1)
    data: dict = {"args": args, "cwd": flags.get("cwd") or "/",
                  "env": list(flags.get("env") or []), "terminal": bool(flags.get("tty"))}
    user = flags.get("user")
    if user:
        uid, _, gid = str(user).partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise HyjailError(f"exec --user {user}: UID[:GID], numbers", 1)
        data["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    groups = flags.get("additional-gids") or []
    if groups:
        data.setdefault("user", {"uid": 0, "gid": 0})["additionalGids"] = [
            int(g) for g in groups if str(g).isdigit()]
    if flags.get("cap"):
        caps = [str(c).upper() for c in flags["cap"]]
        caps = [c if c.startswith("CAP_") else f"CAP_{c}" for c in caps]
        data["capabilities"] = {kind: caps for kind in ("bounding", "effective", "permitted")}
    return config.parse_process(data, "exec")
