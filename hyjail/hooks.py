"""FreeBSD's host hooks (exec.prestart, exec.created, exec.poststart, exec.prestop,
exec.poststop): the administrator's commands, run on the host with `/bin/sh -c`.

Owns running one hook list with JID, JNAME and JPATH in the environment, and the one line that
names a failing command. What runs where and when is `hyjail.lifecycle`'s (create) and
`hyjail.jails`' (remove); hooks run inside a jail go through `hyjail.jails.exec_in`.
A host hook is the administrator's own code with the host's powers: JPATH names a tree the
jail can write, so a hook that reads it reads what the jail put there (the README's threat
model).
"""

from __future__ import annotations

import os
import subprocess

from hyjail.errors import SetupError


def run_host_hooks(commands: list[str], which: str, jid: int | str, name: str, path: str) -> None:
    env = {**os.environ, "JID": str(jid), "JNAME": name, "JPATH": path}
    for command in commands:
        status = subprocess.run(["/bin/sh", "-c", command], env=env).returncode
        if status != 0:
            raise SetupError(f"{which}: {command!r} failed with status {status}")
