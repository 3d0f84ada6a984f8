"""FreeBSD's jail(8) command line: `jail -c|-m|-r|-R|-e ...` and the old positional form.

Owns: parsing jail(8)'s options as FreeBSD's getopt does (combined flags such as `-cm`, `-rc`,
`-qf FILE`), turning the deprecated flags into their parameters (-l exec.clean, -n name,
-s securelevel, -u/-U exec.jail_user, -h ip_hostname, -d allow.dying), choosing the jails
(parameters on the command line; else names, or every jail, of jail.conf), and printing what
FreeBSD's jail prints (`NAME: created`, `NAME: removed`, its usage text), exiting as it does:
1 for its own errors and for usage, the command's status when it runs one. What a parameter
means is `hyjail.jailparams`'; making and removing a jail is `hyjail.lifecycle`'s.
No click: jail(8) is on the hot path of a start, and getopt is what FreeBSD's uses.
"""

from __future__ import annotations

import getopt
import ipaddress
import shlex
import sys

from hyjail.errors import HyjailError

USAGE = """\
usage: jail [-dhilqv] [-J jid_file] [-u username] [-U username]
            -[cmr] param=value ... [command=command ...]
       jail [-dqv] [-f file] -[cmr] [jail]
       jail [-qv] [-f file] -[rR] ['*' | jail ...]
       jail [-dhilqv] [-J jid_file] [-u username] [-U username]
            [-n jailname] [-s securelevel]
            path hostname ip[,...] command ...
       jail [-f file] -e separator
"""
OPTIONS = "cde:f:hiJ:lmn:p:qrRs:u:U:v"


class Usage(Exception):
    """A usage error: FreeBSD prints the usage text (after the reason, if any) and exits 1."""


class Request:
    """What the options ask for."""

    def __init__(self) -> None:
        self.create = self.modify = self.remove = self.remove_bare = False
        self.exhibit: str | None = None
        self.conf: str | None = None
        self.quiet = self.verbose = self.jid_only = False
        self.jid_file: str | None = None
        self.implied: list[str] = []  # parameters the deprecated flags stand for


def parse(argv: list[str]) -> tuple[Request, list[str]]:
    try:
        options, args = getopt.getopt(argv, OPTIONS)
    except getopt.GetoptError as e:  # worded as FreeBSD's getopt(3) words it
        wording = "option requires an argument" if "requires" in e.msg else "illegal option"
        raise Usage(f"jail: {wording} -- {e.opt}") from None
    request = Request()
    for flag, value in options:
        match flag:
            case "-c":
                request.create = True
            case "-m":
                request.modify = True
            case "-r":
                request.remove = True
            case "-R":
                request.remove = request.remove_bare = True
            case "-e":
                request.exhibit = value
            case "-f":
                request.conf = value
            case "-q":
                request.quiet = True
            case "-v":
                request.verbose = True
            case "-i":
                request.jid_only = request.quiet = True
            case "-J":
                request.jid_file = value
            case "-p":
                if not value.isdigit():
                    raise HyjailError(f"-p {value}: not a number", 1)
                # hyjail runs a jail's commands one at a time: any limit holds.
            case "-d":
                request.implied.append("allow.dying")
            case "-h":
                request.implied.append("ip_hostname")
            case "-l":
                request.implied.append("exec.clean")
            case "-n":
                request.implied.append(f"name={value}")
            case "-s":
                request.implied.append(f"securelevel={value}")
            case "-u":
                request.implied += [f"exec.jail_user={value}", "exec.system_jail_user"]
            case "-U":
                request.implied.append(f"exec.jail_user={value}")
    return request, args


