"""An OCI config's hooks: where each of the six kinds runs, when, and what its failure does.

Owns running one kind's hooks in their order, each with its own args (args[0] is its argv[0]),
env (exactly the config's) and timeout, the container's state (`hyjail.oci.state`, with the
pid of the jail's first process, whose namespaces a hook may join) on its stdin:

  prestart, createRuntime  on the host (the runtime namespace), while `create` holds the jail
                           before its process; a failure fails `create` and takes the jail down
  startContainer           inside the container, while `start` still holds its process: the
                           path is the container's, run through the jail's entry path as the
                           container's process runs (its ids, capabilities and filter), so a
                           program of the image never gets the host's powers; a failure fails
                           `start` and takes the jail down (the ns and hybrid backends)
  poststart                on the host, once the process runs; a failure is logged
  poststop                 on the host, once the jail is gone (`delete`, or a failed
                           `create`); a failure is logged

createContainer (a host program run in the container's namespaces before its rules hold,
with the runtime's powers) is refused when the config is read (`hyjail.oci.mapping`).
The hooks later operations run are kept in the container's record (`to_record`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from hyjail import jsontext
from hyjail.errors import SetupError

TYPE_CHECKING = False  # (typing's import: 2 ms of every hyjail-oci call)
if TYPE_CHECKING:  # config.py's typed forms cost `start` and `delete` an import they need not
    from hyjail.oci.config import OciHook, OciHooks

# The kinds hyjail-oci runs, as config.json names them (`features` reports them).
HELD = ("prestart", "createRuntime", "startContainer", "poststart", "poststop")
# The kinds a later operation runs, kept with the container: `start`'s and `delete`'s.
KEPT = ("start_container", "poststart", "poststop")


def field(kind: str, index: int) -> str:
    """The config's name of a hook: hooks.createRuntime[0]."""
    head, *rest = kind.split("_")
    return f"hooks.{head}{''.join(part.title() for part in rest)}[{index}]"


def to_record(hooks: OciHooks) -> dict[str, list[dict]]:
    return {kind: [{"path": h.path, "args": list(h.args), "env": list(h.env),
                    "timeout": h.timeout} for h in getattr(hooks, kind)]
            for kind in KEPT if getattr(hooks, kind)}


class KeptHook:
    """A hook as the container's record keeps it (an OciHook's fields)."""
    __slots__ = ("path", "args", "env", "timeout")

    def __init__(self, path: str, args: list, env: list, timeout: int | None):
        self.path, self.args, self.env, self.timeout = path, tuple(args), tuple(env), timeout


def from_record(kept: dict, kind: str) -> tuple[KeptHook, ...]:
    return tuple(KeptHook(h["path"], h["args"], h["env"], h["timeout"])
                 for h in kept.get(kind, ()))


def run_on_host(kind: str, hooks: Sequence[OciHook | KeptHook], state: dict) -> None:
    """Each hook in turn, the state on its stdin; SetupError naming the first that fails."""
    if not hooks:
        return  # and no subprocess (with re, locale, threading) imported for none
    import subprocess
    payload = jsontext.dumps(state).encode()
    for index, hook in enumerate(hooks):
        where = f"{field(kind, index)}: {hook.path}"
        try:
            done = subprocess.run(list(hook.args) or [hook.path], executable=hook.path,
                                  env=_environment(hook), input=payload, capture_output=True,
                                  timeout=hook.timeout, cwd="/")
        except subprocess.TimeoutExpired:
            raise SetupError(f"{where}: timed out after {hook.timeout} s") from None
        except OSError as e:
            raise SetupError(f"{where}: {e.strerror}") from None
        if done.returncode != 0:
            raise SetupError(f"{where}: exited {_status(done.returncode)}{_said(done.stderr)}")


def run_logged(kind: str, hooks: Sequence[OciHook | KeptHook], state: dict,
               log: Callable[[str], None] | None) -> None:
    """poststart and poststop: a failure is told, and the operation goes on."""
    try:
        run_on_host(kind, hooks, state)
    except SetupError as e:
        if log:
            log(f"warning: {e}")


def run_in_jail(jid: int, hooks: Sequence[OciHook], state: dict, process) -> None:
    """startContainer: each hook inside the jail, as the container's process (`process`,
    a ContainerProcess) runs; SetupError naming the first that fails."""
    from hyjail import jails
    payload = jsontext.dumps(state).encode()
    for index, hook in enumerate(hooks):
        where = f"{field('start_container', index)}: {hook.path}"
        argv = [hook.path, *hook.args[1:]]
        read, write = os.pipe()
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(write, payload)  # a state is far smaller than a pipe's buffer
            os.close(write)
            write = -1
            code = jails.exec_in(jid, argv, environ=_environment(hook), stdio=(read, null, null),
                                 process=process, timeout=hook.timeout)
        except SetupError as e:
            raise SetupError(f"{where}: {e}") from None
        finally:
            for fd in (read, write, null):
                if fd >= 0:
                    os.close(fd)
        if code != 0:
            raise SetupError(f"{where}: exited {_status(code)}")


def _environment(hook: OciHook | KeptHook) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in hook.env if "=" in entry)


def _status(code: int) -> str:
    return f"on signal {-code}" if code < 0 else str(code)


def _said(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return f": {lines[-1]}" if lines else ""
