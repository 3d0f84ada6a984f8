"""Entering a running trace jail (jexec): asking its supervisor to trace the process, and
that process's side.

Owns: the request on the supervisor's door (the process must be traced before it confines
itself, as the jail's first process was), and the entering steps: the jail's cgroups and,
where the kernel holds R3, its network and IPC namespaces; a pty of its own on a terminal;
chroot into the jail's root; then the same READY/GO handshake, confinement (from the jail's
record: the same filter, tags, scopes and capability sets as the command) and exec.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import replace
from typing import NoReturn

import prctl

from hyjail import cgroups, linux
from hyjail.errors import EXIT_SETUP, SetupError
from hyjail.ns import control, init
from hyjail.ns.dilution import Account, Confinement
from hyjail.ns.enter import LOGIN_PATH, account_of
from hyjail.ns.jail import guarded, jail_stdio
from hyjail.registry import Record

KERNEL_NAMESPACES = (("net", linux.CLONE_NEWNET), ("ipc", linux.CLONE_NEWIPC))


def open_namespaces(record: Record) -> dict[str, int]:
    """The first process's network and IPC namespaces, when the kernel holds R3."""
    if not record.params.get("kernel_net"):
        return {}
    return {name: os.open(f"/proc/{record.init_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            for name, _ in KERNEL_NAMESPACES}


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
         argv: Sequence[str], env: dict[str, str], user: str | None, login: bool,
         channel: socket.socket, tty_fds: Sequence[int]) -> NoReturn:
    guarded(channel, lambda: _enter_and_exec(record, namespaces, cgroup_paths, argv, env, user,
                                             login, channel, tty_fds))


def _enter_and_exec(record: Record, namespaces: dict[str, int], cgroup_paths: Sequence[str],
                    argv: Sequence[str], env: dict[str, str], user: str | None, login: bool,
                    channel: socket.socket, tty_fds: Sequence[int]) -> NoReturn:
    prctl.set_pdeathsig(signal.SIGKILL)  # jexec killed: the entered process goes too
    confinement = Confinement.from_params(record.params).prepare()  # on the host's tree
    cgroups.join(list(cgroup_paths))
    for name, nstype in KERNEL_NAMESPACES:
        if name in namespaces:
            linux.setns(namespaces[name], nstype)
    master = tty = None
    if tty_fds:  # a pty of the host's devpts, relayed by jexec: the jail's root has no ptmx
        master, tty = os.openpty()
    os.chroot(record.path)
    os.chdir("/")
    account = account_of(user) if (user or login) else None
    control.send_ready(channel, [master] if master is not None else [])
    if master is not None:
        os.close(master)
    message, _ = control.receive(channel)  # GO: the supervisor traces us now
    if message != control.GO:
        os._exit(EXIT_SETUP)
    if login:
        env = {"HOME": account.pw_dir, "SHELL": account.pw_shell, "USER": account.pw_name,
               "PATH": LOGIN_PATH, **({"TERM": env["TERM"]} if "TERM" in env else {})}
        os.chdir(account.pw_dir if os.path.isdir(account.pw_dir) else "/")
    switch_to = Account(account.pw_name, account.pw_uid, account.pw_gid) if user else None
    init.exec_command(argv, env, jail_stdio(tty, tty_fds), tty, channel,
                      replace(confinement, account=switch_to))
