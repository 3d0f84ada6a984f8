"""The escape battery's catalogue: every attempt, the rule it tries to break, and how its
outcome is judged.

Owns the list (grouped by rule, R1-R7, then the races and "E", the entry path of SPEC section
1: what a jail writes must never reach a process holding host powers), each attempt's probe
operations (run
by hjprobe as root inside a fresh jail, with {placeholders} the runner fills from the host
side: the secret outside the root, a host process, another jail's process, listeners), the
ABIs it is repeated for, and its judge: given the probe's answers and what the host saw, None
when the rule held, or what escaped. Attempts that need the host to act while they run (a
directory moved out of the root, the supervisor killed, a terminal) name a driver instead,
which the runner carries out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hyjail.ns.dilution import BASE_CAPS, GATED_CAPS, cap_mask

# The most any jail's root keeps (dilution's caps, every allow.* granted): more is the host's.
JAIL_CAPS_AT_MOST = cap_mask((*BASE_CAPS, *GATED_CAPS.values()))

# Rounds of each race ({race_rounds}, {swap_rounds} in an attempt's ops) on a host of normal
# speed; the runner divides them by HYJAIL_CHECK_SLOW on a slower one (software emulation).
RACE_ROUNDS = 20000
SWAP_ROUNDS = 2000

# "64": hjprobe's native calls; "int80": the i386 ABI through int 0x80 from the 64-bit build
# ("int80s": socket calls through socketcall); "32": the -m32 build, natively.
ABIS = ("64", "int80", "32")
SOCKET_ABIS = ("64", "int80", "int80s", "32")

Judge = Callable[[dict[str, str], dict], str | None]


@dataclass(frozen=True)
class Attempt:
    rule: str
    name: str
    ops: tuple[str, ...] = ()
    judge: Judge | None = None
    abis: tuple[str, ...] = ("64",)
    host: tuple[str, ...] = ()  # host-side things it needs: "local_tcp", "peer_tcp", ...
    options: tuple[str, ...] = ()  # more `hyjail run` options
    driver: str | None = None  # the runner's own procedure, for what needs the host mid-way
    only: tuple[str, ...] = ("ns", "hybrid", "trace")  # the jail shapes it applies to
    unheld: str = ""  # why a shape not in `only` is skipped (default: not its concern)
    timeout: float = 60
    root: str = ""  # the jail's root: the battery's busybox root, or "/" (the host's tree)
    alone: bool = False  # changes what every jail of the host loads: run after the others

    @property
    def key(self) -> str:
        return f"{self.rule} {self.name}"


def _got(results: dict[str, str], op: str) -> str:
    return results.get(op, "no answer")


def refused(*accepted: str) -> Judge:
    """Held when every op answered one of `accepted` (errno names)."""
    def judge(results: dict[str, str], ctx: dict) -> str | None:
        wrong = {op: got for op, got in results.items() if got not in accepted}
        return ", ".join(f"{op} gave {got}" for op, got in wrong.items()) or None
    return judge


def _secret_unread(results: dict[str, str], ctx: dict) -> str | None:
    """Held unless an answer holds the secret's token (a file of the jail's own by that name
    is no escape)."""
    for op, got in results.items():
        if ctx["token"] in got:
            return f"{op} read the host's secret"
    return None


def _race_held(results: dict[str, str], ctx: dict) -> str | None:
    if ctx.get("local_reached"):
        return "a connect reached the host's 127.0.0.1 service"
    return _none_escaped(results, ctx)


def _no_leaked_fds(results: dict[str, str], ctx: dict) -> str | None:
    got = _got(results, "fds")
    return None if got == "ok" else f"descriptors beyond 0-2 crossed in: {got}"


def _none_escaped(results: dict[str, str], ctx: dict) -> str | None:
    wrong = {op: got for op, got in results.items() if got.startswith("escaped")
             or got in ("no answer", "EINVAL")}
    return ", ".join(f"{op}: {got}" for op, got in wrong.items()) or None


def _own_hostname(results: dict[str, str], ctx: dict) -> str | None:
    got = _got(results, "nodename")
    if got != ctx["hostname"]:
        return f"uname says {got!r}, not the jail's {ctx['hostname']!r}"
    return None


def _host_name_kept(results: dict[str, str], ctx: dict) -> str | None:
    if ctx["host_hostname_now"] != ctx["host_hostname"]:
        return f"the host's hostname became {ctx['host_hostname_now']!r}"
    return None


def _address(kind: str) -> Judge:
    """bind or connect: refused, or bound to the jail's address (or unspecified, where only
    the jail's addresses exist); what the host's peer saw must be the jail's too."""
    def judge(results: dict[str, str], ctx: dict) -> str | None:
        for op, got in results.items():
            if got[:1].isdigit() or ":" in got:  # an address: the local side
                if got not in (ctx["jail_ip"], "0.0.0.0") and not got.startswith("E"):
                    return f"{op} got the local address {got}"
            # ENOSYS: i386 socketcall's SOCKET, refused whole where no supervisor reads
            # its family (no socket, so nothing bound).
            elif kind == "bind" and got not in ("EADDRNOTAVAIL", "ENOSYS"):
                return f"{op} gave {got}"
        for seen in ctx.get("peer_saw", ()):
            if seen != ctx["jail_ip"]:
                return f"the host's peer saw the source {seen}"
        if ctx.get("local_reached"):
            return "the host's 127.0.0.1 service was reached"
        return None
    return judge


