"""Whom a process in a jail runs as, where, and with what environment: the entering
process's (jexec's) and the jail's own command's (hyjail run's), settled inside the jail.

Owns: choosing the account (a user of the jail's /etc/passwd and /etc/group read as plain
data beneath the root by `hyjail.accounts`, or a host user looked up before entering), the
environment FreeBSD's jexec gives (a named user's HOME, SHELL, USER and a login class's
PATH; -l's clean login environment) and hyjail run's (the user's, under what the caller
passes), and the working directory, always opened beneath the root by descriptor. Runs in
the entering process or the jail's first process, which still hold host powers: nothing here
follows a name of the jail's tree out of it or loads anything of the jail's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from hyjail import accounts, linux
from hyjail.errors import SetupError
from hyjail.frozen import replace
from hyjail.ns.dilution import Account, Confinement

LOGIN_PATH = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"


def chosen_account(asked: accounts.Asked, root: int, weakened: frozenset[str],
                   shell: bool = False) -> tuple[accounts.User | None, Account | None]:
    """(whose environment and shell, whom to switch to): the host user looked up before
    entering (jexec -u), else from the jail's own /etc/passwd and /etc/group beneath `root`,
    read and parsed only when a user, -l or the user's shell (`shell`: no command) asks;
    (None, None) otherwise."""
    if asked.host is not None:
        entry = asked.host.user
        return entry, Account(entry.name, entry.uid, entry.gid, asked.host.groups)
    user = asked.user
    if not (user or asked.login or shell or asked.clean):
        return None, None
    if "host-nss" in weakened:  # the old, unsafe way, for the battery to show its hole
        entry = _account_by_nss(user)
        return entry, Account(entry.name, entry.uid, entry.gid, None) if user else None
    table = accounts.JailAccounts(root)
    entry = table.user(user)
    if asked.group is not None:  # --user U:G: that group alone, as podman's and docker's
        gid = table.group_id(asked.group)
        return entry, Account(entry.name, entry.uid, gid, (gid,))
    if not user:
        return entry, None
    return entry, Account(entry.name, entry.uid, entry.gid, table.group_ids(entry))


def _account_by_nss(user: str | None) -> accounts.User:
    """glibc's look-up inside the jail (its nsswitch.conf and modules): host-nss only."""
    import pwd
    try:
        found = pwd.getpwuid(int(user)) if user and user.isdigit() else pwd.getpwnam(
            user or "root")
    except KeyError:
        raise SetupError(f"{user}: no such user in the jail") from None
    return accounts.User(found.pw_name, found.pw_uid, found.pw_gid, found.pw_gecos,
                         found.pw_dir, found.pw_shell)


def login_environment(entry: accounts.User, env: dict[str, str]) -> dict[str, str]:
    """jexec -l: a clean environment for the user, keeping only TERM (login(1)'s)."""
    return {**user_environment(entry), "LOGNAME": entry.name,
            **({"TERM": env["TERM"]} if "TERM" in env else {})}


def user_environment(entry: accounts.User) -> dict[str, str]:
    """What FreeBSD's jexec sets for a user: HOME, SHELL, USER, and the login class's PATH
    (the default class's, less ~/bin)."""
    return {"HOME": entry.home, "SHELL": entry.shell or "/bin/sh", "USER": entry.name,
            "PATH": LOGIN_PATH}


