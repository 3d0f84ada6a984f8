"""`hyjail run`'s command line: the table of its options, and its parse without click.

Owns OPTIONS, the one table `hyjail.cli` builds its click command from (help, metavars,
choices, defaults), and `parse`, which reads a `hyjail run` command line by that table
without importing click (whose import is a quarter of a jail's start). `parse` takes only
what it is sure of: a command line it cannot read exactly as click would (help, an unknown
option, a bad choice or number, a missing argument) gives None, and the caller hands it to
click, whose message and exit status the user then gets. So there is one grammar (click's)
and one table; this is a shortcut through it, never a second dialect.
"""

from __future__ import annotations


class Option:
    """One option: its names, the keyword it fills, what it takes ("flag", "value", "int" or
    "multiple"), and its help. (A plain class: this module is on every jail's start.)"""

    __slots__ = ("names", "dest", "kind", "help", "metavar", "choices", "default")

    def __init__(self, names: tuple[str, ...], dest: str, kind: str, help: str,
                 metavar: str | None = None, choices: tuple[str, ...] = (),
                 default: str | None = None) -> None:
        self.names, self.dest, self.kind, self.help = names, dest, kind, help
        self.metavar, self.choices, self.default = metavar, choices, default


# The command's environment: shared with `hyjail exec`.
ENVIRONMENT = (
    Option(("--env",), "env", "multiple", metavar="NAME=VALUE",
           help="A variable for the command (the environment is otherwise clean: TERM, and "
                "the user's HOME, SHELL, USER, LOGNAME, PATH)."),
    Option(("--env-file",), "env_file", "multiple", metavar="FILE",
           help="Variables from FILE: NAME=VALUE lines (# comments; a bare NAME takes ours)."),
    Option(("--preserve-env",), "preserve_env", "flag",
           help="Pass our whole environment to the command (then --env over it)."),
)

OPTIONS = (
    Option(("--name",), "name", "value", help="Jail name (default: its JID)."),
    Option(("--net",), "net", "value", choices=("veth", "none"), default="veth",
           help="veth: the jail's addresses on a veth pair; none: loopback only."),
    Option(("--host-ip",), "host_ip", "value", metavar="ADDR[,ADDR]",
           help="Address of the veth's host-side end (default 169.254.77.1, fe80::1)."),
    Option(("--persist",), "persist", "flag",
           help="Start in the background (print the JID); the jail outlives its command "
                "(which may be omitted) until `hyjail stop` or `jail -r`."),
    Option(("--allow",), "allow", "multiple", metavar="NAME[=0|1]",
           help="A FreeBSD allow.* permission for root inside (noNAME or NAME=0 takes one "
                "away): set_hostname and reserved_ports (on by default), raw_sockets, "
                "sysvipc, mlock, chflags, mount, socket_af (see `hyjail features`)."),
    Option(("--userns",), "userns", "flag",
           help="Map the jail's uids and gids 0-65535 onto an unprivileged host range (one "
                "of the jail's own, from 2^30 + JID*65536), so root inside is nobody outside."),
    Option(("--userns-base",), "userns_base", "int", metavar="UID",
           help="With --userns: the first host id of the range."),
    Option(("--device",), "devices", "multiple", metavar="PATH",
           help="A device node of the host's (character or block: /dev/fuse, /dev/net/tun) "
                "at the same path in the jail's /dev, bound, as podman's --device."),
    Option(("--backend",), "backend", "value", choices=("auto", "ns", "trace"), default="auto",
           help="Which providers enforce the rules: auto (the kernel's first), ns (the "
                "kernel's only), trace (ptrace's first; see `hyjail features`)."),
    Option(("--memory",), "memory", "value", metavar="SIZE",
           help="Memory limit (cgroup), e.g. 256M."),
    Option(("--pids",), "pids", "value", metavar="N",
           help="Most processes and threads at once (cgroup)."),
    Option(("--cpus",), "cpus", "value", metavar="N",
           help="CPU time, in CPUs' worth, e.g. 0.5 (cgroup)."),
    Option(("--rlimit",), "rlimit", "multiple", metavar="NAME=SOFT[:HARD]",
           help="A resource limit for the command, e.g. nofile=1024:4096 (never above the "
                "host's hard limit)."),
    Option(("--bind",), "bind", "multiple", metavar="SRC:DST",
           help="Bind the host's SRC (no symlink on its path) at DST in the jail (which must "
                "exist there), in the jail's own mount namespace; nosuid, nodev."),
    Option(("--ro-bind",), "ro_bind", "multiple", metavar="SRC:DST",
           help="The same, read-only."),
    Option(("--tmpfs",), "tmpfs", "multiple", metavar="DST[:OPTIONS]",
           help="A fresh tmpfs at DST, e.g. /scratch:size=64m,mode=1777."),
    Option(("--interface",), "interface", "value", metavar="IFACE",
           help="Put the jail's addresses on the LAN of the host's IFACE (a macvlan or ipvlan "
                "of the jail's own; without a network namespace, aliases of IFACE), instead "
                "of a veth; IP may then carry the LAN's /PREFIX."),
    Option(("--gateway",), "gateway", "value", metavar="ADDR",
           help="With --interface: the jail's default route."),
    Option(("--nat",), "nat", "value", metavar="IFACE",
           help="The jail's (IPv4) traffic masqueraded out of the host's IFACE (nftables, "
                "forwarding on for its veth and IFACE only)."),
    Option(("--publish", "-p"), "publish", "multiple",
           metavar="[HOSTADDR:]HOSTPORT:JAILPORT[/PROTO]",
           help="The host's port forwarded to the jail's (podman's -p; DNAT)."),
    Option(("--dns",), "dns", "multiple", metavar="ADDR",
           help="A name server for the jail's own /etc/resolv.conf (bound over the root's, "
                "which is not changed)."),
    Option(("--read-only",), "read_only", "flag",
           help="The root read-only, with fresh tmpfs on /tmp, /run and /var/tmp (unless "
                "--bind or --tmpfs puts something there)."),
    Option(("--user",), "user", "value", metavar="USER[:GROUP]",
           help="Run the command as USER (and GROUP) of the jail's own passwd and group "
                "(default: root)."),
    Option(("--chdir",), "cwd", "value", metavar="DIR",
           help="The command's directory inside the jail."),
    *ENVIRONMENT,
)