def _sent_from_the_jail(results: dict[str, str], ctx: dict) -> str | None:
    for seen in ctx.get("peer_saw", ()):
        if seen != ctx["jail_ip"]:
            return f"a datagram arrived from {seen}"
    return None


def _abstract_unreached(results: dict[str, str], ctx: dict) -> str | None:
    """Held when nothing reached the host's abstract unix sockets: refused by the network
    namespace or the stand-in (ECONNREFUSED), Landlock (EPERM), or socketcall (ENOSYS)."""
    if ctx.get("abstract_reached"):
        return "the host's abstract unix socket was reached"
    wrong = {op: got for op, got in results.items()
             if got not in ("ECONNREFUSED", "EPERM", "ENOSYS", "ENOENT", "EFAULT")}
    return ", ".join(f"{op} gave {got}" for op, got in wrong.items()) or None


def _esrch(results: dict[str, str], ctx: dict) -> str | None:
    wrong = {op: got for op, got in results.items() if got != "ESRCH"}
    if wrong:
        return ", ".join(f"{op} gave {got}" for op, got in wrong.items())
    if ctx.get("host_process_woken"):
        return "the host's stopped process was woken"
    return None


def _still_stopped(results: dict[str, str], ctx: dict) -> str | None:
    return "the host's stopped process was woken" if ctx.get("host_process_woken") else None


def _still_nobody(results: dict[str, str], ctx: dict) -> str | None:
    got = _got(results, "suid:/bin/hjsuid")
    return None if got == "euid:65534" else f"the setuid binary ran with {got}"


def _child_refused(results: dict[str, str], ctx: dict) -> str | None:
    """vfork+exec: the exec'd child's own answer is what counts."""
    child = next((got for op, got in results.items() if op.startswith("pid:kill:")), None)
    if child != "ESRCH":
        return f"the vforked child's kill gave {child or 'no answer'}"
    return None


def _is_jailed(results: dict[str, str], ctx: dict) -> str | None:
    return None if _got(results, "jailed") == "yes" else "a jailed process cannot tell"


def _no_host_powers_loaded(results: dict[str, str], ctx: dict) -> str | None:
    """The planted NSS module's own record: loaded unconfined (no filter yet, no
    no_new_privs, or a capability no jail ever keeps) means the jail's code ran with the
    host's powers. The capabilities tell also where a parent's filter (a host that denies
    namespaces by seccomp) gave every process a filter and no_new_privs already."""
    for op, got in results.items():
        if not got.startswith("loaded"):
            continue
        fields = dict(word.split("=", 1) for word in got[7:].split() if "=" in word)
        beyond = int(fields.get("CapEff", "0"), 16) & ~JAIL_CAPS_AT_MOST
        if fields.get("Seccomp") == "0" or fields.get("NoNewPrivs") == "0" or beyond:
            return f"{op} loaded the jail's NSS module before confinement ({got[7:]})"
    return None


