"""FreeBSD's jail(8) command line: `jail -c|-m|-r|-R|-e ...` and the old positional form.

Owns: parsing jail(8)'s options as FreeBSD's getopt does (combined flags such as `-cm`, `-rc`,
`-qf FILE`), turning the deprecated flags into their parameters (-l exec.clean, -n name,
-s securelevel, -u/-U exec.jail_user, -h ip_hostname, -d allow.dying), choosing the jails
(parameters on the command line; else names, or every jail, of jail.conf), and printing what
FreeBSD's jail prints (`NAME: created`, `NAME: removed`, its usage text), exiting as it does:
1 for its own errors and for usage, the command's status when it runs one. What a parameter
means is `hyjail.jailparams`'; making and removing a jail is `hyjail.lifecycle`'s.

Also jail(8)'s own two parameters that act before a jail is made: `depend` (the order in
which the jails of jail.conf are created and removed, `hyjail.depend`'s plan, run here: a
failing jail is reported and the others go on, as FreeBSD's main loop does, exit 1) and
`ip_hostname` (host.hostname's addresses added to ip4.addr / ip6.addr, as config.c's
check_intparams does, before the parameters reach lifecycle).
No click: jail(8) is on the hot path of a start, and getopt is what FreeBSD's uses.
"""

from __future__ import annotations

import ipaddress
import os
import sys

from hyjail import getopt3
from hyjail.errors import HyjailError, one_line

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
        options, args = getopt3.parse(argv, OPTIONS)
    except getopt3.OptionError as e:
        raise Usage(f"jail: {e}") from None
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
    """One jail, its parameters on the command line. Its dependencies must be running
    already: there is no configuration to create them from (state.c's dep_setup without
    one)."""
    from hyjail import depend, lifecycle
    params = lifecycle.parse_command_line(words)
    for dep in _dependencies(params):
        if _running(dep) is None:
            raise HyjailError(depend.NONEXISTENT.format(dep))
    return _apply(request, params)


def _apply(request: Request, params: dict) -> int:
    name = _name_of(params)
    existing = _running(name) if name else None
    if existing is not None and request.remove and request.create:  # -rc, -cmr: restart
        _remove_one(request, existing)
        existing = None
    if existing is not None:
        if request.modify:
            return _modify(request, existing, params)
        raise HyjailError(f'"{name}" already exists')
    if not request.create:
        raise HyjailError(f'"{name}" not found' if name else "jail -m: needs name or jid")
    return _create(request, params)


def _create(request: Request, params: dict, shown: str | None = None) -> int:
    """Make one jail; `shown`: what FreeBSD calls it in `NAME: created` (a configured
    jail's block name, which for a numbered block is its JID), else its name."""
    from hyjail import lifecycle
    name = _name_of(params)
    status = lifecycle.create(_for_lifecycle(params), verbose=request.verbose)
    record = _running(name) if name else None
    shown = shown or (record.name if record is not None else name or "jail")
    if request.jid_only and record is not None:
        print(record.jid, flush=True)
    _say(request, f"{shown}: created")
    if request.jid_file and record is not None:
        _write_jid_file(request.jid_file, record)
    return status


def _modify(request: Request, record, params: dict, shown: str | None = None) -> int:
    from hyjail import lifecycle
    lifecycle.modify(record, _for_lifecycle(params))
    _say(request, f"{shown or record.name}: updated")
    return 0


def _for_lifecycle(params: dict) -> dict:
    """The parameters less jail(8)'s own: `depend` was this module's to act on, and
    `ip_hostname` becomes the addresses it stands for."""
    params = {k: v for k, v in params.items() if k != "depend"}
    return _ip_hostname(params, _name_of(params))


def _dependencies(params: dict) -> list[str]:
    """A jail's `depend` list (checked by the table: a bare `depend` needs a value)."""
    from hyjail import jailparams
    given = params.get("depend")
    return [] if given is None else list(jailparams.value("depend", given))


