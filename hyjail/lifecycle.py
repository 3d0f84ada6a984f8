"""FreeBSD jail(8)'s create and remove, as an explicit ordered list of steps with hooks.

Owns: turning jail parameters (from `jail -c name=value...` or a jail.conf block) into a
JailSpec and hook lists, and the order in which things happen:

  create:  exec.prestart (host) -> the jail -> exec.created (host) -> exec.start / command
           (inside) -> exec.poststart (host)
  remove:  exec.prestop (host) -> exec.stop (inside) -> SIGTERM/SIGKILL -> exec.poststop (host)

Host hooks run with `/bin/sh -c` and JID, JNAME and JPATH in their environment. A failing
prestart leaves nothing behind; a failing later create step removes the jail again. A
persistent jail's remove hooks are kept in its registry record, so `jail -r` and `hyjail stop`
run them without the configuration at hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from hyjail import allow, limits
from hyjail.errors import SetupError
from hyjail.hooks import run_host_hooks
from hyjail.limits import Limits
from hyjail.spec import JailSpec

HOOKS_CREATE = ("exec.prestart", "exec.created", "exec.poststart")
HOOKS_REMOVE = ("exec.prestop", "exec.stop", "exec.poststop")
# hyjail's own parameters, named as `hyjail run`'s options: memory, pids, cpus, rlimit.NAME.
LIMITS = ("memory", "pids", "cpus")
KNOWN = frozenset({"name", "jid", "path", "host.hostname", "ip4.addr", "ip6.addr", "persist",
                   "command", "exec.start", "stop.timeout", "exec.clean", "mount.devfs",
                   *LIMITS, *HOOKS_CREATE, *HOOKS_REMOVE})

Params = dict[str, list[str] | bool]


def parse_command_line(words: Iterable[str]) -> Params:
    """`name=value` / `name+=value` / `name` / `noname` words, as jail -c takes them;
    `command=` must be last, and the words after it are the command's arguments."""
    params: Params = {}
    words = list(words)
    for index, word in enumerate(words):
        name, sep, value = word.partition("=")
        if name == "command" and sep:
            params["command"] = [value, *words[index + 1:]]  # the rest is its argv
            break
        if not sep:
            truth = not (name.startswith("no") and name[2:] in KNOWN | {"persist"})
            params[name[2:] if not truth else name] = truth
        elif name.endswith("+"):
            previous = params.get(name[:-1], [])
            params[name[:-1]] = [*(previous if isinstance(previous, list) else []),
                                 *value.split(",")]
        elif name in ("ip4.addr", "ip6.addr"):
            params[name] = value.split(",")
        else:
            params[name] = [value]
    return params


def _one(params: Params, name: str, default: str | None = None) -> str | None:
    value = params.get(name)
    if value is None or value is False:
        return default
    if value is True or len(value) != 1:
        raise SetupError(f"{name}: needs exactly one value")
    return value[0]


def _check_known(params: Params) -> None:
    for name in params:
        if not (name in KNOWN or name.startswith(("allow.", "rlimit."))):
            raise SetupError(f"unknown parameter: {name}")


def _allow_changes(params: Params) -> list[tuple[str, bool]]:
    """allow.X, allow.noX, allow.X=1|0 (and allow.noX=1) as (permission, on) changes."""
    changes = []
    for name, value in params.items():
        if not name.startswith("allow."):
            continue
        permission, on = name.removeprefix("allow."), True
        if permission.startswith("no") and allow.known(permission[2:]):
            permission, on = permission[2:], False
        if value is not True:
            on = allow.parse_truth(name, _one(params, name)) == on
        changes.append((permission, on))
    return changes


def _limits(params: Params) -> Limits:
    rlimits = [f"{name.removeprefix('rlimit.')}={_one(params, name)}"
               for name in params if name.startswith("rlimit.")]
    return limits.create(*(_one(params, name) for name in LIMITS), rlimits=rlimits)


def to_spec(params: Params) -> JailSpec:
    _check_known(params)
    path = _one(params, "path")
    if path is None:
        raise SetupError("path: a jail needs one")
    addresses = [a for key in ("ip4.addr", "ip6.addr")
                 for a in (params.get(key) if isinstance(params.get(key), list) else [])]
    command = list(params.get("command") or [])
    starts = list(params.get("exec.start") or [])
    if command and starts:
        raise SetupError("command and exec.start: give one or the other")
    argv = command or (["/bin/sh", "-c", "\n".join(starts)] if starts else [])
    return JailSpec.create(
        path, _one(params, "host.hostname", _one(params, "name") or "jail"),
        ",".join(addresses) or "127.0.0.1", argv, name=_one(params, "name"),
        persist=params.get("persist") is True, jid=_one(params, "jid"),
        environ={"PATH": "/sbin:/bin:/usr/sbin:/usr/bin"} if params.get("exec.clean") else None,
        allow_changes=tuple(_allow_changes(params)), limits=_limits(params))


def hooks(params: Params, names: Iterable[str]) -> dict[str, list[str]]:
    return {name: list(params[name]) for name in names if isinstance(params.get(name), list)}


def create(params: Params) -> int:
    """Create a jail from its parameters, with its hooks, as `jail -c` does; returns the
    status `jail` exits with."""
    from hyjail import jails, supervisor

    spec = to_spec(params)
    name = spec.name or ""
    create_hooks = hooks(params, HOOKS_CREATE)
    run_host_hooks(create_hooks.get("exec.prestart", []), "exec.prestart", "", name, spec.path)
    if not spec.persist:
        # Foreground: the jail lives as long as its command, as with `hyjail run`.
        def created(record) -> None:
            run_host_hooks(create_hooks.get("exec.created", []), "exec.created", record.jid,
                           record.name, record.path)
        status = supervisor.run(spec, on_ready=created)
        run_host_hooks(create_hooks.get("exec.poststart", []), "exec.poststart", "", name,
                       spec.path)
        return status
    # Persistent: the jail starts bare; exec.start runs inside it, then the jail stays.
    start = spec.command
    record = supervisor.start_detached(dataclasses.replace(spec, command=()))
    try:
        jails.remember(record, hooks(params, HOOKS_REMOVE),
                       _one(params, "stop.timeout", "10"))
        run_host_hooks(create_hooks.get("exec.created", []), "exec.created", record.jid,
                       record.name, record.path)
        if start:
            status = jails.exec_in(record.jid, start, environ=dict(spec.environ))
            if status != 0:
                raise SetupError(f"exec.start failed with status {status}")
        run_host_hooks(create_hooks.get("exec.poststart", []), "exec.poststart", record.jid,
                       record.name, record.path)
    except BaseException:
        jails.stop(record.jid, timeout=2, run_hooks=False)
        raise
    return 0