def _scanner_caught_nothing(results: dict[str, str], ctx: dict) -> str | None:
    """procscan's "unconfined:N:foreignns:K:scanned:M:exe:DEV:INO,...": no entering process
    reached while unconfined, no descriptor of another namespace (the host's) reached, and no
    exe that is one of the host's own binaries."""
    got = next((got for op, got in results.items() if op.startswith("procscan:")), "no answer")
    if got == "ENOENT":  # a jail without a /proc (a hybrid one without a pid namespace)
        return None
    fields = got.split(":", 7)
    if len(fields) < 8 or (fields[0], fields[2], fields[4]) != ("unconfined", "foreignns",
                                                                "scanned"):
        return f"the scanner gave {got}"
    host = ctx.get("host_binaries", set()) & set(filter(None, fields[7].split(",")))
    if host:
        return f"the scanner opened a host binary as some process's exe ({', '.join(host)})"
    if fields[1] != "0":
        return (f"the scanner reached {fields[1]} unconfined processes during "
                f"{results.get('jexecs', '?')} jexecs")
    if fields[3] != "0":
        return f"the scanner reached {fields[3]} descriptors of namespaces not the jail's"
    return None


def _host_dir_untouched(results: dict[str, str], ctx: dict) -> str | None:
    got = _got(results, "host_dir")
    if got != "empty":
        return f"jails starting on the swapped root made {got} in the host's directory"
    return None


def _root_not_followed(results: dict[str, str], ctx: dict) -> str | None:
    if _got(results, "decoy") != "untouched":
        return "jexec followed the root's path into a host directory put in its place"
    return None


def _host_dir_unbound(results: dict[str, str], ctx: dict) -> str | None:
    if _got(results, "bound") == "the host's directory":
        return ("a jail's directory swapped for a symlink bound the host's directory into "
                "another jail")
    return None


def _binds_kept_apart(results: dict[str, str], ctx: dict) -> str | None:
    where = [what for what in ("other jail", "host") if "hjboundhere" in _got(results, what)]
    if where:
        return (f"a host directory bound into one jail showed to the {' and the '.join(where)}"
                f" over the same (shared) root")
    if _got(results, "after") != "nothing":
        return f"the jail's mounts stayed where its root lies: {results['after']}"
    return None


def _helper_not_impersonated(results: dict[str, str], ctx: dict) -> str | None:
    """Held if the fake received nothing and the jail ran with its address (or was refused
    in one line)."""
    if _got(results, "received") != "0":
        return f"the fake helper (uid 65534) received {results['received']}"
    bound = _got(results, f"bind:{ctx['jail_ip']}")
    if results.get("jail") == "ran" and bound != ctx["jail_ip"]:
        return f"the jail ran without its address (binding it gave {bound})"
    return None


def _all_masked(results: dict[str, str], ctx: dict) -> str | None:
    wrong = [f"{op.removeprefix('masked:')} ({got})" for op, got in results.items()
             if got != "masked"]
    return ("readable: " + ", ".join(wrong)) if wrong else None


# What root inside must be refused (SPEC R5), op -> the answers that mean "held".
SUPERUSER = {
    "mount": ("EPERM",), "mount_bind": ("EPERM",), "umount": ("EPERM",),
    "pivot_root": ("EPERM",), "mknod_chr": ("EPERM",), "mknod_blk": ("EPERM",),
    "init_module": ("EPERM",), "delete_module": ("EPERM",), "kexec_load": ("EPERM",),
    "reboot": ("EPERM",), "clock_settime": ("EPERM",), "settimeofday": ("EPERM",),
    "swapon": ("EPERM",), "acct": ("EPERM",), "syslog": ("EPERM",),
    "unshare_mnt": ("EPERM",), "unshare_user": ("EPERM",), "unshare_net": ("EPERM",),
    "unshare_pid": ("EPERM",), "setns_own": ("EPERM", "EBADF"),
    "open_by_handle_at": ("EPERM",), "raw_socket": ("EPERM",), "packet_socket": ("EPERM",),
    "bpf": ("EPERM",), "perf_event_open": ("EPERM",), "userfaultfd": ("EPERM",),
    "keyctl": ("EPERM",), "iopl": ("EPERM",), "ioperm": ("EPERM",), "mlock": ("EPERM",),
    "shmget": ("ENOSYS",), "chattr_immutable": ("EPERM", "ENOTTY", "EOPNOTSUPP"),
    # Read-only, or (no /proc or /sys at all) absent.
    "write_proc_sys": ("EROFS", "ENOENT"), "write_sys": ("EROFS", "ENOENT"),
}

