"""FreeBSD jail(8)'s create and remove, as an explicit ordered list of steps with hooks.

Owns: turning jail parameters (from `jail -c name=value...` or a jail.conf block) into a
JailSpec and hook lists, by `hyjail.jailparams`' table, and the order in which things happen:

  create:  exec.prepare, exec.prestart (host) -> the jail -> exec.created (host) ->
           exec.start / command (inside) -> exec.poststart (host)
  remove:  exec.prestop (host) -> exec.stop (inside) -> SIGTERM/SIGKILL -> exec.poststop,
           exec.release (host)

Every jail `jail -c` makes is started held by its pid 1; without `persist` it then lives, as
FreeBSD's do, while it has processes (`hyjail.lifetime`), not just while exec.start runs: an
rc-style `exec.start = "/bin/sh /etc/rc"` leaves its daemons running in the jail. Host hooks
run with `/bin/sh -c` and JID, JNAME and JPATH in their environment. A failing prestart
leaves nothing behind; a failing later create step removes the jail again. A jail's remove
hooks are kept in its registry record, so `jail -r` and `hyjail stop` run them without the
configuration at hand.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from hyjail import jailparams, limits
from hyjail.errors import SetupError
from hyjail.frozen import replace
from hyjail.hooks import HookOptions, console, run_host_hooks
from hyjail.jailparams import HOOKS_CREATE, HOOKS_REMOVE, LIMITS
from hyjail.limits import Limits
from hyjail.spec import JailSpec

Params = dict[str, list[str] | bool]  # as given: a list of strings, or a bare (no)name
Typed = dict[str, object]  # by the table: each parameter's value as its type has it
SYSV = ("sysvmsg", "sysvsem", "sysvshm")
DEFAULT_PATH = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"


def parse_command_line(words: Iterable[str]) -> Params:
    """`name=value` / `name+=value` / `name` / `noname` words, as jail -c takes them;
    `command=` must be last, and the words after it are the command's arguments. A list
    parameter's value is comma-separated; any other's is one value, commas and all."""
    params: Params = {}
    words = list(words)
    for index, word in enumerate(words):
        name, sep, value = word.partition("=")
        if name == "command" and sep:
            params["command"] = [value, *words[index + 1:]]  # the rest is its argv
            break
        if not sep:  # a boolean: `name`, or `noname` (the later of the two wins)
            plain = jailparams.negated(name)
            params.pop(plain or f"no{name}", None)
            params[plain or name] = plain is None
        elif name.endswith("+"):
            previous = params.get(name[:-1])
            params[name[:-1]] = [*(previous if isinstance(previous, list) else []),
                                 *_split(name[:-1], value)]
        else:
            params[name] = _split(name, value)
    return params


def _split(name: str, value: str) -> list[str]:
    row = jailparams.TABLE.get(name)
    return value.split(",") if row is not None and row.kind == "list" else [value]


def typed(params: Params) -> Typed:
    """Each parameter by the table: `noX` read as X off, a value in its type, anything the
    table refuses (or does not know) refused in one line."""
    result: Typed = {}
    for name, given in params.items():
        if given is True and (plain := jailparams.negated(name)) is not None:
            name, given = plain, False
        result[name] = jailparams.value(name, given)
    return result


def _allow_changes(values: Typed) -> list[tuple[str, bool]]:
    changes = [(name.removeprefix("allow."), bool(value)) for name, value in values.items()
               if name.startswith("allow.") and jailparams.TABLE[name].status == "mapped"]
    sysv = {values[name] for name in SYSV if name in values}
    if len(sysv) > 1:
        raise SetupError("sysvmsg, sysvsem, sysvshm: hyjail grants System V IPC as a whole "
                         "(allow.sysvipc): give the three the same value")
    if sysv:
        changes.append(("sysvipc", sysv.pop() == "new"))
    return changes


def _limits(values: Typed) -> Limits:
    rlimits = [f"{name.removeprefix('rlimit.')}={values[name]}"
               for name in values if name.startswith("rlimit.")]
    return limits.create(*(values.get(name) for name in LIMITS), rlimits=rlimits)


def _addresses(values: Typed) -> tuple[list[str], bool, str | None]:
    """The jail's addresses (ip4.addr, ip6.addr: `[iface|]addr[/mask]`; a mask is kept for a
    jail on the LAN, whose prefix it is, and is no concern of a jail on a veth), whether it
    keeps a network of its own at all (ip4 and ip6 both `disable`: only its loopback), and
    the LAN interface the `iface|` forms and `interface` name (one for all)."""
    found = []
    interface = values.get("interface")
    named = {str(interface)} if interface else set()
    for family, key in ((4, "ip4.addr"), (6, "ip6.addr")):
        disabled = values.get(f"ip{family}") == "disable"
        if values.get(f"ip{family}") == "inherit" and values.get(key):
            raise SetupError(f"{key} with ip{family}=inherit: the jail has every host "
                             f"address already")
        for item in values.get(key) or []:
            text = str(item).strip().split(" ", 1)[0]
            iface, bar, text = text.rpartition("|")
            if bar:
                named.add(iface)
            address = text.split("/", 1)[0]
            try:
                version = ipaddress.ip_address(address).version
            except ValueError:
                raise SetupError(f"{key}={item}: not an IPv{family} address") from None
            if version != family:
                raise SetupError(f"{key}={item}: not an IPv{family} address")
            if disabled:
                raise SetupError(f"{key} with ip{family}=disable: the jail has no IPv{family}")
            found.append(text)
    if len(named) > 1:
        raise SetupError(f"interface: {', '.join(sorted(named))}: a jail is on one LAN")
    lan = named.pop() if named else None
    if lan is None and values.get("vnet") != "new":  # a mask is a LAN's, or vnet's, prefix
        found = [a.split("/", 1)[0] for a in found]
    no_network = values.get("ip4") == "disable" and values.get("ip6") == "disable"
    return found, no_network, lan


def to_spec(values: Typed) -> JailSpec:
    """The jail these parameters describe (held by its pid 1: the command and exec.start
    run by `create`)."""
    path = values.get("path") or "/"  # FreeBSD: a jail without a path has the host's root
    addresses, no_network, interface = _addresses(values)
    vnet = values.get("vnet") == "new"
    if interface and vnet:
        raise SetupError("interface with vnet: a vnet jail gets its interfaces whole "
                         "(vnet.interface)")
    if values.get("vnet.interface") and not vnet:
        raise SetupError("vnet.interface: needs vnet")
    name = values.get("name")
    jid = values.get("jid")
    if name is not None and str(name).isdigit():  # a numbered block or name=5: the JID
        jid, name = jid if jid is not None else int(str(name)), None
    hostname = values.get("host.hostname") or name or (str(jid) if jid else "jail")
    if values.get("command") and values.get("exec.start"):
        raise SetupError("command and exec.start: give one or the other")
    spec = JailSpec.create(
        str(path), str(hostname), ",".join(addresses) or "127.0.0.1", [],
        name=name, net="none" if no_network else "veth", persist=True, jid=jid,
        environ={}, allow_changes=tuple(_allow_changes(values)), limits=_limits(values),
        domainname=str(values.get("host.domainname") or ""), any_hostname=True,
        osrelease=str(values.get("osrelease") or ""), mounts=_mounts(values, str(path)),
        inherit_ip=frozenset(v for v in (4, 6) if values.get(f"ip{v}") == "inherit"),
        interface=interface, gateway=values.get("hyjail.gateway"),
        nat=values.get("hyjail.nat"), publish=tuple(values.get("hyjail.publish") or ()),
        vnet_interfaces=tuple(values.get("vnet.interface") or ()) if vnet else None,
        devfs_ruleset=_devfs_ruleset(values))
    return spec


def _devfs_ruleset(values: Typed) -> int:
    from hyjail.ns.mounts import DEVFS_RULESETS
    ruleset = int(values.get("devfs_ruleset") or 0)
    if ruleset not in DEVFS_RULESETS:
        raise SetupError(f"devfs_ruleset={ruleset}: hyjail has FreeBSD's default rulesets "
                         f"(0-5: /etc/defaults/devfs.rules), not a local one")
    return ruleset


def _mounts(values: Typed, path: str) -> tuple:
    """mount's fstab lines, then mount.fstab's file (FreeBSD's order), as JailMounts."""
    lines, table = values.get("mount") or [], values.get("mount.fstab")
    if not (lines or table):
        return ()
    from hyjail import fstab
    from hyjail.spec import check_root
    root = check_root(path)
    found = fstab.from_lines(lines, path, root)
    if table:
        found += fstab.from_file(str(table), path, root)
    return tuple(found)


def _shown_params(values: Typed) -> dict[str, object]:
    """What jls shows beyond the record's own fields: every kernel parameter given."""
    own = {"jid", "name", "path", "host.hostname", "ip4.addr", "ip6.addr", "persist"}
    return {name: value for name, value in values.items()
            if name in jailparams.TABLE and jailparams.TABLE[name].jail and name not in own}


def hooks(values: Typed, names: Iterable[str]) -> dict[str, list[str]]:
    return {name: list(values[name]) for name in names if values.get(name)}


def _hook_options(values: Typed) -> HookOptions:
    timeout = values.get("exec.timeout")
    log = values.get("exec.consolelog")
    return HookOptions(timeout=float(timeout) if timeout else None,
                       user=values.get("exec.system_user"),
                       consolelog=str(log) if log else None,
                       jail_user=values.get("exec.jail_user"),
                       system_jail_user=bool(values.get("exec.system_jail_user")),
                       clean=bool(values.get("exec.clean")))


def create(params: Params, verbose: bool = False) -> int:
    """Create a jail from its parameters, with its hooks, as `jail -c` does; returns the
    status `jail` exits with: the command's when `command` is given, else 0. verbose: each
    command told before it runs (jail -v)."""
    values = typed(params)
    spec = to_spec(values)
    with console(_hook_options(values).consolelog, spec.path):
        return _create(values, spec, verbose)


def _create(values: Typed, spec: JailSpec, verbose: bool) -> int:
    from hyjail import jails, lifetime, supervisor
    from hyjail.registry import Registry

    persist = bool(values.get("persist"))
    command = list(values.get("command") or [])
    starts = list(values.get("exec.start") or [])
    if not (persist or command or starts):
        raise SetupError("a jail needs persist, exec.start or command (FreeBSD: it would "
                         "have no process to live by)")
    options = replace(_hook_options(values), verbose=verbose)
    inside = options.inside()
    name = spec.name or ""
    create_hooks = hooks(values, HOOKS_CREATE)
    for hook in ("exec.prepare", "exec.prestart"):
        run_host_hooks(create_hooks.get(hook, []), hook, "", name, spec.path, options)
    registry = Registry()
    # until_empty: for nopersist, now or by -m; the supervisor's own log is exec.consolelog
    record = supervisor.start_detached(spec, until_empty=True, log=options.consolelog)
    status = 0
    try:
        extra = {"jail_params": _shown_params(values),
                 "hook_options": options.to_record()}
        extra["lifetime"] = "pending"  # armed below without persist, or by `jail -m nopersist`
        if not persist:
            extra["persist"] = None
        record = jails.remember(record, hooks(values, HOOKS_REMOVE),
                                str(values.get("stop.timeout", 10)), extra=extra)
        run_host_hooks(create_hooks.get("exec.created", []), "exec.created", record.jid,
                       record.name, record.path, options)
        for start in starts:
            options.tell(record.name, start, inside=True)
            code = jails.exec_in(record.jid, ["/bin/sh", "-c", start],
                                 **options.inside(timed=True))
            if code != 0:
                raise SetupError(f"{record.name}: exec.start {start!r} failed with status "
                                 f"{code}")
        if command:
            options.tell(record.name, " ".join(command), inside=True)
            status = jails.exec_in(record.jid, command, **inside)
        run_host_hooks(create_hooks.get("exec.poststart", []), "exec.poststart", record.jid,
                       record.name, record.path, options)
    except BaseException:
        jails.stop(record.jid, timeout=2, run_hooks=False)
        raise
    if not persist:
        lifetime.end_if_empty(lifetime.arm(record, registry), registry)
    return status


# What `jail -m` can change on a running jail; every other parameter only to what it is.
MODIFIABLE = ("persist",)


def modify(record, params: Params) -> None:
    """`jail -m`: persist on or off (off: the jail ends once it has no process, FreeBSD's
    lifetime); any other parameter given must be what the jail has."""
    from hyjail import lifetime
    from hyjail.registry import Registry

    values = typed(params)
    current = {"name": record.name, "jid": record.jid, "path": record.path,
               "host.hostname": record.hostname}
    for name, value in values.items():
        if name in MODIFIABLE:
            continue
        if name in current and str(current[name]) == str(value):
            continue
        raise SetupError(f"{name}: cannot be changed on a running jail")
    if "persist" not in values:
        return
    registry = Registry()
    fresh = registry.read(record.jid) or record
    if values["persist"]:
        registry.update(fresh, params={**fresh.params, "persist": "1",
                                       **({"lifetime": "pending"} if "lifetime" in fresh.params
                                          else {})})
        return
    if not fresh.params.get("lifetime"):
        raise SetupError("nopersist: this jail was started without FreeBSD's lifetime watch "
                         "(hyjail run --persist): stop it with jail -r")
    updated = registry.update(fresh, params={k: v for k, v in fresh.params.items()
                                             if k != "persist"})
    lifetime.end_if_empty(lifetime.arm(updated, registry), registry)
