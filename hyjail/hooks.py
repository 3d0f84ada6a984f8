"""FreeBSD's host hooks (exec.prepare, exec.prestart, exec.created, exec.poststart,
exec.prestop, exec.poststop, exec.release): the administrator's commands, run on the host with
`/bin/sh -c`.

Owns running one hook list with JID, JNAME and JPATH in the environment, as exec.system_user
when one is given, killed after exec.timeout seconds, and the one line that names a failing
command. What runs where and when is `hyjail.lifecycle`'s (create) and `hyjail.jails`'
(remove); hooks run inside a jail go through `hyjail.jails.exec_in`.
A host hook is the administrator's own code with the host's powers: JPATH names a tree the
jail can write, so a hook that reads it reads what the jail put there (the README's threat
model).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from hyjail.errors import SetupError
from hyjail.frozen import frozen


@frozen
class HookOptions:
    """How a jail's commands run, kept in its record for `jail -r`."""
    timeout: float | None = None  # exec.timeout
    user: str | None = None  # exec.system_user: a user of the host's passwd
    consolelog: str | None = None  # exec.consolelog: every command's output appended there
    jail_user: str | None = None  # exec.jail_user: commands inside run as this user
    system_jail_user: bool = False  # exec.system_jail_user: jail_user is the host's
    clean: bool = False  # exec.clean: commands inside get a login's environment
    verbose: bool = False  # jail -v: each command is told before it runs (not recorded)

    def inside(self, timed: bool = False) -> dict:
        """exec_in's keywords for exec.start, command and exec.stop: as exec.jail_user (of
        the jail's passwd, or the host's with exec.system_jail_user), in a clean environment
        with exec.clean (FreeBSD keeps TERM, and sets HOME, SHELL, USER of the user and the
        login class's PATH: `jexec -l`'s), else with ours and the user's HOME, SHELL and
        USER. timed: killed after exec.timeout (exec.start and exec.stop; not `command`)."""
        which = "host_user" if self.system_jail_user else "user"
        # Under exec.consolelog, into the jail's log (the supervisor writes it there), so a
        # daemon started inside holds no file of the host's.
        keywords: dict = {which: self.jail_user, "to_log": bool(self.consolelog)}
        if self.clean:
            keywords["login"] = True
        else:
            keywords.update(environ=dict(os.environ), user_environment=bool(self.jail_user))
        if timed and self.timeout:
            keywords["timeout"] = self.timeout
        return keywords

    def to_record(self) -> dict:
        return {name: getattr(self, name) for name in self.__frozen_fields__
                if name != "verbose"}

    def tell(self, name: str, command: str, inside: bool = False) -> None:
        """jail -v: what FreeBSD's jail(8) prints before it runs a command."""
        if self.verbose:
            where = " in jail" if inside else ""
            timed = " with timeout" if self.timeout else ""
            print(f"{name}: run command{where}{timed}: {command}", flush=True)

    @classmethod
    def from_record(cls, kept: dict) -> HookOptions:
        return cls(**{k: v for k, v in kept.items() if k in cls.__frozen_fields__})


@contextlib.contextmanager
def console(log: str | None, root: str) -> Iterator[None]:
    """exec.consolelog: this process's stdout and stderr (which the hooks and the commands
    inside inherit) appended to the file while the jail is made or removed. Never a file
    beneath the jail's root: the jail could have put a symbolic link on its way."""
    if not log:
        yield
        return
    where = os.path.realpath(str(log))
    real_root = os.path.realpath(root)
    if os.path.commonpath([where, real_root]) == real_root:
        raise SetupError(f"exec.consolelog={log}: inside the jail's root, where the jail "
                         f"could point it at any host file")
    try:
        fd = os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW |
                     os.O_CLOEXEC, 0o640)
    except OSError as e:
        raise SetupError(f"exec.consolelog={log}: {e.strerror}") from None
    saved = [os.dup(1), os.dup(2)]
    try:
        for target in (1, 2):
            os.dup2(fd, target)
        yield
    finally:
        for target, old in zip((1, 2), saved, strict=True):
            os.dup2(old, target)
            os.close(old)
        os.close(fd)


def run_host_hooks(commands: list[str], which: str, jid: int | str, name: str, path: str,
                   options: HookOptions | None = None) -> None:
    if not commands:
        return  # and no subprocess (with re, locale, threading) imported for none
    options = options or HookOptions()
    import subprocess
    env = {**os.environ, "JID": str(jid), "JNAME": name, "JPATH": path}
    for command in commands:
        options.tell(name or str(jid), command)
        try:
            status = subprocess.run(["/bin/sh", "-c", command], env=env,
                                    timeout=options.timeout, user=options.user,
                                    group=_group_of(options.user),
                                    extra_groups=[] if options.user else None).returncode
        except subprocess.TimeoutExpired:
            raise SetupError(f"{which}: {command!r} timed out after {options.timeout:g} s "
                             f"(exec.timeout)") from None
        except (KeyError, PermissionError) as e:
            raise SetupError(f"exec.system_user={options.user}: {e}") from None
        if status != 0:
            raise SetupError(f"{which}: {command!r} failed with status {status}")


def _group_of(user: str | None) -> int | None:
    if user is None:
        return None
    import pwd
    try:
        return pwd.getpwnam(user).pw_gid
    except KeyError:
        raise SetupError(f"exec.system_user={user}: no such user on the host") from None