# Socket families no namespace confines (vsock reaches the hypervisor's and the host's own
# services): hjprobe's family:NAME ops.
UNCONFINED_FAMILIES = ("bluetooth", "can", "tipc", "kcm", "xdp", "alg")
# What runc's and podman's defaults mask, and what issue 13 found readable besides: open
# fails, reads empty, or (a directory) lists nothing.
MASKED = ("/proc/slabinfo", "/proc/vmallocinfo", "/proc/pagetypeinfo", "/proc/kpagecount",
          "/proc/kpageflags", "/proc/kpagecgroup", "/proc/config.gz", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/kcore", "/proc/keys",
          "/proc/latency_stats", "/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/firmware",
          "/sys/devices/virtual/powercap")
# No socket: the family refused (a filter cannot read socketcall's arguments, so socketcall's
# SOCKET may be refused whole: ENOSYS).
_NO_SOCKET = refused("EAFNOSUPPORT", "EPERM", "EACCES", "ENOSYS")
_NO_PROC = ("a trace jail has no /proc to scan (one would show the host's processes), and its "
            "supervisor traces an entering process before it confines itself")

_PIDS = ("kill", "ptrace", "vmread", "pidfd", "setpriority", "getpriority", "capget",
         "getpgid", "getaffinity", "prlimit", "setown", "setown_ex")

