"""Entering a running jail (jexec): the jail side, after the fork.

Owns: joining every namespace of the jail's pid 1 (the pid namespace is joined by the fork
itself), taking the jail's root, settling what the caller asked of the entry (`hyjail.ns.whom`:
the user from the jail's own /etc/passwd and /etc/group, read as plain data, never through
NSS; the environment; the working directory), then the same READY/GO handshake, confinement
and exec as the jail's own command, so that an entered process can reach exactly what one
started with the jail can.

Until it execs, the entering process holds host powers inside the jail's namespaces: it is
non-dumpable from its fork on (`foreground.Child`), so no jailed process can open its /proc
files or ptrace it, and it loads, runs and follows by name nothing of the jail's.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import stat
import struct
from collections.abc import Sequence

import prctl

from hyjail import accounts, linux
from hyjail.errors import EXIT_SETUP, HyjailError, SetupError
from hyjail.frozen import replace
from hyjail.ns import control, init, userns
from hyjail.ns.dilution import Confinement
from hyjail.ns.handshake import guarded, jail_stdio, ready_and_wait, wait_placed
from hyjail.ns.whom import entering
from hyjail.registry import Record

TYPE_CHECKING = False  # typing's own costs every start 2 ms; only a checker reads these
if TYPE_CHECKING:
    from typing import NoReturn

# The mount namespace goes last: joining it moves this process's root into the jail, after
# which the host's /proc (and the other fds' meaning) are no longer what they were.
NAMESPACES = (("cgroup", linux.CLONE_NEWCGROUP), ("ipc", linux.CLONE_NEWIPC),
              ("uts", linux.CLONE_NEWUTS), ("net", linux.CLONE_NEWNET),
              ("mnt", linux.CLONE_NEWNS))
NAMESPACE_TYPES = {"pid": linux.CLONE_NEWPID, **dict(NAMESPACES)}
_PTMX = (5, 2)  # a ptmx's device number, on every devpts instance
_TIOCSPTLCK = 0x40045431
_TIOCGPTPEER = 0x5441


def open_namespaces(record: Record) -> dict[str, int]:
    """fds of pid 1's namespaces (and its pid namespace), opened on the host: from /proc, or,
    for a rootless jail, from the fds its supervisor keeps of them (which the registry names)."""
    wanted = ("pid", *(n for n, _ in NAMESPACES))
    held = record.params.get("namespace_fds")
    if not held:
        return {name: os.open(f"/proc/{record.init_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
                for name in wanted}
    fds: dict[str, int] = {}
    try:
        for name in wanted:
            fds[name] = os.open(f"/proc/{record.supervisor_pid}/fd/{held[name]}",
                                os.O_RDONLY | os.O_CLOEXEC)
            if linux.namespace_type(fds[name]) != NAMESPACE_TYPES[name]:
                raise SetupError(f"jail {record.name}: its supervisor's fd {held[name]} is not "
                                 f"a {name} namespace")
        if not record.supervisor_alive():  # the fds were another process's
            raise HyjailError(f"jail {record.name} (JID {record.jid}) is gone", 1)
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def main(namespaces: dict[str, int], params: dict, cgroup_paths: Sequence[str],
         argv: Sequence[str], env: dict[str, str], asked: accounts.Asked,
         channel: socket.socket, tty_fds: Sequence[int],
         weakened: frozenset[str] = frozenset()) -> NoReturn:
    guarded(channel, lambda: _enter_and_exec(namespaces, params, cgroup_paths, argv, env, asked,
                                             channel, tty_fds, weakened))


def _enter_and_exec(namespaces: dict[str, int], params: dict, cgroup_paths: Sequence[str],
                    argv: Sequence[str], env: dict[str, str], asked: accounts.Asked,
                    channel: socket.socket, tty_fds: Sequence[int],
                    weakened: frozenset[str]) -> NoReturn:
    prctl.set_pdeathsig(signal.SIGKILL)  # jexec killed: the entered process goes too
    hide(weakened)
    confinement = Confinement.from_params(params).prepare()  # on the host's tree
    if confinement.userns:
        userns.hold_jail_userns(namespaces["uts"])  # the jail's /proc may not show it
    for name, nstype in NAMESPACES:
        linux.setns(namespaces[name], nstype)
        os.close(namespaces[name])  # joined: nothing more to hold it for
    os.chdir("/")
    # Joining the mount namespace made the jail's root ours: "/" is it, by descriptor.
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    argv, env, switch_to, confinement = entering(asked, root, weakened, argv, env, confinement)
    if switch_to and switch_to.uid != 0 and params.get("rootless"):
        raise SetupError(f"-u {asked.user or switch_to.name}: a jail started by a user other "
                         f"than root has only its root mapped")
    wait_placed(channel, cgroup_paths)  # counted against the jail's limits, like its own
    if "follow-symlinks" in weakened:  # the old way: the jail's /dev/ptmx, by name
        tty = ready_and_wait(channel, tty_fds)
    else:
        tty = _ready_and_wait(channel, tty_fds, root)
    os.close(root)
    init.exec_command(argv, env, jail_stdio(tty, tty_fds), tty, channel,
                      replace(confinement, account=switch_to))


def _ready_and_wait(channel: socket.socket, tty_fds: Sequence[int], root: int) -> int | None:
    """READY (with the master of a pty of the jail's own devpts when the caller is on a
    terminal), then GO; returns the pty's slave, or None."""
    master = tty = None
    if tty_fds:
        master, tty = open_jail_pty(root)
    control.send_ready(channel, [master] if master is not None else [])
    if master is not None:
        os.close(master)
    message, _ = control.receive(channel)
    if message != control.GO:
        os._exit(EXIT_SETUP)
    return tty


def open_jail_pty(root: int) -> tuple[int, int]:
    """(master, slave) of a new pty of the jail's devpts, by descriptor: its ptmx beneath the
    root with no symlink on the way (the jail may have pointed /dev/ptmx anywhere in its
    tree), checked to be a ptmx, and the slave from the master itself (TIOCGPTPEER), never by
    a /dev/pts/N name."""
    flags = os.O_RDWR | os.O_NOCTTY
    master = linux.openat2(root, "dev/pts/ptmx", flags, linux.RESOLVE_IN_ROOT
                           | linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS)
    try:
        st = os.fstat(master)
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != _PTMX:
            raise SetupError("the jail's /dev/pts/ptmx is not a pty multiplexer")
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))  # unlockpt
        slave = fcntl.ioctl(master, _TIOCGPTPEER, flags)
    except BaseException:
        os.close(master)
        raise
    return master, slave


def hide(weakened: frozenset[str]) -> None:
    """The entering process stays out of the jail's reach until it execs: non-dumpable (it
    was forked so; this holds it should the fork ever change), so that no jailed process may
    open its /proc/PID/{exe,mem,environ,fd,root,cwd}, ptrace it or have it dump core into the
    jail; its argv (the host's paths) hidden. execve of the command makes it dumpable again,
    as any process of the jail is."""
    if "dumpable-entry" in weakened:
        return
    prctl.set_dumpable(False)
    prctl.set_name("hyjail-enter")
    prctl.set_proctitle("hyjail-enter")
