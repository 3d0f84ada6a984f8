"""`hyjail-oci` (also `hyjail oci`): runc's command line, so that podman (through conmon),
containerd (through its runc shim, `BinaryName`) and CRI-O drive jails as they drive runc.

Owns parsing runc's words as Go's flag package reads them (`-x`, `--name`, `--name=value`,
`--name value`, a boolean `--name=false`; global flags before the command, a command's flags
before its arguments), the one table of commands and their flags, and reporting: an error
is one line on stderr (and, with `--log`, a line of the log in `--log-format` text or json,
where containerd's shim reads it), with exit status 1, as runc's. Each command is one call
of `hyjail.oci.runtime` or `hyjail.oci.execute`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from hyjail import jsontext
from hyjail.errors import HyjailError, one_line
from hyjail.frozen import frozen, made_by

PROG = "hyjail-oci"
RUNC_COMPATIBLE = "1.1.12"  # the runc release whose command line this one takes


@frozen
class Flag:
    names: tuple[str, ...]  # the first is the key
    value: bool = True  # takes a value (else a boolean)
    repeat: bool = False  # may be given more than once (a list)


@frozen
class Command:
    flags: tuple[Flag, ...]
    args: tuple[str, ...]  # positional names; a trailing "*" takes the rest
    summary: str
    minimum: int = -1  # positional arguments needed (-1: all but a trailing "*")


GLOBAL = (Flag(("root",)), Flag(("log",)), Flag(("log-format",)), Flag(("debug",), False),
          Flag(("systemd-cgroup",), False), Flag(("rootless",)), Flag(("criu",)),
          Flag(("help", "h"), False), Flag(("version", "v"), False))

COMMANDS: dict[str, Command] = {
    "create": Command((Flag(("bundle", "b")), Flag(("pid-file",)), Flag(("console-socket",)),
                       Flag(("no-pivot",), False), Flag(("no-new-keyring",), False),
                       Flag(("preserve-fds",))), ("container-id",),
                      "create a container, held before its process runs"),
    "start": Command((), ("container-id",), "run the created container's process"),
    "run": Command((Flag(("bundle", "b")), Flag(("pid-file",)), Flag(("console-socket",)),
                    Flag(("detach", "d"), False), Flag(("no-pivot",), False),
                    Flag(("no-new-keyring",), False), Flag(("preserve-fds",)),
                    Flag(("keep",), False)), ("container-id",),
                   "create and start a container (and wait for it unless detached)"),
    "state": Command((), ("container-id",), "print the container's state (JSON)"),
    "kill": Command((Flag(("all", "a"), False),), ("container-id", "signal"),
                    "send a signal (default SIGTERM) to the container's init", minimum=1),
    "delete": Command((Flag(("force", "f"), False),), ("container-id",),
                      "delete a stopped container (--force: any)"),
    "exec": Command((Flag(("process", "p")), Flag(("detach", "d"), False),
                     Flag(("tty", "t"), False), Flag(("console-socket",)),
                     Flag(("pid-file",)), Flag(("cwd",)), Flag(("env", "e"), repeat=True),
                     Flag(("user", "u")), Flag(("additional-gids", "g"), repeat=True),
                     Flag(("cap", "c"), repeat=True), Flag(("no-new-privs",), False),
                     Flag(("preserve-fds",)), Flag(("process-label",)), Flag(("apparmor",)),
                     Flag(("ignore-paused",), False), Flag(("cgroup",), repeat=True)),
                    ("container-id", "*"), "run a process in a running container"),
    "list": Command((Flag(("format", "f")), Flag(("quiet", "q"), False)), (),
                    "list the containers"),
    "ps": Command((Flag(("format", "f")),), ("container-id", "*"),
                  "list the container's processes"),
    "pause": Command((), ("container-id",), "freeze the container's processes"),
    "resume": Command((), ("container-id",), "thaw the container's processes"),
    "features": Command((), (), "print what this runtime supports (JSON)"),
    "spec": Command((Flag(("bundle", "b")), Flag(("rootless",), False)), (),
                    "write a default config.json"),
}


class UsageError(HyjailError):
    def __init__(self, message: str):
        super().__init__(message, 1)


@frozen
class Parsed:
    flags: dict[str, object] = made_by(dict)
    args: list[str] = made_by(list)


def parse(argv: list[str], flags: tuple[Flag, ...], stop_at_positional: bool = True) -> Parsed:
    """Go's flag package: flags first (one or two dashes, `=value` or the next word),
    then positional arguments; `--` ends the flags."""
    by_name = {name: flag for flag in flags for name in flag.names}
    parsed = Parsed()
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            parsed.args.extend(argv[i + 1:])
            break
        if not word.startswith("-") or word == "-":
            if stop_at_positional:
                parsed.args.extend(argv[i:])
                break
            parsed.args.append(word)
            i += 1
            continue
        name, equals, value = word.lstrip("-").partition("=")
        flag = by_name.get(name)
        if flag is None:
            raise UsageError(f"flag provided but not defined: -{name}")
        key = flag.names[0]
        if flag.value:
            if not equals:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            if flag.repeat:
                parsed.flags.setdefault(key, []).append(value)
            else:
                parsed.flags[key] = value
        else:
            if equals and value.lower() not in ("true", "false", "1", "0", "t", "f"):
                raise UsageError(f"invalid boolean value {value!r} for -{name}")
            parsed.flags[key] = not equals or value.lower() in ("true", "1", "t")
        i += 1
    return parsed


class Logger:
    """runc's --log and --log-format: a line per error, text or JSON (containerd's shim
    reads the last error of a failed command there)."""

    def __init__(self, path: str | None, form: str | None):
        self.path = path
        self.json = form == "json"

    def __call__(self, message: str, level: str = "error") -> None:
        if not self.path:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = (jsontext.dumps({"level": level, "msg": message, "time": now}) if self.json
                else f'time="{now}" level={level} msg="{message}"')
        try:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(sys.argv[1:] if argv is None else argv))


def run(argv: list[str]) -> int:
    log = Logger(None, None)
    try:
        top = parse(argv, GLOBAL)
        log = Logger(top.flags.get("log"), top.flags.get("log-format"))
        if top.flags.get("version"):
            sys.stdout.write(version())
            return 0
        if not top.args or top.flags.get("help"):
            sys.stdout.write(usage())
            return 0 if top.flags.get("help") else 1
        name, rest = top.args[0], top.args[1:]
        command = COMMANDS.get(name)
        if command is None:
            raise UsageError(f"No help topic for '{name}'")
        parsed = parse(rest, command.flags)
        _check_arguments(name, command, parsed.args)
        if top.flags.get("systemd-cgroup"):  # a global flag that create and run read
            parsed.flags["systemd-cgroup"] = True
        from hyjail.oci.state import DEFAULT_ROOT, Store
        store = Store(str(top.flags.get("root") or DEFAULT_ROOT))
        return ACTIONS[name](store, parsed, log) or 0
    except HyjailError as e:
        message = one_line(str(e))
        log(message)
        sys.stderr.write(f"{message}\n")
        return 1
    except KeyboardInterrupt:
        return 130


def _check_arguments(name: str, command: Command, args: list[str]) -> None:
    fixed = [a for a in command.args if a != "*"]
    needed = len(fixed) if command.minimum < 0 else command.minimum
    if len(args) < needed:
        raise UsageError(f'"{PROG} {name}" requires {"exactly" if "*" not in command.args and needed == len(fixed) else "at least"} {needed} argument(s)')  # noqa: E501
    if "*" not in command.args and len(args) > len(fixed):
        raise UsageError(f'"{PROG} {name}" takes at most {len(fixed)} argument(s)')


def version() -> str:
    from hyjail import __version__
    from hyjail.oci.state import OCI_VERSION
    return (f"{PROG} version {__version__} (runc {RUNC_COMPATIBLE} command line)\n"
            f"spec: {OCI_VERSION}\n")


def usage() -> str:
    lines = [f"usage: {PROG} [--root DIR] [--log FILE] [--log-format text|json] COMMAND ...",
             "", "commands:"]
    lines += [f"  {name:<10} {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join(lines) + "\n"


# ---- the commands ---------------------------------------------------------------------------

def _create(store, parsed: Parsed, log) -> int:
    from hyjail.oci import runtime
    runtime.create(store, parsed.args[0], str(parsed.flags.get("bundle") or "."),
                   parsed.flags.get("pid-file"), parsed.flags.get("console-socket"), log,
                   systemd_cgroup=bool(parsed.flags.get("systemd-cgroup")))
    return 0


def _start(store, parsed: Parsed, log) -> int:
    from hyjail.oci import runtime
    runtime.start(store, parsed.args[0], log)
    return 0


def _run(store, parsed: Parsed, log) -> int:
    from hyjail.oci import runtime
    return runtime.run(store, parsed.args[0], str(parsed.flags.get("bundle") or "."),
                       parsed.flags.get("pid-file"), parsed.flags.get("console-socket"),
                       bool(parsed.flags.get("detach")), log,
                       systemd_cgroup=bool(parsed.flags.get("systemd-cgroup")))


def _state(store, parsed: Parsed, log) -> int:
    import json  # for its indent (runc's state is indented): only here, never on create's path

    from hyjail.oci import runtime
    sys.stdout.write(json.dumps(runtime.current_state(store, parsed.args[0]), indent=2) + "\n")
    return 0


def _kill(store, parsed: Parsed, log) -> int:
    from hyjail.oci import runtime
    signum = runtime.parse_signal(parsed.args[1] if len(parsed.args) > 1 else "SIGTERM")
    runtime.kill(store, parsed.args[0], signum, bool(parsed.flags.get("all")))
    return 0


def _delete(store, parsed: Parsed, log) -> int:
    from hyjail.oci import runtime
    from hyjail.oci.state import NoSuchContainer
    try:
        runtime.delete(store, parsed.args[0], bool(parsed.flags.get("force")), log)
    except NoSuchContainer:
        if not parsed.flags.get("force"):
            raise
    return 0


def _exec(store, parsed: Parsed, log) -> int:
    from hyjail.oci import execute
    return execute.run(store, parsed.args[0], parsed.args[1:], parsed.flags, log)


def _list(store, parsed: Parsed, log) -> int:
    from hyjail.oci import runtime
    found = runtime.listing(store)
    if parsed.flags.get("format") == "json":
        sys.stdout.write(jsontext.dumps(found) + "\n")
    else:
        sys.stdout.write(runtime.format_list(found, bool(parsed.flags.get("quiet"))))
    return 0


def _ps(store, parsed: Parsed, log) -> int:
    from hyjail.oci import runtime
    pids = runtime.processes(store, parsed.args[0])
    if parsed.flags.get("format") == "json":
        sys.stdout.write(jsontext.dumps(pids) + "\n")
        return 0
    import subprocess
    if not pids:
        return 0
    return subprocess.run(["ps", *parsed.args[1:], "-p", ",".join(map(str, pids))],
                          check=False).returncode


def _pause(store, parsed: Parsed, log) -> int:
    from hyjail.oci import runtime
    runtime.pause(store, parsed.args[0], True)
    return 0


def _resume(store, parsed: Parsed, log) -> int:
    from hyjail.oci import runtime
    runtime.pause(store, parsed.args[0], False)
    return 0


def _features(store, parsed: Parsed, log) -> int:
    import json  # for its indent

    from hyjail.oci import features
    sys.stdout.write(json.dumps(features.document(), indent=2) + "\n")
    return 0


def _spec(store, parsed: Parsed, log) -> int:
    from hyjail.oci import features
    bundle = str(parsed.flags.get("bundle") or ".")
    path = os.path.join(bundle, "config.json")
    if os.path.lexists(path):
        raise HyjailError(f"File {path} exists. Remove it first", 1)
    with open(path, "w") as f:
        import json  # for its indent
        json.dump(features.default_config(bool(parsed.flags.get("rootless"))), f, indent=2)
        f.write("\n")
    return 0


ACTIONS: dict[str, Callable[..., int]] = {
    "create": _create, "start": _start, "run": _run, "state": _state, "kill": _kill,
    "delete": _delete, "exec": _exec, "list": _list, "ps": _ps, "pause": _pause,
    "resume": _resume, "features": _features, "spec": _spec,
}
