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

import os
import subprocess
from dataclasses import dataclass

from hyjail.errors import SetupError


@dataclass(frozen=True)
class HookOptions:
    timeout: float | None = None  # exec.timeout
    user: str | None = None  # exec.system_user: a user of the host's passwd


def run_host_hooks(commands: list[str], which: str, jid: int | str, name: str, path: str,
                   options: HookOptions = HookOptions()) -> None:
    env = {**os.environ, "JID": str(jid), "JNAME": name, "JPATH": path}
    for command in commands:
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
