"""Entering a running jail (jexec): the jail side, after the fork.

Owns: joining every namespace of the jail's pid 1 (the pid namespace is joined by the fork
itself), taking the jail's root, choosing the user and environment from the jail's own
/etc/passwd, then the same READY/GO handshake and exec as the jail's own command, so that an
entered process can reach exactly what one started with the jail can.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
from collections.abc import Sequence
from typing import NoReturn

import prctl

from hyjail import linux
from hyjail.errors import SetupError
from hyjail.ns import init
from hyjail.ns.jail import guarded, jail_stdio, ready_and_wait

# The mount namespace goes last: joining it moves this process's root into the jail, after
# which the host's /proc (and the other fds' meaning) are no longer what they were.
NAMESPACES = (("cgroup", linux.CLONE_NEWCGROUP), ("ipc", linux.CLONE_NEWIPC),
              ("uts", linux.CLONE_NEWUTS), ("net", linux.CLONE_NEWNET),
              ("mnt", linux.CLONE_NEWNS))
LOGIN_PATH = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"


def open_namespaces(init_pid: int) -> dict[str, int]:
    """fds of pid 1's namespaces (and its pid namespace), opened on the host."""
    return {name: os.open(f"/proc/{init_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            for name in ("pid", *(n for n, _ in NAMESPACES))}


def main(namespaces: dict[str, int], argv: Sequence[str], env: dict[str, str],
         user: str | None, login: bool, channel: socket.socket,
         tty_fds: Sequence[int]) -> NoReturn:
    guarded(channel, lambda: _enter_and_exec(namespaces, argv, env, user, login, channel,
                                             tty_fds))


def _enter_and_exec(namespaces: dict[str, int], argv: Sequence[str], env: dict[str, str],
                    user: str | None, login: bool, channel: socket.socket,
                    tty_fds: Sequence[int]) -> NoReturn:
    prctl.set_pdeathsig(signal.SIGKILL)  # jexec killed: the entered process goes too
    for name, nstype in NAMESPACES:
        linux.setns(namespaces[name], nstype)
    os.chdir("/")
    account = _account(user) if (user or login) else None
    tty = ready_and_wait(channel, tty_fds)
    if login:
        env = {"HOME": account.pw_dir, "SHELL": account.pw_shell, "USER": account.pw_name,
               "PATH": LOGIN_PATH, **({"TERM": env["TERM"]} if "TERM" in env else {})}
        os.chdir(account.pw_dir if os.path.isdir(account.pw_dir) else "/")
    if user:
        os.initgroups(account.pw_name, account.pw_gid)
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
    init.exec_command(argv, env, jail_stdio(tty, tty_fds), tty, channel)


def _account(user: str | None) -> pwd.struct_passwd:
    """The user from the jail's own /etc/passwd (we are in its mount namespace now)."""
    try:
        return pwd.getpwuid(int(user)) if user and user.isdigit() else pwd.getpwnam(user or "root")
    except KeyError:
        raise SetupError(f"{user}: no such user in the jail") from None
