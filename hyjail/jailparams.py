"""FreeBSD's jail parameters: the one table of them, and reading values by it.

Owns: every parameter jail(8) documents (and hyjail's own: memory, pids, cpus, rlimit.NAME),
each with its type, its default, what it means on FreeBSD, what hyjail makes of it on Linux,
and which of three it is:

  mapped   implemented with a Linux mapping (the `linux` text says which);
  noop     accepted, because the behaviour FreeBSD asks for already holds (the `linux` text
           says why): some only for some values (`values`), the rest refused;
  refused  one line with the reason, never a bare "unknown parameter".

`jail -c`/`-m`, jail.conf, `jls`, `--libxo`, `hyjail ls --json`, the record and the README's
table all read this table; nothing about a parameter is written anywhere else. A name that
is not FreeBSD's (nor hyjail's) is an unknown parameter.

Values arrive as jail(8) and jail.conf give them: a list of strings (one per comma-separated
item or `+=`), or True/False for a bare `name` / `noname`. `value()` turns them into the
parameter's type, or raises SetupError naming the parameter and the bad value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

from hyjail import allow
from hyjail.errors import SetupError

BACKENDS = ("ns", "hybrid", "trace")
NETWORKING = "belongs to hyjail's networking (jails on the LAN: interface=, vnet); not yet"
NO_FREEBSD = "a FreeBSD kernel facility Linux does not have"


class Parameter:
    """One row. kind: bool, int, string, list (comma-separated values, `+=` appends),
    choice (one of `choices`), command (a command line per value). jail: a parameter the
    kernel keeps and jls shows (FreeBSD's "true jail parameters"), else a pseudo-parameter
    only jail(8) uses. values: for a noop or refused row, the values accepted (as a no-op)
    anyway; for a mapped row, the values refused, each with why."""

    __slots__ = ("name", "kind", "status", "default", "freebsd", "linux", "choices", "jail",
                 "read_only", "values", "backends")

    def __init__(self, name: str, kind: str, status: str, freebsd: str, linux: str, *,
                 default: object = None, choices: tuple[str, ...] = (), jail: bool = True,
                 read_only: bool = False, values: Mapping[str, str] | None = None,
                 backends: tuple[str, ...] = BACKENDS):
        self.name, self.kind, self.status = name, kind, status
        self.freebsd, self.linux = freebsd, linux
        self.default, self.choices, self.jail, self.read_only = default, choices, jail, read_only
        self.values = dict(values or {})
        self.backends = backends

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, {self.kind}, {self.status})"


def _p(*args, **kwargs) -> Parameter:
    return Parameter(*args, **kwargs)


_HOOK = "Command(s) run "
_ROWS: tuple[Parameter, ...] = (
    # ---- the kernel's parameters (jls shows them) ---------------------------------------
    _p("jid", "int", "mapped", "The jail identifier.", "the JID in hyjail's registry (from 1)"),
    _p("name", "string", "mapped", "The jail name (no '.'); defaults to the JID.",
       "the jail's name in the registry, for jexec, jls, jail -r"),
    _p("path", "string", "mapped", "The directory which is to be the root of the jail.",
       "the jail's root: pivot_root in a mount namespace (ns), chroot (trace); without one, "
       "the host's / (as FreeBSD), its state masked", default="/"),
    _p("ip4.addr", "list", "mapped", "IPv4 addresses of the jail ([iface|]addr[/mask]).",
       "the jail's addresses: on its veth (ns) or enforced by the tracer (trace); a /mask is "
       "accepted, an interface| prefix belongs to networking"),
    _p("ip6.addr", "list", "mapped", "IPv6 addresses of the jail ([iface|]addr[/prefix]).",
       "as ip4.addr"),
    _p("ip4", "choice", "mapped", "IPv4: new (ip4.addr only), inherit (every host address), "
       "disable (none).", "new: the jail's addresses only; disable: no IPv4 address (with "
       "ip6 disabled too, no network but its own loopback); inherit: the host's network "
       "and every address on it, unchanged (no ip4.addr), R3 held by the jail's tracer for "
       "the rest (abstract unix names, raw sockets, other families): a hybrid jail",
       choices=("new", "inherit", "disable"), default="new"),
    _p("ip6", "choice", "mapped", "IPv6: new, inherit or disable, as ip4.", "as ip4",
       choices=("new", "inherit", "disable"), default="new"),
    _p("ip4.saddrsel", "bool", "noop", "Source address selection among the jail's IPv4 "
       "addresses.", "the jail's traffic always leaves from one of its own addresses (R3)",
       default=True, values={"1": "", "0": ""}),
    _p("ip6.saddrsel", "bool", "noop", "As ip4.saddrsel, for IPv6.", "as ip4.saddrsel",
       default=True, values={"1": "", "0": ""}),
    _p("vnet", "choice", "mapped", "A virtual network stack of the jail's own.",
       "new (or a bare vnet): a network namespace of the jail's own with only its loopback "
       "and the interfaces vnet.interface gives it; inherit: as without vnet (a veth)",
       choices=("inherit", "new"), default="inherit", backends=("ns",)),
    _p("host.hostname", "string", "mapped", "The hostname of the jail.",
       "the hostname of the jail's UTS namespace (ns) or the tracer's answer (trace)"),
    _p("host.domainname", "string", "mapped", "The NIS domain name of the jail.",
       "setdomainname in the jail's UTS namespace", backends=("ns", "hybrid"), default=""),
    _p("host.hostuuid", "string", "noop", "The jail's kern.hostuuid.",
       "recorded and shown by jls; a Linux system's UUID is the root's own /etc/machine-id, "
       "which is the jail's file already", values={"*": ""},
       default="00000000-0000-0000-0000-000000000000"),
    _p("host.hostid", "int", "noop", "The jail's kern.hostid.",
       "recorded and shown by jls; gethostid(3) reads the root's own /etc/hostid",
       values={"*": ""}, default=0),
    _p("host", "choice", "mapped", "new: the host.* values above; inherit: the system's.",
       "new: the jail's own hostname (R2)", choices=("new", "inherit"), default="new",
       values={"inherit": "a jail's hostname is always its own (R2)"}),
    _p("securelevel", "int", "noop", "The jail's kern.securelevel (at least the host's).",
       "Linux has no securelevel; what levels 1-3 forbid already holds for jailed root "
       "(no module loading, no raw disk or memory writes, no clock setting, immutable flags "
       "kept unless allow.chflags, which a securelevel above 0 refuses)",
       values={"-1": "", "0": "", "1": "", "2": "", "3": ""}, default=-1),
    _p("devfs_ruleset", "int", "mapped", "The devfs ruleset enforced on the jail's /dev.",
       "FreeBSD's default rulesets as Linux names the nodes: 4 (and 0, none given: jail(8) "
       "reads it as 4; 3; 5 less pf) null, zero, full, random, urandom, tty, its own pts and "
       "ptmx, shm, fd, std*; 2 null, zero, random, urandom, shm, fd, std*; 1 nothing; a "
       "local ruleset is refused; on a chroot (trace) only 0 and 4, the root's own /dev",
       default=0),
    _p("children.max", "int", "noop", "How many child jails this jail may create.",
       "0: a jailed process can make no namespaces, hence no jails (R5)", default=0,
       values={"0": ""}),
    _p("children.cur", "int", "noop", "The number of descendant jails.", "always 0",
       read_only=True, default=0),
    _p("enforce_statfs", "int", "noop", "Which mount points the jail's statfs(2) sees.",
       "1 and 2: the jail sees only its own mounts (its mount namespace or chroot); 0 "
       "would be the host's", default=2, values={"1": "", "2": ""}),
    _p("persist", "bool", "mapped", "The jail may exist without processes.",
       "the jail stays until `jail -r` / `hyjail stop`", default=False),
    _p("cpuset.id", "int", "noop", "The jail's cpuset (read-only).", "-1: no cpuset",
       read_only=True, default=-1),
    _p("dying", "bool", "noop", "The jail is shutting down (read-only).",
       "always false: a removed jail is gone when jail -r returns", read_only=True,
       default=False),
    _p("parent", "int", "noop", "The parent jail's JID (read-only).", "0: jails are not nested",
       read_only=True, default=0),
    _p("osrelease", "string", "mapped", "The jail's kern.osrelease and uname -r.",
       "uname(2)'s release, answered by the jail's tracer (no namespace changes it): R2 "
       "goes to ptrace's provider, a hybrid jail where the kernel holds the rest; "
       "/proc/sys/kernel/osrelease stays the host's", default=os.uname().release,
       backends=("hybrid", "trace")),
    _p("osreldate", "int", "noop", "The jail's kern.osreldate and uname -K.",
       "recorded and shown by jls: Linux has no release date number (uname -K is "
       "FreeBSD's)", default=0, values={"*": ""}),
    _p("linux", "choice", "noop", "How the jail's Linux emulation appears.",
       "jails run Linux natively: there is no emulation to configure",
       choices=("inherit", "new", "disable"), values={"*": ""}, default="new"),
    *(_p(name, kind, "noop", "The Linux emulation's " + what + ".",
         "jails run Linux natively: there is no emulation to configure", values={"*": ""},
         default=shown)
      for name, kind, what, shown in (
          ("linux.osname", "string", "OS name", os.uname().sysname),
          ("linux.osrelease", "string", "OS release", os.uname().release),
          ("linux.oss_version", "int", "OSS version", 0))),
    *(_p(name, "choice", "mapped", f"System V {what}: new (the jail's own keys), inherit "
         "(the system's), disable.", "new: allowed in the jail's own IPC namespace; disable "
         "(the default): refused by the filter; the three go together (allow.sysvipc)",
         choices=("new", "inherit", "disable"), default="disable",
         values={"inherit": "the host's System V IPC is never a jail's (SPEC R5): new gives "
                            "the jail its own"})
      for name, what in (("sysvmsg", "message queues"), ("sysvsem", "semaphores"),
                         ("sysvshm", "shared memory"))),
    _p("meta", "string", "mapped", "Free-form metadata of the jail.", "recorded, shown by jls",
       default=""),
    _p("env", "string", "mapped", "Free-form environment text of the jail.",
       "recorded, shown by jls", default=""),
    _p("zfs.mount_snapshot", "int", "refused", "Mount ZFS snapshots in the jail.", NO_FREEBSD,
       default=0),
    _p("mac.label", "string", "refused", "The jail's MAC label.", NO_FREEBSD, default=""),
    # ---- pseudo-parameters: jail(8)'s own -----------------------------------------------
    *(_p(name, "command", "mapped", _HOOK + where + ".", how, jail=False)
      for name, where, how in (
          ("exec.prepare", "on the host before anything is made (FreeBSD 14)",
           "run with /bin/sh -c on the host, before exec.prestart"),
          ("exec.prestart", "on the host before the jail is created",
           "run with /bin/sh -c on the host, JID, JNAME and JPATH set"),
          ("exec.created", "on the host once the jail exists", "as exec.prestart"),
          ("exec.start", "inside the jail when it is created", "/bin/sh -c inside the jail"),
          ("command", "inside the jail (the rest of jail -c's line)",
           "the command's argv, run inside the jail"),
          ("exec.poststart", "on the host after exec.start", "as exec.prestart"),
          ("exec.prestop", "on the host before the jail is removed", "as exec.prestart"),
          ("exec.stop", "inside the jail before it is removed", "/bin/sh -c inside the jail"),
          ("exec.poststop", "on the host after the jail is removed", "as exec.prestart"),
          ("exec.release", "on the host after everything is undone (FreeBSD 14)",
           "as exec.prestart, after exec.poststop"))),
    _p("exec.clean", "bool", "mapped", "Run commands in a clean environment (HOME, SHELL, "
       "TERM, USER kept or set).", "the same: TERM from ours, HOME, SHELL, USER of the "
       "target user, PATH", jail=False, default=False),
    _p("exec.jail_user", "string", "mapped", "The user commands run as inside the jail.",
       "looked up in the jail's own passwd", jail=False),
    _p("exec.system_jail_user", "bool", "mapped", "exec.jail_user is looked up in the "
       "host's passwd.", "the same: its uid, gid and groups from the host's passwd and "
       "group, then the command runs inside with them (jexec -u's)", jail=False,
       default=False),
    _p("exec.system_user", "string", "mapped", "The user host commands run as.",
       "host hooks run as this user of the host", jail=False),
    _p("exec.timeout", "int", "mapped", "Seconds a command may take before the jail is not "
       "created or removed.", "each host hook, exec.start and exec.stop is killed after it "
       "(inside, the command's process group: a daemon it started lives on)", jail=False),
    _p("exec.consolelog", "string", "mapped", "A file for commands' output.",
       "every command's stdout and stderr (hooks, exec.start, exec.stop) appended to it, "
       "at jail -c and jail -r; never a file beneath the jail's root", jail=False),
    _p("exec.fib", "int", "noop", "The routing table (FIB) for commands in the jail.",
       "the jail has one routing table, its own", jail=False, values={"0": ""}),
    _p("stop.timeout", "int", "mapped", "Seconds between SIGTERM and the jail's removal; 0: "
       "no SIGTERM, removed at once.", "the same", jail=False, default=10),
    _p("interface", "string", "mapped", "An interface to put the jail's addresses on.",
       "the jail on that interface's LAN (ip4.addr's IFACE|ADDR/MASK alike): a macvlan "
       "(bridge) or ipvlan (L2) child of it in the jail's own network namespace holding its "
       "addresses with the LAN's prefix (ns), else the addresses as aliases of it for the "
       "jail's life, FreeBSD's way (trace, hybrid); never an interface not named", jail=False),
    _p("vnet.interface", "list", "mapped", "An interface given to a vnet jail.",
       "moved into the jail's network namespace for its life (the first holding ip4.addr and "
       "ip6.addr, if given), moved back at its end", jail=False, backends=("ns",)),
    _p("hyjail.nat", "string", "mapped", "(hyjail) Masquerade the jail out of this interface, "
       "as --nat.", "its veth's IPv4 addresses masqueraded out of the host's interface "
       "(nftables, table inet hyjail); forwarding on for its veth and that interface only",
       jail=False, backends=("ns",)),
    _p("hyjail.publish", "list", "mapped", "(hyjail) Ports of the host's forwarded to the "
       "jail's, as --publish: [HOSTADDR:]HOSTPORT:JAILPORT[/tcp|udp].",
       "DNAT in the same table, to the jail's IPv4 address", jail=False, backends=("ns",)),
    _p("hyjail.gateway", "string", "mapped", "(hyjail) The default route of a jail on the "
       "LAN.", "with interface or vnet.interface: a default route through this address, "
       "inside the jail's network namespace", jail=False, backends=("ns", "hybrid")),
    _p("ip_hostname", "bool", "mapped", "Add the addresses host.hostname resolves to.",
       "jail(8) resolves host.hostname (getaddrinfo) and adds each IPv4 address to "
       "ip4.addr, each IPv6 one to ip6.addr, once, none of a family set to disable (nor "
       "::1, which the jail's own loopback holds); a name that does not resolve fails the "
       "jail", jail=False, default=False),
    _p("mount", "command", "mapped", "A file system to mount (an fstab(5) line).",
       "in the jail's own mount namespace, never on the host (nothing to unmount); a trace "
       "jail's (a chroot's) on a copy of its root of its own under /run/hyjail/roots, "
       "detached at its end: nullfs (or bind, rbind) binds a host directory or file, "
       "tmpfs makes one, always nosuid and nodev; options ro, noexec, size=, mode=, "
       "nr_inodes=; devfs, procfs, fdescfs, linsysfs on the jail's own are no-ops; the "
       "mount point is a host path within path, no symlink on the way, each by descriptor",
       jail=False),
    _p("mount.fstab", "string", "mapped", "An fstab(5) file of file systems to mount.",
       "each line as mount's, after them; the file is read by the host, never one beneath "
       "the jail's root", jail=False),
    _p("mount.devfs", "bool", "noop", "Mount devfs on the jail's /dev (ruleset 4).",
       "the jail always gets its own /dev with ruleset 4's devices (with mount.nodevfs "
       "too, where the root has a /dev: the least a jail's programs need)", jail=False,
       values={"1": "", "0": ""}),
    _p("mount.fdescfs", "bool", "noop", "Mount fdescfs on the jail's /dev/fd.",
       "/dev/fd is /proc/self/fd where the jail has a /proc", jail=False,
       values={"1": "", "0": ""}),
    _p("mount.procfs", "bool", "noop", "Mount procfs on the jail's /proc.",
       "a jail with its own pid namespace always gets its own /proc", jail=False,
       values={"1": "", "0": ""}),
    _p("allow.dying", "bool", "noop", "Allow changes to a dying jail.",
       "no jail lingers dying", jail=False, values={"1": "", "0": ""}),
    _p("depend", "list", "mapped", "Jails this one needs: created before it, removed after.",
       "jail(8) creates the jail.conf jails it names first (one already running is left "
       "alone) and removes the running ones that depend on a jail before it; a name neither "
       "configured nor running, or a dependency loop, fails the jail and those waiting for "
       "it", jail=False),
    # ---- hyjail's own ----------------------------------------------------------------------
    _p("memory", "string", "mapped", "(hyjail) Memory limit, as --memory.", "cgroup memory.max",
       jail=False),
    _p("pids", "string", "mapped", "(hyjail) Process limit, as --pids.", "cgroup pids.max",
       jail=False),
    _p("cpus", "string", "mapped", "(hyjail) CPU limit, as --cpus.", "cgroup cpu.max",
       jail=False),
)

# FreeBSD's allow.* permissions hyjail does not grant, with why; each is off by default
# there, so allow.noX (or X=0) is a no-op.
ALLOW_REFUSED: Mapping[str, str] = {
    "quotas": "quota administration needs CAP_SYS_ADMIN over file systems the host shares",
    "read_msgbuf": "the kernel's log is the host's (dmesg)",
    "nfsd": "the NFS server is the host kernel's",
    "unprivileged_proc_debug": "granted already: ptrace between a jail's own processes works",
    "unprivileged_parent_tampering": "host processes never reach into a jail's",
    "extattr": "system-namespace extended attributes (trusted.*) need host powers",
    "adjtime": "the clock is the host's",
    "settime": "the clock is the host's",
    "routing": "a jail's routing table is set up by hyjail",
    "setaudit": "the audit subsystem is the host's",
    "vmm": NO_FREEBSD,
}


def _allow_rows() -> Iterator[Parameter]:
    for name, (on, grants) in allow.PERMISSIONS.items():
        yield _p(f"allow.{name}", "bool", "mapped", f"Permission: {name}.", grants,
                 default=on)
    for fstype, grants in allow.MOUNT_TYPES.items():
        yield _p(f"allow.mount.{fstype}", "bool", "mapped", f"allow.mount may mount {fstype}.",
                 grants, default=False, backends=("ns", "hybrid"))
    for fstype, why in allow.MOUNT_TYPES_REFUSED.items():
        yield _p(f"allow.mount.{fstype}", "bool", "refused", f"allow.mount may mount {fstype}.",
                 why, default=False, values={"0": ""})
    for name, why in ALLOW_REFUSED.items():
        yield _p(f"allow.{name}", "bool", "refused", f"Permission: {name}.", why,
                 default=False, values={"0": ""})


TABLE: Mapping[str, Parameter] = {p.name: p for p in (*_ROWS, *_allow_rows())}
LIMITS = ("memory", "pids", "cpus")
HOOKS_CREATE = ("exec.prepare", "exec.prestart", "exec.created", "exec.poststart")
HOOKS_REMOVE = ("exec.prestop", "exec.stop", "exec.poststop", "exec.release")
JAIL_PARAMS = tuple(name for name, p in TABLE.items() if p.jail)  # what jls can show


def find(name: str) -> Parameter:
    """The row of name (rlimit.NAME included); SetupError for a name nobody has."""
    if name in TABLE:
        return TABLE[name]
    if name.startswith("rlimit.") and len(name) > len("rlimit."):
        return _p(name, "string", "mapped", "(hyjail) A resource limit, as --rlimit.",
                  "setrlimit in the jail", jail=False)
    raise SetupError(f"unknown parameter: {name}")


def negated(name: str) -> str | None:
    """FreeBSD's `noNAME` spelling of a boolean (`nopersist`, `allow.noraw_sockets`,
    `allow.mount.notmpfs`): the parameter it switches off, or None."""
    head, dot, last = name.rpartition(".")
    if not last.startswith("no"):
        return None
    plain = f"{head}{dot}{last[2:]}"
    row = TABLE.get(plain)
    return plain if row is not None and row.kind == "bool" else None


def value(name: str, given: list[str] | bool) -> object:
    """The value of parameter name as its type has it, from what jail(8) or jail.conf gave
    (a list of strings, or True/False for a bare `name` / `noname`); then whether this row
    holds it (a refused parameter or value: SetupError with the reason)."""
    row = find(name)
    if row.read_only:
        raise SetupError(f"{name}: read-only (jls shows it; it cannot be set)")
    result = _typed(row, given)
    _admit(row, result)
    return result


def _typed(row: Parameter, given: list[str] | bool) -> object:
    name = row.name
    if row.kind == "bool":
        if isinstance(given, bool):
            return given
        if len(given) != 1:
            raise SetupError(f"{name}: a boolean takes one value (true or false)")
        text = given[0].strip().lower()
        if text in allow.TRUE or text == "":
            return True
        if text in allow.FALSE:
            return False
        raise SetupError(f"{name}={given[0]}: not a boolean (true, false, 1 or 0)")
    if isinstance(given, bool):
        if row.kind in ("list", "command") and given is False:
            return []  # `noname` clears a list (as jail(8) does for `mount.nodevfs`-style)
        if row.kind == "choice" and {"new", "inherit"} <= set(row.choices):
            return "new" if given else "inherit"  # a bare jailsys parameter: `vnet;`
        raise SetupError(f"{name}: needs a value ({name}=...)")
    if row.kind in ("list", "command"):
        return [item for item in given if item != ""] if row.kind == "list" else list(given)
    if len(given) != 1:
        raise SetupError(f"{name}: needs exactly one value")
    text = given[0]
    if row.kind == "int":
        try:
            number = int(text.strip(), 0)
        except ValueError:
            raise SetupError(f"{name}={text}: not a whole number") from None
        if name in ("stop.timeout", "exec.timeout") and number < 0:
            raise SetupError(f"{name}={text}: seconds, from 0")
        return number
    if row.kind == "choice" and text not in row.choices:
        raise SetupError(f"{name}={text}: one of {', '.join(row.choices)}")
    return text


def _admit(row: Parameter, typed: object) -> None:
    """Refuse what this row cannot hold: a refused parameter (unless set to a value it
    accepts as a no-op), a noop parameter's other values, a mapped parameter's refused
    values."""
    shown = _as_text(typed)
    if row.default is not None and shown == _as_text(row.default):
        return  # what a jail has anyway (jls -s prints every default for jail -c to take)
    if row.status == "mapped":
        why = row.values.get(shown)
        if why:
            raise SetupError(f"{row.name}={shown}: {why}")
        return
    if "*" in row.values or shown in row.values:
        return
    if row.status == "refused":
        raise SetupError(f"{row.name}: {row.linux}")
    accepted = ", ".join(row.values)
    raise SetupError(f"{row.name}={shown}: only {accepted} ({row.linux})")


def _as_text(typed: object) -> str:
    if isinstance(typed, bool):
        return "1" if typed else "0"
    return str(typed)


def default(name: str) -> object:
    return TABLE[name].default


def readme_rows() -> list[tuple[str, str, str, str]]:
    """(name, status, FreeBSD meaning, hyjail's mapping) for the README's table."""
    rows = []
    for p in TABLE.values():
        status = p.status
        if p.values and p.status != "mapped" and "*" not in p.values:
            status += f" (accepted: {', '.join(p.values)})"
        elif p.values and p.status == "mapped":
            status += f" (refused: {', '.join(p.values)})"
        if p.backends != BACKENDS:
            status += f"; {', '.join(p.backends)}"
        rows.append((p.name, status, p.freebsd, p.linux))
    return rows


def markdown() -> str:
    """The README's table of parameters (tests/test_jail8.py checks the README has it)."""
    lines = ["| parameter | hyjail | FreeBSD | on Linux |", "|---|---|---|---|"]
    for name, status, freebsd, linux in readme_rows():
        cells = (f"`{name}`", status, freebsd, linux)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