def _ip_hostname(params: dict, name: str | None) -> dict:
    """ip_hostname: the addresses host.hostname resolves to (getaddrinfo(3), as config.c's
    check_intparams asks it: any family, stream sockets) added to ip4.addr and ip6.addr,
    each once, none of a family that is `disable`d. Without host.hostname there is nothing
    to resolve, as on FreeBSD; a name that does not resolve is FreeBSD's one line."""
    from hyjail import jailparams
    if params.get("noip_hostname") is True:  # jail.conf's `noip_hostname;`
        return {k: v for k, v in params.items() if k != "noip_hostname"}
    given = params.get("ip_hostname")
    params = {k: v for k, v in params.items() if k != "ip_hostname"}
    if given is None or not jailparams.value("ip_hostname", given):
        return params
    hostname = params.get("host.hostname")
    if not isinstance(hostname, list) or not hostname or not hostname[-1]:
        return params
    host = hostname[-1]  # a scalar's last value is its value (config.c's string_param)
    import socket  # only here: a lookup is rare, and jail(8) is on a start's hot path
    who = f"{name}: " if name else ""
    try:
        answers = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise HyjailError(f"{who}host.hostname {host}: {e.strerror}") from None
    except (UnicodeError, ValueError) as e:  # not a name the resolver takes (IDNA, NUL)
        raise HyjailError(f"{who}host.hostname {host}: {e}") from None
    for family, key in ((socket.AF_INET, "ip4"), (socket.AF_INET6, "ip6")):
        given_family = params.get(key)
        if isinstance(given_family, list) and given_family[-1:] == ["disable"]:
            continue
        addresses = params.get(f"{key}.addr")
        if addresses is not None and not isinstance(addresses, list):
            continue  # a bare ip4.addr: lifecycle says what is wrong with it
        addresses = list(addresses or [])
        have = {_bare_address(a) for a in addresses}
        for answer_family, _, _, _, sockaddr in answers:
            address = str(sockaddr[0]).split("%", 1)[0]  # inet_ntop's form: no %scope
            if answer_family != family or _bare_address(address) in have:
                continue
            # Every jail's own loopback holds ::1 already, and hyjail's addresses refuse it
            # (it is reserved): a resolver that maps the name to ::1 too must not fail it.
            if family == socket.AF_INET6 and ipaddress.ip_address(address).is_loopback:
                continue
            have.add(_bare_address(address))
            addresses.append(address)
        if addresses:
            params[f"{key}.addr"] = addresses
    return params