CATALOGUE: tuple[Attempt, ...] = (
    # ---- R1: nothing outside the root ----------------------------------------------------
    Attempt("R1", "'..' from / up to the host's tree", ("dotdot:{secret_rel}",),
            _secret_unread),
    Attempt("R1", "the secret by its host path", ("read:{secret_abs}",), _secret_unread),
    Attempt("R1", "a second chroot, then '..'", ("chroot2:{secret_rel}",), _secret_unread),
    Attempt("R1", "descriptors leaked by the caller", ("fds",), _no_leaked_fds,
            host=("leaked_fds",)),
    Attempt("R1", "/proc/self/root", ("read:/proc/self/root/../{secret_name}",),
            _secret_unread),
    Attempt("R1", "/proc/1/root", ("read:/proc/1/root/../{secret_name}",), _secret_unread),
    Attempt("R1", "/proc/<host pid>/cwd", ("read:/proc/{host_pid}/cwd/{secret_name}",
                                           "read:/proc/{host_pid}/root{secret_abs}"),
            _secret_unread),
    Attempt("R1", "open_by_handle_at of a host file", ("handle:{handle}",), _secret_unread),
    Attempt("R1", "a symlink pointing out", ("read:/tmp/hjout",), _secret_unread,
            host=("symlink_out",)),
    # A chroot cannot hold this one (FreeBSD documents the same of its jails): it needs the
    # host to move the directory, and the kernel's R1 (a mount namespace) to hold.
    Attempt("R1", "a directory moved out under a jailed process", driver="moved_directory",
            judge=_secret_unread, only=("ns", "hybrid"),
            unheld="a chroot does not hold '..' from a directory the host moves out of the "
                   "root (FreeBSD documents the same for its jails); the kernel's R1 does"),
    Attempt("R1", "a path flipped between inside and out (race)",
            ("pathflip:{secret_abs}:{token}:{race_rounds}",), _none_escaped),
    # ---- R2: the jail's own hostname -----------------------------------------------------
    Attempt("R2", "uname gives the jail's hostname", ("nodename",), _own_hostname, abis=ABIS),
    Attempt("R2", "sethostname leaves the host's alone", ("sethostname",), _host_name_kept,
            abis=ABIS, host=("host_hostname",)),
    # ---- R3: the jail's address only -----------------------------------------------------
    Attempt("R3", "bind another address", ("bind:{other_ip}",), _address("bind"),
            abis=SOCKET_ABIS),
    Attempt("R3", "bind any, connect: the peer sees the jail's address",
            ("connect:{peer_ip}:{peer_tcp}",), _address("connect"), abis=SOCKET_ABIS,
            host=("peer_tcp",)),
    Attempt("R3", "connect to the host's 127.0.0.1 service", ("connect:127.0.0.1:{local_tcp}",),
            _address("connect"), abis=SOCKET_ABIS, host=("local_tcp",)),
    Attempt("R3", "UDP sendto: the source address", ("sendto:{peer_ip}:{peer_udp}",),
            _sent_from_the_jail, abis=SOCKET_ABIS, host=("peer_udp",)),
    Attempt("R3", "UDP sendmsg: the source address", ("sendmsg:{peer_ip}:{peer_udp}",),
            _sent_from_the_jail, abis=ABIS, host=("peer_udp",)),
    Attempt("R3", "IP_PKTINFO naming another source", ("pktinfo:{other_ip}:{peer_ip}:{peer_udp}",),
            _sent_from_the_jail, abis=ABIS, host=("peer_udp",)),
    Attempt("R3", "SO_BINDTODEVICE, then connect", ("devconnect:{device}:{peer_ip}:{peer_tcp}",),
            _address("connect"), abis=SOCKET_ABIS, host=("peer_tcp",)),
    Attempt("R3", "a raw socket", ("raw_socket",), refused("EPERM"), abis=ABIS),
    Attempt("R3", "a packet socket", ("packet_socket",), refused("EPERM"), abis=ABIS),
    Attempt("R3", "netlink: change a link", ("nl_link",), refused("EPERM"), abis=ABIS),
    Attempt("R3", "netlink: add an address", ("nl_addr",), refused("EPERM"), abis=ABIS),
    Attempt("R3", "netlink: add a route", ("nl_route",), refused("EPERM"), abis=ABIS),
    Attempt("R3", "IPv6: bind another address", ("bind6:fd77::dead",),
            refused("EADDRNOTAVAIL", "EAFNOSUPPORT", "ENOSYS"), abis=SOCKET_ABIS),
    Attempt("R3", "IPv6: connect to the host's ::1 service", ("connect6:::1:{local_tcp6}",),
            _address("connect"), abis=SOCKET_ABIS, host=("local_tcp6",)),
    *(Attempt("R3", f"{what} the host's abstract unix socket", (f"{op}:{{{name}}}",),
              _abstract_unreached, abis=SOCKET_ABIS, host=("abstract_unix",))
      for what, op, name in (("connect to", "uconnect", "abstract"),
                             ("datagram connect to", "uconnectd", "abstract_dgram"),
                             ("sendmsg to", "usendmsg", "abstract_dgram"))),
    # ---- R4: the jail's processes only ---------------------------------------------------
    *(Attempt("R4", f"{call} of a host process", (f"pid:{call}:{{host_pid}}",), _esrch,
              abis=ABIS, host=("host_process",)) for call in _PIDS),
    Attempt("R4", "SIGCONT to a stopped host process", ("pid:cont:{host_pid}",), _esrch,
            abis=ABIS, host=("host_process",)),
    Attempt("R4", "kill(-1, SIGCONT) reaches no host process", ("pid:cont:-1",), _still_stopped,
            abis=ABIS, host=("host_process",)),
    *(Attempt("R4", f"{call} of another jail's process", (f"pid:{call}:{{other_pid}}",),
              _esrch, abis=ABIS, host=("other_jail",)) for call in ("kill", "ptrace", "vmread",
                                                                   "pidfd", "setpriority")),
    Attempt("R4", "FIOSETOWN: a host process gets SIGIO", ("pid:fiosetown:{host_pid}",),
            refused("ESRCH", "EPERM"), abis=ABIS, host=("host_process",)),
    Attempt("R4", "/proc/<host pid> is not there", ("read:/proc/{host_pid}/comm",),
            refused("ENOENT", "EACCES"), host=("host_process",)),
    # ---- R5: root inside is diluted -------------------------------------------------------
    *(Attempt("R5", op, (op,), refused(*accepted), abis=ABIS)
      for op, accepted in SUPERUSER.items()),
    # POSIX message queues belong to the IPC namespace: a chroot's would be the host's.
    Attempt("R5", "mq_open of a host's POSIX message queue", ("mqueue:{host_mqueue}",),
            refused("ENOSYS", "ENOENT"), abis=ABIS, host=("host_mqueue",)),
    Attempt("R5", "TIOCSTI into the controlling terminal", ("tty_tiocsti",), refused("EPERM"),
            abis=ABIS, driver="terminal"),
    Attempt("R5", "a setuid-root binary run as nobody", ("suid:/bin/hjsuid",), _still_nobody),
    # ---- races ---------------------------------------------------------------------------
    Attempt("R3", "unix path flipped to a host abstract name (race)",
            ("uflip:{abstract}:{race_rounds}",), _abstract_unreached, host=("abstract_unix",),
            timeout=180),
    Attempt("R3", "sockaddr flipped while bind and connect run (race)",
            ("race:{jail_ip}:{other_ip}:{local_tcp}:{race_rounds}",), _race_held,
            host=("local_tcp",), timeout=180),
    *(Attempt("R3", f"a descriptor swapped under {call} (race)",
              (f"fdswap:{call}:{address}:{{swap_rounds}}",), _race_held, host=("local_tcp",),
              timeout=120, only=("trace",),
              unheld="the kernel holds R3 here: in a network namespace of the jail's own, "
                     "0.0.0.0 and 127.0.0.1 are the jail's")
      for call, address in (("connect", "127.0.0.1:{local_tcp}"), ("bind", "0.0.0.0:0"),
                            ("listen", "0.0.0.0:0"), ("sendto", "127.0.0.1:{local_tcp}"),
                            ("sendmsg", "127.0.0.1:{local_tcp}"),
                            ("sendmmsg", "127.0.0.1:{local_tcp}"))),
    Attempt("R4", "a clone storm against the tracer (race)", ("storm:{host_pid}:200",),
            _none_escaped, host=("host_process",), timeout=120),
    Attempt("R4", "vfork, then exec (race)", ("vforkexec:/bin/hjprobe:{host_pid}",),
            _child_refused, host=("host_process",)),
    # ---- E: the entry path (SPEC section 1): nothing the jail writes reaches host powers --
    Attempt("E", "a planted NSS module before jexec -u root and -l", driver="nss_lookup",
            judge=_no_host_powers_loaded, host=("nss_module",), timeout=120),
    Attempt("E", "a /proc scanner racing 200 jexecs (exe, mem, fd, ptrace)",
            driver="proc_scanner", judge=_scanner_caught_nothing, only=("ns", "hybrid"),
            unheld=_NO_PROC, timeout=240),
    Attempt("E", "a shared root's dev, proc, tmp swapped for symlinks", driver="swapped_root",
            judge=_host_dir_untouched, only=("ns", "hybrid"), timeout=240,
            unheld="a trace jail mounts nothing on its root: its chroot and jexec's are the "
                   "root's own swap, the next attempt"),
    Attempt("E", "a jail's root swapped for a symlink before jexec",
            driver="root_swapped_before_jexec", judge=_root_not_followed, timeout=120),
    Attempt("E", "a bind's source swapped for a symlink",  # a trace jail's: on the host
            driver="swapped_bind_source", judge=_host_dir_unbound, timeout=240),
    Attempt("R1", "one jail's bind seen over a shared root", driver="binds_across_a_shared_root",
            judge=_binds_kept_apart, timeout=120),
    Attempt("E", "an impersonated network helper", ("bind:{jail_ip}",), driver="fake_netd",
            judge=_helper_not_impersonated, host=("veth",), timeout=120),
    Attempt("E", "a jail over / writes the cache",
            ("cachewrite:/var/cache/hyjail", "cachewrite:/var/cache/hyjail/filters"),
            _none_escaped, root="/", only=("ns", "hybrid"),
            unheld="a trace jail over / is refused (its /proc would be the host's)"),
    Attempt("E", "an allow-all filter planted in the cache", ("unshare_user",),
            refused("EPERM"), driver="tampered_cache", alone=True),
    Attempt("E", "a vsock socket", ("family:vsock",), _NO_SOCKET, abis=SOCKET_ABIS),
    Attempt("E", "sockets of other families no namespace confines",
            tuple(f"family:{name}" for name in UNCONFINED_FAMILIES), _NO_SOCKET,
            abis=SOCKET_ABIS),
    # With raw sockets allowed (CAP_NET_RAW kept), AF_XDP too is the filter's alone to stop;
    # raw sockets need a network namespace ("veth").
    Attempt("E", "other unconfined families, raw sockets allowed",
            tuple(f"family:{name}" for name in UNCONFINED_FAMILIES), _NO_SOCKET,
            abis=SOCKET_ABIS, options=("--allow", "raw_sockets"), host=("veth",)),
    Attempt("E", "/proc and /sys files that runc and podman mask",
            tuple(f"masked:{path}" for path in MASKED), _all_masked),
    # ---- R6: the jail's lifetime ---------------------------------------------------------
    Attempt("R6", "the supervisor SIGKILLed mid-attempt", driver="supervisor_killed"),
    Attempt("R6", "the command exits: the rest go with it", driver="command_exits"),
    # ---- R7: identity --------------------------------------------------------------------
    Attempt("R7", "a jailed process can tell it is jailed", ("jailed",), _is_jailed),
    Attempt("R7", "hyjail ps maps the jail's processes to it", driver="identity"),
)
