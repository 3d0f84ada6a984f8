"""Entering a running trace jail (jexec): asking its supervisor to trace the process, and
that process's side.

Owns: the request on the supervisor's door (the process must be traced before it confines
itself, as the jail's first process was), and the entering steps: the jail's cgroups and,
where the kernel holds R3, its network and IPC namespaces; a pty of its own on a terminal;
chroot into the jail's root, taken by descriptor (its first process's root, opened on the host
side: never the path by name, whose components the jail or another may have swapped); then the
same READY/GO handshake, confinement (from the jail's record: the same filter, tags, scopes
and capability sets as the command) and exec. Users and groups come from the jail's files as
plain data (or the host's, looked up before), what the caller asked of the entry is settled
as `ns.enter` settles it, and the process stays hidden until exec, as `ns.enter` says.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Sequence
from typing import NoReturn

import prctl

from hyjail import accounts, linux
from hyjail.errors import EXIT_SETUP, SetupError
from hyjail.frozen import replace
from hyjail.ns import control, init
from hyjail.ns.dilution import Confinement
from hyjail.ns.enter import hide
from hyjail.ns.handshake import guarded, jail_stdio, wait_placed
from hyjail.ns.whom import entering
from hyjail.registry import Record

KERNEL_NAMESPACES = (("net", linux.CLONE_NEWNET), ("ipc", linux.CLONE_NEWIPC))


def open_namespaces(record: Record) -> dict[str, int]:
    """The jail's root ("root": the first process's, which jailed root, holding no
    sys_chroot, cannot change) and, when the kernel holds R3, the first process's network
    and IPC namespaces. The caller checks afterwards that the first process is still the
    one the record names."""
    wanted = [name for name, _ in KERNEL_NAMESPACES] if record.params.get("kernel_net") else []
    fds = {"root": os.open(f"/proc/{record.init_pid}/root",
                           os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)}
    try:
        for name in wanted:
            fds[name] = os.open(f"/proc/{record.init_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def ask_to_be_traced(record: Record, door: str, pid: int) -> None:
    """Have the jail's supervisor trace pid (our child, waiting for GO); SetupError if not."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        try:
            sock.connect(door)
            sock.send(f"TRACE {pid}".encode())
            answer = sock.recv(256).decode(errors="replace")
        except OSError as e:
            raise SetupError(f"jail {record.name}: its supervisor did not answer "
                             f"({e.strerror})") from None
    if answer != "OK":
        raise SetupError(f"jail {record.name}: its supervisor would not trace the entered "
                         f"process: {answer.removeprefix('FAIL ')}")


def main(record: Record, namespaces: dict[str, int], cgroup_paths: Sequence[str],
         argv: Sequence[str], env: dict[str, str], asked: accounts.Asked,
         channel: socket.socket, tty_fds: Sequence[int],
         weakened: frozenset[str] = frozenset()) -> NoReturn:
    guarded(channel, lambda: _enter_and_exec(record, namespaces, cgroup_paths, argv, env, asked,
                                             channel, tty_fds, weakened))


def _enter_and_exec(record: Record, namespaces: dict[str, int], cgroup_paths: Sequence[str],
                    argv: Sequence[str], env: dict[str, str], asked: accounts.Asked,
                    channel: socket.socket, tty_fds: Sequence[int],
                    weakened: frozenset[str]) -> NoReturn:
    prctl.set_pdeathsig(signal.SIGKILL)  # jexec killed: the entered process goes too
    hide(weakened)
    confinement = Confinement.from_params(record.params).prepare()  # on the host's tree
    for name, nstype in KERNEL_NAMESPACES:
        if name in namespaces:
            linux.setns(namespaces[name], nstype)
            os.close(namespaces[name])
    master = tty = None
    if tty_fds:  # a pty of the host's devpts, relayed by jexec: the jail's root has no ptmx
        master, tty = os.openpty()
    root = namespaces["root"]
    if "follow-symlinks" in weakened:  # the old way: the path by name, for the battery
        os.chroot(record.path)
    else:
        os.fchdir(root)
        os.chroot(".")
    os.chdir("/")
    argv, env, switch_to, confinement = entering(asked, root, weakened, argv, env, confinement)
    wait_placed(channel, cgroup_paths)
    control.send_ready(channel, [master] if master is not None else [])
    if master is not None:
        os.close(master)
    message, _ = control.receive(channel)  # GO: the supervisor traces us now
    if message != control.GO:
        os._exit(EXIT_SETUP)
    os.close(root)
    init.exec_command(argv, env, jail_stdio(tty, tty_fds), tty, channel,
                      replace(confinement, account=switch_to))