def _bare_address(item: str) -> str:
    """An ip4.addr/ip6.addr item's address alone (no iface| prefix, /mask or options), in
    one spelling, to tell a resolved address from one given already."""
    text = item.strip().rpartition("|")[2].split("/", 1)[0].split(" ", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


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
        print(message, flush=True)  # before the next jail's hooks write to the same stdout


def _warn(message: str) -> None:
    """A failure that does not end jail(8): the other jails go on (FreeBSD's warnx)."""
    print(f"jail: {one_line(message)}", file=sys.stderr, flush=True)


def _write_jid_file(path: str, record) -> None:
    """-J: the parameters the jail was started with, as `jail -c` takes them."""
    import shlex  # it imports re: only for -J, never on every start

    from hyjail import jls
    words = jls.settable_words(record)
    try:
        with open(path, "w") as f:
            f.write(" ".join(shlex.quote(w) for w in words) + "\n")
    except OSError as e:
        raise HyjailError(f"{path}: {e.strerror}") from None


def _remove_one(request: Request, record, shown: str | None = None) -> None:
    from hyjail.jails import stop
    stop(record.jid, run_hooks=not request.remove_bare, verbose=request.verbose)
    _say(request, f"{shown or record.name}: removed")


def _config(request: Request):
    """-f FILE, else FreeBSD's default /etc/jail.conf (which may .include jail.conf.d)."""
    from hyjail import jailconf
    if request.conf is not None:
        return jailconf.load(request.conf)
    return jailconf.load_default()


def _removal_config(request: Request):
    """What -r reads for the dependencies of what it removes: the file if there is one (no
    file is no dependencies, as FreeBSD's stat(2) check has it); -R reads none."""
    from hyjail import jailconf
    if request.remove_bare:
        return jailconf.Config()
    if request.conf is None:
        return jailconf.load_default(missing_ok=True)
    return jailconf.load(request.conf) if os.path.exists(request.conf) else jailconf.Config()


class _Configured:
    """The jails of a jail.conf as jail(8) acts on them: each one's parameters (resolved once,
    with what the deprecated flags stand for), its dependencies, its running jail; and what
    this run of jail(8) has made of them (`failed`, `error`)."""

    def __init__(self, config, implied: list[str]) -> None:
        from hyjail import jailconf
        self.config = config
        self.names = jailconf.jail_names(config)
        self._defined = set(self.names)
        self._implied = implied
        self._params: dict[str, dict | HyjailError] = {}
        self.failed: set[str] = set()  # jails whose failure skips those waiting for them
        self.error = False  # anything failed: jail(8) exits 1

    def defined(self, name: str) -> bool:
        return name in self._defined

    def params(self, name: str) -> dict:
        from hyjail import jailconf
        if name not in self._params:
            try:
                params = jailconf.resolve(self.config, name)
            except HyjailError as e:
                self._params[name] = e
            else:
                for word in self._implied:
                    key, sep, value = word.partition("=")
                    params[key] = [value] if sep else True
                self._params[name] = params
        found = self._params[name]
        if isinstance(found, HyjailError):
            raise found
        return dict(found)

    def depends_on(self, name: str) -> list[str]:
        return _dependencies(self.params(name))

    def dependents_of(self, name: str) -> list[str]:
        found = []
        for other in self.names:
            try:
                if name in self.depends_on(other):
                    found.append(other)
            except HyjailError:
                continue  # that jail's own problem, said when it is acted on
        return found

    def record(self, name: str):
        """The running jail a configured name (or a running jail's name or JID) stands for."""
        if not self.defined(name):
            return _running(name)
        try:
            return _running(_name_of(self.params(name)) or name)
        except HyjailError:
            return _running(name)

    def key_of(self, record) -> str:
        """A running jail as the configuration names it, if it does."""
        for key in (record.name, str(record.jid)):
            if key and self.defined(key):
                return key
        return record.name or str(record.jid)

    def fail(self, message: str, name: str | None = None) -> None:
        _warn(message)
        self.error = True
        if name is not None:
            self.failed.add(name)

    def skipped(self, request: Request, name: str, waits: list[str], named: bool) -> bool:
        """Whether name waits for a jail that failed: it fails too, as `NAME: skipped` when it
        was asked for (FreeBSD says nothing of a jail only pulled in, nor under -q)."""
        if not any(other in self.failed for other in waits):
            return False
        self.failed.add(name)
        self.error = True
        if named and not request.quiet:
            _warn(f"{name}: skipped")
        return True


def _remove(request: Request, names: list[str]) -> int:
    """-r / -R: the jails named (by name or JID, `*` for every running one), each after the
    running jails of the configuration that depend on it (state.c: when a jail is removed,
    what depends on it goes first), those that depend on nothing in the order given."""
    from hyjail import depend
    from hyjail.jails import list_jails
    if not names:
        raise Usage("")
    jails = _Configured(_removal_config(request), [])
    targets: dict[str, bool] = {}  # jail -> named (else every jail: `*`)
    for name in names:
        if name == "*":
            # Every running jail, by JID: FreeBSD's `*` is the file's jails, hyjail's every
            # one (jails are made without a file too); the file still orders them.
            for jail in list_jails():
                targets.setdefault(jails.key_of(jail.record), False)
        elif jails.defined(name):
            targets[name] = True
        elif (record := _running(name)) is not None:
            targets[jails.key_of(record)] = True
        else:
            jails.fail(f'"{name}" not found')
    plan = depend.removal(targets, jails.dependents_of)
    for name in plan.order:
        if name in jails.failed or jails.skipped(request, name, plan.waits[name],
                                                 targets.get(name, False)):
            continue
        record = jails.record(name)
        if record is None:
            if targets.get(name):  # only a jail asked for is missing; a dependent need not run
                jails.fail(f'"{name}" not found')
            continue
        try:
            _remove_one(request, record, name)
        except HyjailError as e:
            jails.fail(str(e), name)
    return 1 if jails.error else 0


def _act_on_config(request: Request, names: list[str]) -> int:
    """-c, -m, -cm, -rc, -cmr on jails of jail.conf (those named, else all): dependencies
    created first, all of one jail's before it (the ones running left alone); for -rc, the
    running jails that depend on a restarted one removed first and not made again (FreeBSD's
    dep_check stops them, and nothing starts them). A jail named by a wildcard or by no name
    that already runs is left alone; one named that runs "already exists"."""
    from hyjail import depend, jailconf
    jails = _Configured(_config(request), request.implied)
    targets: dict[str, bool] = {}  # jail -> named (not by a wildcard or by no name)
    for name in names:
        found = jailconf.jail_names(jails.config, name)
        if not found:
            jailconf.resolve(jails.config, name)  # says the file lacks it
        for jail in found:
            targets[jail] = targets.get(jail, False) or not jailconf.is_wildcard(name)
    if not names:
        targets = dict.fromkeys(jails.names, False)

    restart = request.remove and request.create
    action: dict[str, str] = {}
    for name, named in targets.items():
        running = jails.record(name) is not None
        action[name] = ("create" if request.create else "missing") if not running else \
            "restart" if restart else "modify" if request.modify else \
            "exists" if named else "running"
    status = 0
    if restart:  # stopped first, what depends on them before them
        stopping = [name for name in targets if action[name] == "restart"]
        plan = depend.removal(stopping, jails.dependents_of)
        for name in plan.order:
            if name in jails.failed or jails.skipped(request, name, plan.waits[name],
                                                     name in targets):
                continue
            if (record := jails.record(name)) is not None:
                try:
                    _remove_one(request, record, name)
                except HyjailError as e:
                    jails.fail(str(e), name)

    creating = [name for name in targets if action[name] in ("create", "restart")
                and name not in jails.failed]
    plan = depend.creation(creating, jails.depends_on, jails.defined,
                           lambda name: _running(name) is not None)
    for name, messages in plan.problems.items():  # before anything is made, as dep_setup
        for message in messages:
            jails.fail(message, name)
    done = 0  # plan.order[:done] is done: each target's dependencies come right before it
    for name in targets:
        if action[name] in ("create", "restart"):
            if name not in plan.order:
                continue
            while done <= plan.order.index(name):
                step = plan.order[done]
                done += 1
                status = _create_step(request, jails, step, plan.waits[step],
                                      targets.get(step, False)) or status
        elif action[name] == "modify":
            try:
                status = _modify(request, jails.record(name), jails.params(name),
                                 name) or status
            except HyjailError as e:
                jails.fail(str(e), name)
        elif action[name] == "exists":  # not a failure of what depends on it: it runs
            jails.fail(f'"{name}" already exists')
        elif action[name] == "missing":
            jails.fail(f'"{name}" not found', name)
    return status or (1 if jails.error else 0)


def _create_step(request: Request, jails: _Configured, name: str, waits: list[str],
                 named: bool) -> int:
    if name in jails.failed or jails.skipped(request, name, waits, named):
        return 0
    if jails.record(name) is not None:
        return 0  # a dependency already running: left alone
    try:
        return _create(request, jails.params(name), name)
    except HyjailError as e:
        jails.fail(str(e), name)
        return 0


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
