"""An OCI container's own seccomp profile (config.json's `linux.seccomp`), compiled to BPF.

Owns: reading the profile as the runtime-spec (config-linux.md, "Seccomp") and runc and crun
read it, refusing what cannot be honoured here, and compiling the rest with libseccomp into a
BPF program, kept (like hyjail's own filters) in a verified cache. Not here: loading it. The
runtime loads the program with `syscall_filter.load` just before exec, as a second filter
stacked above the one hyjail always loads (its floor). The kernel runs every stacked filter
and takes the most restrictive answer, so a container's profile can only take calls away:
nothing in it, not even `defaultAction: SCMP_ACT_ALLOW`, can give back a call the floor denies.

Read as runc and crun read it: ERRNO's (and the default's) errno is EPERM when not given; a
rule whose action is the default action is skipped (libseccomp refuses it); a call name this
host's libseccomp does not know is skipped (profiles list the calls of newer kernels); a rule
with several comparisons ANDs them, unless two compare the same argument, which one libseccomp
rule cannot do: then each comparison becomes a rule of its own. SCMP_CMP_MASKED_EQ's `value` is
the mask and `valueTwo` the datum (libseccomp's order). Architectures the profile lists are
added to the native one; one this libseccomp does not know cannot be this host's, so it is
skipped. Rules that overlap resolve as libseccomp resolves them (as under runc and crun).
Unknown properties are ignored, as the spec requires (docker's `archMap` among them).

Refused, one line naming the field: SCMP_ACT_NOTIFY (there is no user-notification agent;
listenerPath is ignored), SCMP_ACT_TRACE (no tracer exists for a container's profile, and under
the trace backend RET_TRACE would stop the call for hyjail's own supervisor), the flag
SECCOMP_FILTER_FLAG_SPEC_ALLOW (it would keep loading a filter from turning on the speculative
store bypass mitigation, where the kernel ties the two), an errno given to an action that takes
none or above the kernel's 4095, non-empty docker `includes`/`excludes` (conditions on arches
and capabilities that the engine resolves before writing config.json; a runtime could only
guess them), and any action, architecture, comparison or flag the spec does not name. Flags
that change nothing for the jail are ignored (see FLAGS).

Compiling podman's default profile takes a while: each program is kept by a key of all it
depends on (the profile's canonical JSON, libseccomp's version, this module, the machine and
kernel) in this process and in `cache_path()`, a `hyjail.cache` directory, which vouches for
each entry; an entry is used only if it also looks like libseccomp's output
(`syscall_filter.plausible`), else it is compiled again.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
from collections.abc import Mapping

from hyjail import digest, jsontext
from hyjail.errors import SetupError, one_line
from hyjail.frozen import frozen

TYPE_CHECKING = False  # typing's own import costs a create 2 ms; only a checker reads these
if TYPE_CHECKING:
    from typing import Any, NoReturn

    import pyseccomp as sc

WHERE = "config.json: linux.seccomp"

# Actions, as libseccomp (and the kernel's SECCOMP_RET_*) number them, so that checking needs
# no libseccomp. ERRNO's low 16 bits hold the errno.
KILL_THREAD = 0x00000000
KILL_PROCESS = 0x80000000
TRAP = 0x00030000
ERRNO = 0x00050000
LOG = 0x7FFC0000
ALLOW = 0x7FFF0000
ACTIONS = {"SCMP_ACT_KILL": KILL_THREAD, "SCMP_ACT_KILL_THREAD": KILL_THREAD,
           "SCMP_ACT_KILL_PROCESS": KILL_PROCESS, "SCMP_ACT_TRAP": TRAP,
           "SCMP_ACT_ERRNO": ERRNO, "SCMP_ACT_ALLOW": ALLOW, "SCMP_ACT_LOG": LOG}
REFUSED_ACTIONS = {
    "SCMP_ACT_NOTIFY": "a seccomp user-notification listener is not supported "
                       "(no listenerPath agent here)",
    "SCMP_ACT_TRACE": "there is no ptrace tracer for a container's profile (under the trace "
                      "backend RET_TRACE would reach hyjail's own supervisor)",
}
MAX_ERRNO = 4095  # the kernel returns at most this errno

# libseccomp's enum scmp_compare.
OPERATORS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
             "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
ARGUMENTS = 6  # a system call's
U64 = (1 << 64) - 1

# The spec's architectures (libseccomp v2.6.0's), by libseccomp's name for each.
ARCHITECTURES = {f"SCMP_ARCH_{name.upper()}": name for name in (
    "x86", "x86_64", "x32", "arm", "aarch64", "mips", "mips64", "mips64n32", "mipsel",
    "mipsel64", "mipsel64n32", "ppc", "ppc64", "ppc64le", "s390", "s390x", "parisc",
    "parisc64", "riscv64", "loongarch64", "m68k", "sh", "sheb")}

# Filter flags: None is accepted and ignored (why: the comment), a string is the refusal.
FLAGS: dict[str, str | None] = {
    # The program is loaded by one thread just before exec, which ends any other.
    "SECCOMP_FILTER_FLAG_TSYNC": None,
    # Only asks the kernel to audit-log the filter's non-allow answers; nothing gets through
    # that would not, and hyjail's loader passes no flags.
    "SECCOMP_FILTER_FLAG_LOG": None,
    # Concerns only a user-notification listener, which is refused.
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": None,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": "it would keep the filter from turning on the "
                                      "speculative store bypass mitigation",
}

_BINARY_TREE = 2  # SCMP_FLTATR_CTL_OPTIMIZE
_TREE_FROM = 32  # calls: a binary tree pays from there (runc's threshold)
_NR_SCMP_ERROR = -1  # libseccomp's answer for a name it does not know


@frozen
class Condition:
    """One comparison of a call's argument: libseccomp's struct scmp_arg_cmp."""

    index: int
    op: int
    value: int
    value_two: int


@frozen
class Rule:
    """One entry of `syscalls`, checked: where it is (for messages), its calls, its action."""

    where: str
    names: tuple[str, ...]
    action: int
    conditions: tuple[Condition, ...]

    def condition_sets(self) -> tuple[tuple[Condition, ...], ...]:
        """The libseccomp rules each of its calls gets: one with every comparison (ANDed), or,
        when two compare the same argument (one rule cannot), one per comparison, as runc."""
        indexes = [c.index for c in self.conditions]
        if len(set(indexes)) < len(indexes):
            return tuple((c,) for c in self.conditions)
        return (self.conditions,)


@frozen
class Profile:
    """A checked profile: the default action, the added architectures (libseccomp's names)
    and the rules, in order."""

    default: int
    architectures: tuple[str, ...]
    rules: tuple[Rule, ...]


def check_profile(profile: Mapping[str, Any], where: str = WHERE) -> None:
    """Refuse (SetupError, one line naming the field) what compile_profile would refuse for
    the profile's own sake; needs no libseccomp, so `create` can call it before the jail
    starts."""
    _parse(profile, where)


def compile_profile(profile: Mapping[str, Any], where: str = WHERE) -> bytes:
    """The profile's BPF program (as libseccomp exports it), from this process, from the
    cache, or compiled (and kept). Call it on the host's tree: compiling needs libseccomp."""
    parsed = _parse(profile, where)
    key = entry_key(profile)
    if key in _programs:
        return _programs[key]
    name = f"{key}.bpf"
    compiled = _cached(name)
    if compiled is None:
        compiled = _compile(parsed, where)
        directory = _cache()
        if directory is not None:
            with directory:
                directory.write(name, compiled)
    _programs[key] = compiled
    return compiled


_programs: dict[str, bytes] = {}  # this process's, by key


def entry_key(profile: Mapping[str, Any]) -> str:
    """The cache key (and file name, with `.bpf`) of a profile's program."""
    canonical = jsontext.dumps(profile, sort_keys=True)
    return digest.hexdigest(f"{canonical}\n{_fingerprint()}".encode())


def cache_path() -> str:
    """Where compiled programs are kept."""
    from hyjail import platform
    return os.path.join(platform.cache_dir(), "oci-filters")


def _cache():
    """The verified cache directory (a context manager), or None when it is unusable."""
    from hyjail import cache
    return cache.open_directory(cache_path())


def _cached(name: str) -> bytes | None:
    from hyjail.ns import syscall_filter
    directory = _cache()
    if directory is None:
        return None
    with directory:
        compiled = directory.read(name)
    return compiled if compiled is not None and syscall_filter.plausible(compiled) else None


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


@functools.cache
def _fingerprint() -> str:
    """What a program depends on besides its profile: this module, libseccomp's version (its
    call tables), the machine and the kernel. Read once; no bindings imported."""
    with open(__file__, "rb") as f:
        source = digest.hexdigest(f.read())
    try:
        library = ctypes.CDLL("libseccomp.so.2")
        library.seccomp_version.restype = ctypes.POINTER(_Version)
        v = library.seccomp_version().contents
        version = f"{v.major}.{v.minor}.{v.micro}"
    except (OSError, AttributeError, ValueError):
        version = "unknown"
    uname = os.uname()
    return f"{source} libseccomp {version} {uname.machine} {uname.release}"


# Checking.


def _parse(profile: Mapping[str, Any], where: str) -> Profile:
    if not isinstance(profile, Mapping):
        _fail(where, _shown(profile), "must be an object")
    if "defaultAction" not in profile:
        _fail(f"{where}.defaultAction", "required")
    default = _action(profile, "defaultAction", "defaultErrnoRet", where)
    architectures = tuple(
        ARCHITECTURES[name] if _known(name, ARCHITECTURES)
        else _fail(at, _shown(name), "not a seccomp architecture (SCMP_ARCH_X86_64, ...)")
        for name, at in _list(profile, "architectures", where))
    for flag, at in _list(profile, "flags", where):
        if not _known(flag, FLAGS):
            _fail(at, _shown(flag), "not a seccomp filter flag")
        if FLAGS[flag] is not None:
            _fail(at, flag, FLAGS[flag])
    rules = tuple(_rule(entry, at) for entry, at in _list(profile, "syscalls", where))
    return Profile(default, architectures, rules)


def _rule(entry: Any, where: str) -> Rule:
    if not isinstance(entry, Mapping):
        _fail(where, _shown(entry), "must be an object")
    for docker in ("includes", "excludes"):
        value = entry.get(docker)
        if value is not None and not (isinstance(value, Mapping)
                                      and not any(value.values())):
            _fail(f"{where}.{docker}", _shown(value),
                  "docker's conditions on arches and capabilities are the engine's to "
                  "resolve before it writes config.json; a runtime could only guess them")
    names = tuple(name if isinstance(name, str) and name
                  else _fail(at, _shown(name), "not a system call's name")
                  for name, at in _list(entry, "names", where))
    if not names:
        _fail(f"{where}.names", "must name at least one system call")
    if "action" not in entry:
        _fail(f"{where}.action", "required")
    action = _action(entry, "action", "errnoRet", where)
    conditions = tuple(_condition(arg, at) for arg, at in _list(entry, "args", where))
    return Rule(where, names, action, conditions)


def _condition(arg: Any, where: str) -> Condition:
    if not isinstance(arg, Mapping):
        _fail(where, _shown(arg), "must be an object")
    for key in ("index", "value", "op"):
        if arg.get(key) is None:
            _fail(f"{where}.{key}", "required")
    index = _number(arg, "index", where, ARGUMENTS - 1,
                    f"a system call has {ARGUMENTS} arguments (0-{ARGUMENTS - 1})")
    value = _number(arg, "value", where, U64, "not a 64-bit unsigned value")
    value_two = _number(arg, "valueTwo", where, U64, "not a 64-bit unsigned value")
    op = arg["op"]
    if not _known(op, OPERATORS):
        _fail(f"{where}.op", _shown(op), "not a seccomp comparison "
              "(SCMP_CMP_NE, _LT, _LE, _EQ, _GE, _GT, _MASKED_EQ)")
    return Condition(index, OPERATORS[op], value, value_two)


def _action(obj: Mapping[str, Any], key: str, errno_key: str, where: str) -> int:
    """obj[key] as libseccomp's action, with obj[errno_key] where the action takes one."""
    name = obj[key]
    at = f"{where}.{key}"
    if _known(name, REFUSED_ACTIONS):
        _fail(at, name, REFUSED_ACTIONS[name])
    if not _known(name, ACTIONS):
        _fail(at, _shown(name), "not a seccomp action "
              "(SCMP_ACT_ALLOW, _ERRNO, _KILL, _KILL_THREAD, _KILL_PROCESS, _TRAP, _LOG)")
    given = obj.get(errno_key)
    if ACTIONS[name] != ERRNO:
        if given is not None:
            _fail(f"{where}.{errno_key}", _shown(given), f"{name} takes no errno")
        return ACTIONS[name]
    err = _number(obj, errno_key, where, MAX_ERRNO, f"not an errno (0-{MAX_ERRNO})")
    return ERRNO | (err if given is not None else errno.EPERM)


def _number(obj: Mapping[str, Any], key: str, where: str, most: int, what: str) -> int:
    """obj[key], an integer from 0 to most (0 when absent or null)."""
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        _fail(f"{where}.{key}", _shown(value), what)
    return value


def _list(obj: Mapping[str, Any], key: str, where: str) -> list[tuple[Any, str]]:
    """obj[key]'s items with where each is (none when absent or null, Go's empty list)."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(f"{where}.{key}", _shown(value), "must be a list")
    return [(item, f"{where}.{key}[{i}]") for i, item in enumerate(value)]


def _known(value: Any, table: Mapping[str, Any]) -> bool:
    return isinstance(value, str) and value in table


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    import json  # a refusal's wording only: off the path of a profile that compiles
    return json.dumps(value, default=repr)[:200]


def _fail(where: str, *parts: str) -> NoReturn:
    raise SetupError(one_line(": ".join((where, *parts))))


# Compiling.


def _compile(profile: Profile, where: str) -> bytes:
    import tempfile

    from hyjail.ns import syscall_filter
    with tempfile.TemporaryFile() as out:
        _build(profile, where).export_bpf(out)
        out.seek(0)
        compiled = out.read()
    if not syscall_filter.plausible(compiled):
        _fail(where, f"compiles to {len(compiled) // 8} BPF instructions, more than the "
                     "kernel's 4096 (list fewer architectures or rules)")
    return compiled


def _build(profile: Profile, where: str) -> sc.SyscallFilter:
    import pyseccomp as sc
    try:
        f = sc.SyscallFilter(profile.default)
    except OSError as e:
        _fail(f"{where}.defaultAction", f"libseccomp refused it ({e.strerror})")
    # pyseccomp does not bind seccomp_arch_resolve_name(3); its handle on libseccomp does.
    resolve = sc._libseccomp.seccomp_arch_resolve_name
    resolve.argtypes, resolve.restype = (ctypes.c_char_p,), ctypes.c_uint32
    for i, name in enumerate(profile.architectures):
        token = resolve(name.encode())
        if token and not f.exist_arch(token):  # unknown here: not this host's
            try:
                f.add_arch(token)
            except OSError as e:
                _fail(f"{where}.architectures[{i}]", name, f"libseccomp refused it "
                                                             f"({e.strerror})")
    calls = {name for rule in profile.rules for name in rule.names}
    if len(calls) > _TREE_FROM:
        # A binary tree of the call numbers (libseccomp <= 2.5.4 mishandles an empty one);
        # an older libseccomp keeps a linear table: slower, the same answers.
        with contextlib.suppress(OSError):
            f.set_attr(sc.Attr.CTL_OPTIMIZE, _BINARY_TREE)
    for rule in profile.rules:
        if rule.action == profile.default:
            continue  # libseccomp refuses a rule that changes nothing
        for name in rule.names:
            number = sc.resolve_syscall(sc.Arch.NATIVE, name)
            if number == _NR_SCMP_ERROR:
                continue  # a call this libseccomp does not know: a newer kernel's
            for conditions in rule.condition_sets():
                args = [sc.Arg(c.index, c.op, c.value, c.value_two) for c in conditions]
                try:
                    f.add_rule(rule.action, number, *args)
                except OSError as e:
                    why = (" (it conflicts with an earlier rule; on i386 libseccomp also "
                           "applies socket rules to socketcall)" if e.errno == errno.EEXIST
                           else "")
                    _fail(rule.where, name, f"libseccomp refused the rule: {e.strerror}{why}")
    return f
