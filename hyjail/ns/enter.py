"""Entering a running jail (jexec): the jail side, after the fork.

Owns: joining every namespace of the jail's pid 1 (the pid namespace is joined by the fork
itself), taking the jail's root, choosing the user and environment from the jail's own
/etc/passwd, then the same READY/GO handshake, confinement and exec as the jail's own command,
so that an entered process can reach exactly what one started with the jail can.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
from collections.abc import Sequence
from dataclasses import replace
from typing import NoReturn

import prctl

from hyjail import cgroups, linux
from hyjail.errors import HyjailError, SetupError
from hyjail.ns import init, userns
from hyjail.ns.dilution import Account, Confinement
from hyjail.ns.jail import guarded, jail_stdio, ready_and_wait
from hyjail.registry import Record

# The mount namespace goes last: joining it moves this process's root into the jail, after
# which the host's /proc (and the other fds' meaning) are no longer what they were.
NAMESPACES = (("cgroup", linux.CLONE_NEWCGROUP), ("ipc", linux.CLONE_NEWIPC),
              ("uts", linux.CLONE_NEWUTS), ("net", linux.CLONE_NEWNET),
              ("mnt", linux.CLONE_NEWNS))
NAMESPACE_TYPES = {"pid": linux.CLONE_NEWPID, **dict(NAMESPACES)}
LOGIN_PATH = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"


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
         argv: Sequence[str], env: dict[str, str], user: str | None, login: bool,
         channel: socket.socket, tty_fds: Sequence[int]) -> NoReturn:
    guarded(channel, lambda: _enter_and_exec(namespaces, params, cgroup_paths, argv, env, user,
                                             login, channel, tty_fds))


def _enter_and_exec(namespaces: dict[str, int], params: dict, cgroup_paths: Sequence[str],
                    argv: Sequence[str], env: dict[str, str], user: str | None, login: bool,
                    channel: socket.socket, tty_fds: Sequence[int]) -> NoReturn:
    prctl.set_pdeathsig(signal.SIGKILL)  # jexec killed: the entered process goes too
    cgroups.join(list(cgroup_paths))  # counted against the jail's limits, like its own
    confinement = Confinement.from_params(params).prepare()  # on the host's tree
    if confinement.userns:
        userns.hold_jail_userns(namespaces["uts"])  # the jail's /proc may not show it
    for name, nstype in NAMESPACES:
        linux.setns(namespaces[name], nstype)
    os.chdir("/")
    account = account_of(user) if (user or login) else None
    tty = ready_and_wait(channel, tty_fds)
    if login:
        env = {"HOME": account.pw_dir, "SHELL": account.pw_shell, "USER": account.pw_name,
               "PATH": LOGIN_PATH, **({"TERM": env["TERM"]} if "TERM" in env else {})}
        os.chdir(account.pw_dir if os.path.isdir(account.pw_dir) else "/")
    switch_to = Account(account.pw_name, account.pw_uid, account.pw_gid) if user else None
    if switch_to and switch_to.uid != 0 and params.get("rootless"):
        raise SetupError(f"-u {user}: a jail started by a user other than root has only its "
                         f"root mapped")
    init.exec_command(argv, env, jail_stdio(tty, tty_fds), tty, channel,
                      replace(confinement, account=switch_to))


def account_of(user: str | None) -> pwd.struct_passwd:
    """The user from the jail's own /etc/passwd (we are in its mount namespace now)."""
    try:
        return pwd.getpwuid(int(user)) if user and user.isdigit() else pwd.getpwnam(user or "root")
    except KeyError:
        raise SetupError(f"{user}: no such user in the jail") from None