def one_line(text: str) -> str:
    """A message naming what was given: whatever it held, one printable line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--help"]:
        sys.stdout.write(USAGE)
        sys.exit(0)
    try:
        status = run(*parse(argv))
    except Usage as e:
        if str(e):
            print(one_line(str(e)), file=sys.stderr)
        sys.stderr.write(USAGE)
        sys.exit(1)
    except HyjailError as e:
        print(f"jail: {one_line(str(e))}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(status)


def run(request: Request, args: list[str]) -> int:
    if request.exhibit is not None:
        return _exhibit(request, args)
    if not (request.create or request.modify or request.remove):
        return _positional(request, args)
    if request.remove and not (request.create or request.modify):
        return _remove(request, args)
    if _are_parameters(args):
        if request.conf is not None:
            raise Usage("jail: -f and parameters on the command line do not go together")
        return _act(request, [*request.implied, *args])
    return _act_on_config(request, args)  # the deprecated flags apply to each jail of it


def _are_parameters(args: list[str]) -> bool:
    """jail(8)'s test: a word with '=' (or a parameter's bare name) is a parameter; a lone
    word that is not is a jail name of jail.conf."""
    from hyjail import jailparams
    if not args:
        return False
    first = args[0]
    name = first.partition("=")[0].removesuffix("+")
    if "=" in first:
        return True
    return name in jailparams.TABLE or jailparams.negated(name) is not None


def _positional(request: Request, args: list[str]) -> int:
    """jail [-n name] [-s securelevel] path hostname ip[,...] command ...: FreeBSD 4's form,
    always a new jail; "" for the ip is no address."""
    if len(args) < 4:
        raise Usage("")
    path, hostname, ips, *command = args
    request.create = request.quiet = True  # FreeBSD 4 printed nothing
    params = [*request.implied, f"path={path}", f"host.hostname={hostname}"]
    for item in filter(None, (ip.strip() for ip in ips.split(","))):
        try:
            version = ipaddress.ip_address(item.split("/", 1)[0]).version
        except ValueError:
            raise HyjailError(f"{item}: not an IP address", 1) from None
        params.append(f"ip{version}.addr+={item}")
    params.append(f"command={command[0]}")
    return _act(request, [*params, *command[1:]])


def _act(request: Request, words: list[str]) -> int:
    from hyjail import lifecycle
    return _apply(request, lifecycle.parse_command_line(words))


def _apply(request: Request, params: dict) -> int:
    from hyjail import lifecycle
    name = _name_of(params)
    existing = _running(name) if name else None
    if existing is not None and request.remove and request.create:  # -rc, -cmr: restart
        _remove_one(request, existing)
        existing = None
    if existing is not None:
        if request.modify:
            lifecycle.modify(existing, params)
            _say(request, f"{existing.name}: updated")
            return 0
        raise HyjailError(f'"{name}" already exists')
    if not request.create:
        raise HyjailError(f'"{name}" not found' if name else "jail -m: needs name or jid")
    status = lifecycle.create(params)
    record = _running(name) if name else None
    shown = record.name if record is not None else name or "jail"
    if request.jid_only and record is not None:
        print(record.jid)
    _say(request, f"{shown}: created")
    if request.jid_file and record is not None:
        _write_jid_file(request.jid_file, record)
    return status


def _name_of(params: dict) -> str | None:
    for key in ("name", "jid"):
        value = params.get(key)
        if isinstance(value, list) and value:
            return value[0]
    return None


def _running(which: str):
    from hyjail.jails import get
    try:
        return get(which).record
    except HyjailError:
        return None


def _say(request: Request, message: str) -> None:
    if not request.quiet:
        print(message)


def _write_jid_file(path: str, record) -> None:
    """-J: the parameters the jail was started with, as `jail -c` takes them."""
    from hyjail import jls
    words = jls.settable_words(record)
    try:
        with open(path, "w") as f:
            f.write(" ".join(shlex.quote(w) for w in words) + "\n")
    except OSError as e:
        raise HyjailError(f"{path}: {e.strerror}") from None


def _remove(request: Request, names: list[str]) -> int:
    from hyjail.jails import list_jails
    if not names:
        raise Usage("")
    if "*" in names:
        records = [j.record for j in list_jails()]
    else:
        records = []
        for name in names:
            record = _running(name)
            if record is None:
                raise HyjailError(f'"{name}" not found')
            records.append(record)
    for record in records:
        _remove_one(request, record)
    return 0


def _remove_one(request: Request, record) -> None:
    from hyjail.jails import stop
    stop(record.jid, run_hooks=not request.remove_bare)
    _say(request, f"{record.name}: removed")


def _config(request: Request):
    """-f FILE, else FreeBSD's default /etc/jail.conf (which may .include jail.conf.d)."""
    from hyjail import jailconf
    if request.conf is not None:
        return jailconf.load(request.conf)
    return jailconf.load_default()


def _act_on_config(request: Request, names: list[str]) -> int:
    from hyjail import jailconf
    config = _config(request)
    if request.remove and not (request.create or request.modify):
        return _remove(request, names)
    # A name the file lacks goes on to resolve(), which says so.
    chosen = [found for name in names for found in (jailconf.jail_names(config, name) or
                                                     [name])] \
        if names else jailconf.jail_names(config)
    status = 0
    for name in chosen:
        params = jailconf.resolve(config, name)
        for word in request.implied:
            key, sep, value = word.partition("=")
            params[key] = [value] if sep else True
        status = _apply(request, params) or status
    return status


def _exhibit(request: Request, names: list[str]) -> int:
    """-e SEPARATOR: each configured non-wildcard jail's parameters, one jail a line."""
    from hyjail import jailconf
    config = _config(request)
    for name in names or jailconf.jail_names(config):
        if "*" in name:
            continue
        params = jailconf.resolve(config, name)
        parts = []
        for key, value in params.items():
            if value is True:
                parts.append(key)
            elif isinstance(value, list):
                parts.append(f"{key}={','.join(value)}")
        print(request.exhibit.join(parts))
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
