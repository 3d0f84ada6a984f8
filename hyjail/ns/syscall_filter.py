"""The jail's seccomp filter: what capabilities alone do not take from root, for every ABI.

Owns: the table of denied system calls (with the errno each gets), the permission gates that
open parts of it (`allow.*`), and building one libseccomp filter that applies the table to the
x86_64, i386 (also `int 0x80` from a 64-bit process, which the kernel reports as i386) and x32
ABIs alike, killing the process on any other ABI.

Arguments that the kernel reads as 32-bit values (an ioctl's request) are compared on their
low 32 bits only, so setting high bits cannot slip a request past the filter.

Socket families: a jail opens only those its network namespace confines (unix, inet, inet6,
netlink; packet with allow.raw_sockets); any other (vsock, which reaches the hypervisor and the
host, bluetooth, CAN, TIPC, ...) answers EAFNOSUPPORT, as on a kernel without it, unless
allow.socket_af (FreeBSD's name for the stacks that have no jail functionality). i386's
socketcall(2) keeps socket's arguments in memory, where no filter can see the family: there
its SOCKET and SOCKETPAIR operations are refused (ENOSYS) unless allow.socket_af, so a 32-bit
program reaches sockets through socket(2) (nr 359); a traced jail's supervisor judges
socketcall instead.

libseccomp compiles each distinct filter once: its BPF program is kept in the probe's cache
directory, keyed by everything it depends on (the inputs, this module, the boot), so a jail's
start loads a few hundred bytes with one seccomp(2) call instead of importing libseccomp's
bindings (which run `ldconfig -p` twice) and compiling again. A cached program is used only
when `hyjail.cache` vouches for it (private directory, sealed entry) and it looks like one of
libseccomp's; anything else is compiled again, never loaded.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
from collections.abc import Iterable, Mapping

from hyjail import digest

TYPE_CHECKING = False  # typing's own costs every start 2 ms; only a checker reads these
if TYPE_CHECKING:
    import pyseccomp as sc

# Namespace flags for clone/unshare; CLONE_NEWTIME (0x80) only means that to unshare.
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                   0x40000000)
CLONE_NEWTIME = 0x00000080
_BINARY_TREE = 2  # SCMP_FLTATR_CTL_OPTIMIZE: sort the call table into a tree
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
MAP_LOCKED = 0x2000  # x86

DENIED_EPERM = (
    # file systems and the root (mounting itself is the gate allow.mount)
    "pivot_root", "open_by_handle_at", "name_to_handle_at",
    "quotactl", "quotactl_fd", "swapon", "swapoff", "nfsservctl", "uselib",
    # namespaces
    "setns",
    # the kernel itself
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "bpf", "perf_event_open", "lookup_dcookie", "acct", "syslog",
    "iopl", "ioperm", "vm86", "vm86old", "modify_ldt",
    # the clock
    # (adjtimex and clock_adjtime stay: reading is harmless, setting needs CAP_SYS_TIME)
    "settimeofday", "stime", "clock_settime", "clock_settime64",
    # keyrings, userfaultfd
    "keyctl", "add_key", "request_key", "userfaultfd",
)
DENIED_ENOSYS = ("clone3",)  # its flags sit in memory the filter cannot read; libc falls back

# allow.* gates: the calls each permission opens, and the errno they get when it is off.
GATES: dict[str, tuple[int, tuple[str, ...]]] = {
    "set_hostname": (errno.EPERM, ("sethostname", "setdomainname")),
    "sysvipc": (errno.ENOSYS, ("ipc", "shmget", "shmat", "shmdt", "shmctl", "semget", "semop",
                               "semtimedop", "semtimedop_time64", "semctl", "msgget", "msgsnd",
                               "msgrcv", "msgctl")),
    # POSIX message queues live in the IPC namespace: a jail without its own would open
    # the host's (FreeBSD 14's allow.mqueue, off by default there too).
    "mqueue": (errno.ENOSYS, ("mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
                              "mq_timedsend_time64", "mq_timedreceive_time64", "mq_notify",
                              "mq_getsetattr")),
    "mlock": (errno.EPERM, ("mlock", "mlock2", "mlockall")),
    "mount": (errno.EPERM, ("mount", "umount", "umount2", "mount_setattr", "move_mount",
                            "open_tree", "fsopen", "fsconfig", "fsmount", "fspick")),
}
# With allow.mount: the calls that make a new file system, open only with allow.mount.tmpfs;
# and the flags that make a bind mount (mount's, open_tree's), open only with .nullfs.
NEW_FILE_SYSTEM_CALLS = ("fsopen", "fsconfig", "fsmount")
MS_BIND, MS_REMOUNT = 0x1000, 0x20
# mount() makes a new file system unless one of these says it acts on an existing mount.
MS_EXISTING = (MS_BIND | MS_REMOUNT | 0x2000 | (1 << 17) | (1 << 18) | (1 << 19) | (1 << 20))
OPEN_TREE_CLONE = 0x1

# Socket families (linux/socket.h) that a network namespace confines: a jail's own. Every
# other family below _FAMILIES is refused by number; the kernel itself refuses any at or above
# AF_MAX (46 in 6.x), and one comparison refuses everything from _FAMILIES on, in case it grows.
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET = 1, 2, 10, 16, 17
CONFINED_FAMILIES = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)
_FAMILIES = 64
SOCKET_CALLS = ("socket", "socketpair")  # their family is argument 0 on every ABI
SYS_SOCKET, SYS_SOCKETPAIR = 1, 8  # socketcall(2)'s operations that make sockets
# Filter weakenings (`hyjail.weaken`) that change the compiled program, hence its key.
_COMPILED_WEAKENINGS = ("open-families",)


def denied_calls(allowed: Iterable[str]) -> dict[str, int]:
    """Every whole system call the filter denies for this permission set, with its errno."""
    allowed = set(allowed)
    table = {name: errno.EPERM for name in DENIED_EPERM}
    table.update({name: errno.ENOSYS for name in DENIED_ENOSYS})
    for permission, (err, names) in GATES.items():
        if permission not in allowed:
            table.update({name: err for name in names})
    return table


_programs: dict[str, bytes] = {}  # this process's, by key: a forked jail inherits them
_SYS_SECCOMP = 317  # x86_64
_SECCOMP_SET_MODE_FILTER = 1


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def program(allowed: Iterable[str], traced: Mapping[str, int] | None = None,
            refused: Mapping[str, int] | None = None,
            refused_arguments: Iterable[tuple[str, int, int, int]] = (),
            self_args: Mapping[str, int] | None = None,
            weakened: Iterable[str] | None = None,
            traced_arguments: Iterable[tuple[str, int, int]] = ()) -> bytes:
    """The filter's BPF program: from this process, from the cache, or compiled (and kept).
    Call it on the host's tree: compiling needs libseccomp, which a jail's root may lack.
    `weakened` is the jail's weakenings (`Confinement.weakened`); None: this process's."""
    if weakened is None:
        from hyjail import weaken
        weakened = weaken.weakened()
    weakened = frozenset(weakened)
    traced_arguments = tuple(tuple(t) for t in traced_arguments)
    key = entry_key(allowed, traced, refused, refused_arguments, self_args, weakened,
                    traced_arguments)
    if key in _programs:
        return _programs[key]
    name = f"{key}.bpf"
    compiled = _unchecked(name) if "unchecked-cache" in weakened else _cached(name)
    if compiled is None:
        compiled = _compile(allowed, traced, refused, refused_arguments, self_args, weakened,
                            traced_arguments)
        with _cache() as directory:
            if directory is not None:
                directory.write(name, compiled)
    _programs[key] = compiled
    return compiled


def entry_key(allowed: Iterable[str], traced: Mapping[str, int] | None = None,
              refused: Mapping[str, int] | None = None,
              refused_arguments: Iterable[tuple[str, int, int, int]] = (),
              self_args: Mapping[str, int] | None = None,
              weakened: Iterable[str] = (),
              traced_arguments: Iterable[tuple[str, int, int]] = ()) -> str:
    """The cache key (and file name, with `.bpf`) of program()'s arguments: a hash of what
    the compiled program depends on."""
    inputs = (sorted(set(allowed)), sorted((traced or {}).items()),
              sorted((refused or {}).items()), sorted(tuple(r) for r in refused_arguments),
              sorted((self_args or {}).items()),
              sorted(set(weakened) & set(_COMPILED_WEAKENINGS)),
              sorted(tuple(t) for t in traced_arguments))
    return digest.hexdigest(repr((inputs, _fingerprint())).encode())


def cache_path() -> str:
    """Where compiled programs are kept (for the tests and the battery, which plant bad ones)."""
    from hyjail import platform
    return os.path.join(platform.cache_dir(), "filters")


def _cache():
    """The verified cache directory (a context manager yielding None when it is unusable)."""
    import contextlib

    from hyjail import cache
    directory = cache.open_directory(cache_path())
    return directory if directory is not None else contextlib.nullcontext()


def _cached(name: str) -> bytes | None:
    with _cache() as directory:
        compiled = directory.read(name) if directory is not None else None
    return compiled if compiled is not None and plausible(compiled) else None


def _unchecked(name: str) -> bytes | None:
    """The weakening "unchecked-cache": whatever the file holds, by name, as before."""
    from hyjail import cache
    try:
        with open(os.path.join(cache_path(), name), "rb") as f:
            data = f.read()
    except OSError:
        return None
    return cache.content_unchecked(data)


_BPF_INSN = 8  # struct sock_filter
_BPF_MAXINSNS = 4096
_LOAD_ARCH = struct.pack("<HBBI", 0x20, 0, 0, 4)  # BPF_LD|W|ABS seccomp_data.arch


def plausible(compiled: bytes) -> bool:
    """Shaped like libseccomp's output: whole instructions, within the kernel's limit, and
    beginning by loading the caller's architecture (which every filter of ours checks)."""
    return (len(compiled) % _BPF_INSN == 0 and 0 < len(compiled) // _BPF_INSN <= _BPF_MAXINSNS
            and compiled.startswith(_LOAD_ARCH))