def settle(asked: accounts.Asked, root: int, entry: accounts.User | None,
           argv: Sequence[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """What the caller asked of the entry, settled inside the jail, beneath `root`: the
    environment (-l, or a named user's), the working directory (-d, else the user's home
    with -l, else the root), and the command: argv, or, with none, the user's shell run as
    FreeBSD's jexec runs it (argv[0] its path, interactive, never a login shell)."""
    if asked.login:
        env = login_environment(entry, env)
    elif asked.clean:
        env = {**user_environment(entry), "LOGNAME": entry.name, **env}
    elif asked.user_environment and asked.named:
        env = {**env, **user_environment(entry)}
    if asked.cwd is not None:
        enter_directory(root, asked.cwd)
    elif asked.login:
        enter_home(root, entry.home)
    if not argv:
        shell = entry.shell if entry is not None else ""
        argv = [shell or "/bin/sh", "-i"]
    return list(argv), env


def first_command(spec, confinement: Confinement,
                  id_map: Sequence[tuple[int, int, int]] = ()
                  ) -> tuple[list[str], dict[str, str], Confinement]:
    """The jail's own command (hyjail run's), settled by the jail's first process once its
    root is `/`, as jexec's entry is: as --user (of the jail's passwd and group; root by
    default), in --chdir (else /), with the user's HOME, SHELL, USER, LOGNAME and a login's
    PATH, under what the spec carries (TERM, --env, --env-file; everything of the caller's
    with --preserve-env). Never through NSS, even in a jail weakened to use it for jexec.
    id_map: the jail's user namespace's map, which the user and its groups must lie in."""
    if spec.container is not None:
        return _container_command(spec, confinement, id_map)
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        asked = accounts.Asked(user=spec.user, group=spec.group, cwd=spec.cwd, clean=True)
        entry, account = chosen_account(asked, root, frozenset())
        argv, env = settle(asked, root, entry, spec.command, dict(spec.environ))
    finally:
        os.close(root)
    if account is not None and id_map:
        ids = (account.uid, account.gid, *(account.groups or ()))
        if not all(any(inside <= i < inside + count for inside, _, count in id_map)
                   for i in ids):
            raise SetupError(f"--user {spec.user}: its ids are not mapped in this jail's user "
                             f"namespace (a jail of a user other than root maps only root)")
        if sum(count for _, _, count in id_map) == 1:
            account = None  # root, where only root is mapped: nothing to switch (no setgroups)
    return argv, env, replace(confinement, account=account)


def _container_command(spec, confinement: Confinement,
                       id_map: Sequence[tuple[int, int, int]]
                       ) -> tuple[list[str], dict[str, str], Confinement]:
    """An OCI container's process: its ids, groups and environment exactly as config.json
    gives them (no passwd look-up: runc's neither), in its directory (resolved as the jail
    resolves it)."""
    process = spec.container
    ids = (process.uid, process.gid, *process.groups)
    if id_map and not all(any(inside <= i < inside + count for inside, _, count in id_map)
                          for i in ids):
        raise SetupError(f"process.user: uid {process.uid}, gid {process.gid} or a group is "
                         f"not mapped in this jail's user namespace")
    account = Account(str(process.uid), process.uid, process.gid, process.groups)
    if id_map and sum(count for _, _, count in id_map) == 1:
        account = None
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        enter_directory(root, spec.cwd or "/")
    finally:
        os.close(root)
    return list(spec.command), dict(spec.environ), replace(confinement, account=account)


def enter_directory(root: int, path: str) -> None:
    """cd to path as the jail resolves it (relative to its root, symlinks clamped there, no
    magic link), never by a host path; SetupError, worded as chdir(2)'s, if it is not a
    directory there."""
    try:
        fd = linux.openat2(root, path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                           linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS)
    except OSError as e:
        raise SetupError(f"chdir: {path}: {e.strerror}") from None
    try:
        os.fchdir(fd)
    finally:
        os.close(fd)


def enter_home(root: int, home: str) -> None:
    """cd to the user's home, resolved beneath the jail's root (no magic link, no way out),
    or to / if it is not a directory there."""
    try:
        fd = linux.openat2(root, home, os.O_PATH | os.O_DIRECTORY,
                           linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS)
    except OSError:
        os.fchdir(root)
        return
    try:
        os.fchdir(fd)
    finally:
        os.close(fd)


def entering(asked: accounts.Asked, root: int, weakened: frozenset[str], argv: Sequence[str],
             env: dict[str, str], confinement: Confinement
             ) -> tuple[Sequence[str], dict[str, str], Account | None, Confinement]:
    """An entering process's command, environment, account and confinement, settled in the
    jail's root (`root`, by descriptor): an OCI exec's exactly (its ids, its directory, its
    capabilities within the container's), else jexec's, from the jail's own files."""
    if asked.process is not None:
        switch_to, confinement = container_process(asked.process, confinement)
        enter_directory(root, asked.cwd or "/")
        return argv, env, switch_to, confinement
    entry, switch_to = chosen_account(asked, root, weakened, shell=not argv)
    argv, env = settle(asked, root, entry, argv, env)
    return argv, env, switch_to, confinement


def container_process(process, confinement: Confinement) -> tuple[Account, Confinement]:
    """An OCI exec's process: whom it runs as, and its confinement: the jail's, with the
    process's capabilities within the container's (never more), its umask and OOM score, and
    its AppArmor profile (none given: the container's)."""
    caps = confinement.caps
    if process.caps is not None:
        caps = tuple(c for c in process.caps if caps is None or c in caps)
    return (Account(str(process.uid), process.uid, process.gid, process.groups),
            replace(confinement, caps=caps, umask=process.umask,
                    oom_score_adj=process.oom_score_adj,
                    apparmor=confinement.apparmor if process.apparmor is None
                    else process.apparmor))