ARGUMENTS = ("path", "hostname", "ip")  # then COMMAND..., everything after them


def parse(argv: list[str]) -> dict | None:
    """The keywords click would give `run` for argv (after `run`), or None when click must
    read it (to print help or a usage error). Options end at the first argument, as for
    click's `allow_interspersed_args=False`; `--` ends them too."""
    by_name = {name: option for option in OPTIONS for name in option.names}
    values: dict = {o.dest: (False if o.kind == "flag" else () if o.kind == "multiple"
                             else o.default) for o in OPTIONS}
    rest = list(argv)
    while rest and rest[0].startswith("-") and rest[0] != "-":
        word = rest.pop(0)
        if word == "--":
            break
        name, equals, value = word.partition("=") if word.startswith("--") else \
            (word[:2], bool(word[2:]), word[2:])
        option = by_name.get(name)
        if option is None:
            return None  # help, or what click will name as unknown
        if option.kind == "flag":
            if equals:
                return None
            values[option.dest] = True
            continue
        if not equals:
            if not rest or rest[0].startswith("-"):
                return None  # a missing value, or one click may read otherwise
            value = rest.pop(0)
        if option.choices and value not in option.choices:
            return None
        if option.kind == "int":
            try:
                value = int(value)  # as click's int type reads it
            except ValueError:
                return None
        if option.kind == "multiple":
            values[option.dest] = (*values[option.dest], value)
        else:
            values[option.dest] = value
    if len(rest) < len(ARGUMENTS):
        return None
    values.update(zip(ARGUMENTS, rest, strict=False))
    values["command"] = tuple(rest[len(ARGUMENTS):])
    return None if usage_error(values) else values


def usage_error(values: dict) -> str | None:
    """What is wrong with a parsed command line that click's grammar lets through."""
    if not values["command"] and not values["persist"]:
        return "Missing argument 'COMMAND...' (only --persist jails have none)."
    if values["userns_base"] is not None and not values["userns"]:
        return "--userns-base needs --userns"
    return None


def start(values: dict) -> int:
    """Run the jail a parsed command line asks for (its keywords as `parse` gives them);
    returns the exit status (with --persist: prints the JID)."""
    from hyjail import environment, fstab, limits
    from hyjail.allow import parse_option
    from hyjail.spec import JailSpec
    from hyjail.supervisor import run, start_detached
    options = dict(values)
    path, hostname, ip, command = (options.pop(key) for key in (*ARGUMENTS, "command"))
    userns, userns_base = options.pop("userns"), options.pop("userns_base")
    if userns:
        options["userns_base"] = -1 if userns_base is None else userns_base
    allow, rlimit = options.pop("allow"), options.pop("rlimit")
    memory, pids, cpus = options.pop("memory"), options.pop("pids"), options.pop("cpus")
    mounts = fstab.from_options(options.pop("bind"), options.pop("ro_bind"), options.pop("tmpfs"))
    environ = environment.from_options(options.pop("env"), options.pop("env_file"))
    spec = JailSpec.create(path, hostname, ip, command,
                           allow_changes=tuple(parse_option(a) for a in allow),
                           limits=limits.create(memory, pids, cpus, rlimit),
                           mounts=mounts, environ=environ, **options)
    if spec.persist:
        print(start_detached(spec).jid, flush=True)
        return 0
    return run(spec)