def load(compiled: bytes) -> None:
    """Load a program into the calling thread (no_new_privs must be set)."""
    prog = _SockFprog(len(compiled) // 8, compiled)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(prog)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "seccomp")


def _compile(allowed, traced, refused, refused_arguments, self_args, weakened,
             traced_arguments) -> bytes:
    import tempfile
    with tempfile.TemporaryFile() as out:
        build(allowed, traced, refused, refused_arguments, self_args, weakened,
              traced_arguments).export_bpf(out)
        out.seek(0)
        return out.read()


@functools.cache
def _fingerprint() -> str:
    """What a compiled program depends on besides its inputs: this module and the boot (a
    libseccomp upgrade, with its syscall tables, is in effect after one). Read once, on the
    host's tree."""
    with open(__file__, "rb") as f:
        source = digest.hexdigest(f.read())
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{source} {boot} {os.uname().machine}"


def build(allowed: Iterable[str], traced: Mapping[str, int] | None = None,
          refused: Mapping[str, int] | None = None,
          refused_arguments: Iterable[tuple[str, int, int, int]] = (),
          self_args: Mapping[str, int] | None = None,
          weakened: Iterable[str] = (),
          traced_arguments: Iterable[tuple[str, int, int]] = ()) -> sc.SyscallFilter:
    """The filter for this permission set, not yet loaded. The trace backend adds `traced`
    (call -> tag: RET_TRACE, so its supervisor judges the call), `traced_arguments`
    ((call, argument, value): a traced call listed there is stopped only when that argument
    has one of its values, compared on 32 bits), `refused` (call -> errno) and
    `refused_arguments` ((call, argument, value, errno), compared on 32 bits)."""
    import pyseccomp as sc
    allowed = set(allowed)
    weakened = frozenset(weakened)
    traced = traced or {}
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    # A binary tree of the call numbers: an unjudged call walks a few comparisons, not the
    # whole table (what lets untraced calls run at native speed under the trace backend).
    f.set_attr(sc.Attr.CTL_OPTIMIZE, _BINARY_TREE)
    for arch in (sc.Arch.X86, sc.Arch.X32):
        if not f.exist_arch(arch):
            f.add_arch(arch)
    table = {**denied_calls(allowed), **(refused or {})}
    for name, err in table.items():
        if name not in traced:  # a judged call's gate is its handler's to keep
            f.add_rule(sc.ERRNO(err), name)
    when: dict[str, list[tuple[int, int]]] = {}
    for name, index, value in traced_arguments:
        when.setdefault(name, []).append((index, value))
    for name, tag in traced.items():
        if name in when:
            for index, value in when[name]:
                f.add_rule(sc.TRACE(tag), name, sc.Arg(index, sc.MASKED_EQ, 0xFFFFFFFF, value))
        elif name in (self_args or {}):  # the caller itself (0, all 64 bits): nothing to judge
            f.add_rule(sc.TRACE(tag), name, sc.Arg(self_args[name], sc.NE, 0))
        else:
            f.add_rule(sc.TRACE(tag), name)
    for name, index, value, err in refused_arguments:
        f.add_rule(sc.ERRNO(err), name, sc.Arg(index, sc.MASKED_EQ, 0xFFFFFFFF, value))
    for flag in NAMESPACE_FLAGS:
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for flag in (*NAMESPACE_FLAGS, CLONE_NEWTIME):
        f.add_rule(sc.ERRNO(errno.EPERM), "unshare", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for request in (TIOCSTI, TIOCLINUX):
        f.add_rule(sc.ERRNO(errno.EPERM), "ioctl",
                   sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    if "mount" in allowed:
        _mount_types(f, allowed)
    if "mlock" not in allowed:
        for name in ("mmap", "mmap2"):
            f.add_rule(sc.ERRNO(errno.EPERM), name,
                       sc.Arg(3, sc.MASKED_EQ, MAP_LOCKED, MAP_LOCKED))
    if "socket_af" not in allowed and "open-families" not in weakened:
        _families(f, traced)
    return f


def _families(f: sc.SyscallFilter, traced: Mapping[str, int]) -> None:
    """Refuse the socket families no namespace confines (allow.socket_af is off). Packet
    sockets stay CAP_NET_RAW's to refuse (allow.raw_sockets), as raw inet sockets do."""
    import pyseccomp as sc
    # socketcall's SOCKET and SOCKETPAIR cannot be judged (the family is in memory): refused
    # whatever the family. libseccomp would refuse them anyway, having no way to apply the
    # argument rules below to them; added first, this rule's ENOSYS is the answer.
    if "socketcall" not in traced:  # a traced jail's supervisor judges socketcall
        for operation in (SYS_SOCKET, SYS_SOCKETPAIR):
            f.add_rule(sc.ERRNO(errno.ENOSYS), "socketcall",
                       sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, operation))
    # Every rule on socket(2) and socketpair(2) gives the same errno: libseccomp also makes
    # each one a rule on i386's socketcall, where two actions for one operation conflict.
    refused = sc.ERRNO(errno.EAFNOSUPPORT)
    for name in SOCKET_CALLS:
        for family in range(_FAMILIES):
            if family not in (*CONFINED_FAMILIES, AF_PACKET):
                f.add_rule(refused, name, sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, family))
        f.add_rule(refused, name, sc.Arg(0, sc.GE, _FAMILIES))  # on x86_64: or any high bit


def _mount_types(f: sc.SyscallFilter, allowed: set[str]) -> None:
    """allow.mount is on: refuse the kinds of mount whose allow.mount.<fstype> is not."""
    import pyseccomp as sc
    denied = sc.ERRNO(errno.EPERM)
    if "mount.tmpfs" not in allowed:
        f.add_rule(denied, "mount", sc.Arg(3, sc.MASKED_EQ, MS_EXISTING, 0))
        for name in NEW_FILE_SYSTEM_CALLS:
            f.add_rule(denied, name)
    if "mount.nullfs" not in allowed:  # a bind, but not a remount of one's flags
        f.add_rule(denied, "mount", sc.Arg(3, sc.MASKED_EQ, MS_BIND | MS_REMOUNT, MS_BIND))
        f.add_rule(denied, "open_tree",
                   sc.Arg(2, sc.MASKED_EQ, OPEN_TREE_CLONE, OPEN_TREE_CLONE))
