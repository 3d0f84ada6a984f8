"""An OCI bundle's config.json (and an exec's process.json), read and validated once at the edge.

Owns: reading `<bundle>/config.json` and `hyjail-oci exec --process FILE` safely (no symlink
for config.json, regular files only, at most 4 MiB, UTF-8 JSON object), and turning them into
frozen, typed data (`OciConfig`, `OciProcess` and their parts) as the OCI runtime-spec 1.0-1.2
describes them (config.md, config-linux.md). Every refusal is one `SetupError` line naming the
field's path as written in the file (`config.json: mounts[3].destination: ...`). Unknown
properties are ignored, as the spec requires of runtimes; a known property of the wrong type
is refused. The absent and the spec's "unset" values (-1, 0 where runc reads them so) become
None, so that downstream code has one way to say "not given".

Not here: what hyjail makes of each field (which backend holds it, what is refused because no
backend can) belongs to the mapping module; seccomp profiles are only checked for shape and
kept as plain data for the module that compiles them. Nothing here touches the kernel but the
two file reads and load_bundle's stat of the root.
"""

from __future__ import annotations

import errno
import os
import resource
import stat

from hyjail import charsets, jsontext
from hyjail.errors import SetupError
from hyjail.frozen import frozen, made_by
from hyjail.limits import RLIMITS

MAX_FILE = 4 << 20  # bytes: podman's configs are ~10 KiB with a seccomp profile
U32 = 2**32 - 1
U64 = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
ID_MAX = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel, never an id
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
PROPAGATIONS = ("shared", "slave", "private", "unbindable",
                "rshared", "rslave", "rprivate", "runbindable")
# Linux's capabilities by number, 0 (CAP_CHOWN) to 40 (CAP_CHECKPOINT_RESTORE).
CAPABILITIES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
    "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
    "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
HOOK_KINDS = (("prestart", "prestart"), ("createRuntime", "create_runtime"),
              ("createContainer", "create_container"), ("startContainer", "start_container"),
              ("poststart", "poststart"), ("poststop", "poststop"))
# Resource sections hyjail has no field for: named in OciResources.other when they ask for
# something, so the runtime refuses or ignores them knowingly.
OTHER_SECTIONS = ("blockIO", "hugepageLimits", "network", "rdma")
OTHER_MEMORY = ("kernel", "kernelTCP", "swappiness", "disableOOMKiller", "useHierarchy",
                "checkBeforeUpdate")
OTHER_CPU = ("realtimeRuntime", "realtimePeriod", "burst", "idle")
TYPE_CHECKING = False  # typing's own import costs every create 2 ms; only a checker reads these
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any
    # A value and its path -> the value checked, or _Invalid.
    _Check = Callable[[Any, str], Any]


# ---- the typed result ---------------------------------------------------------------------------

@frozen
class OciCapabilities:
    """Lowercase names without CAP_ ("net_bind_service"), each set without duplicates."""

    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()


@frozen
class OciProcess:
    args: tuple[str, ...]  # never empty, args[0] never ""
    cwd: str  # absolute, normalized
    terminal: bool = False
    console_size: tuple[int, int] | None = None  # (height, width)
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # (NAME, VALUE) in order; a later NAME replaced
    capabilities: OciCapabilities | None = None
    # (name, soft, hard) with hyjail.limits' names ("nofile") and its RLIM_INFINITY for
    # the spec's 2**64-1, so that they go to hyjail.limits.Limits as they are.
    rlimits: tuple[tuple[str, int, int], ...] = ()
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    apparmor_profile: str | None = None
    selinux_label: str | None = None
    user_name: str | None = None  # user.username: Windows-only in the spec, kept for show


@frozen
class OciIdMapping:
    container_id: int
    host_id: int
    size: int  # > 0; both ranges end within 32 bits


@frozen
class OciMount:
    destination: str  # absolute, normalized
    type: str | None = None
    source: str | None = None
    options: tuple[str, ...] = ()
    # runtime-spec 1.1's idmapped mounts: kept so the mapping can refuse them knowingly
    uid_mappings: tuple[OciIdMapping, ...] = ()
    gid_mappings: tuple[OciIdMapping, ...] = ()

    @property
    def is_bind(self) -> bool:
        return self.type == "bind" or "bind" in self.options or "rbind" in self.options

    @property
    def recursive(self) -> bool:
        return "rbind" in self.options

    @property
    def read_only(self) -> bool:
        """The last of "ro" and "rw" wins, as mount(8) reads an option list."""
        read_only = False
        for option in self.options:
            if option in ("ro", "rw"):
                read_only = option == "ro"
        return read_only

    def flag(self, name: str) -> bool:
        return name in self.options


@frozen
class OciNamespace:
    type: str  # one of NAMESPACE_TYPES
    path: str | None = None  # absolute: join this namespace instead of making one


@frozen
class OciDeviceRule:
    """One cgroup device rule (linux.resources.devices[])."""

    allow: bool
    type: str = "a"  # "a", "c" or "b"
    major: int | None = None  # None: any (the spec's absent, or -1)
    minor: int | None = None
    access: str = "rwm"  # a subset of "rwm", in that order; absent or "" means all


@frozen
class OciResources:
    memory_limit: int | None = None  # bytes
    memory_swap: int | None = None  # bytes of memory + swap, as the spec counts it
    memory_reservation: int | None = None
    cpu_shares: int | None = None
    cpu_quota: int | None = None  # microseconds per period
    cpu_period: int | None = None
    cpus: str | None = None  # cpuset list, "0-3,6"
    mems: str | None = None
    pids_limit: int | None = None
    device_rules: tuple[OciDeviceRule, ...] = ()
    unified: tuple[tuple[str, str], ...] = ()  # cgroup v2 files, sorted by name
    # Present sections (and memory./cpu. fields) that ask for something hyjail has no field
    # for, by their names in the file: "blockIO", "memory.swappiness", ...
    other: tuple[str, ...] = ()


@frozen
class OciDevice:
    """A device node to make in the container (linux.devices[])."""

    path: str  # absolute, normalized
    type: str  # "c", "b", "u" or "p"
    major: int | None = None  # given for c, b and u
    minor: int | None = None
    file_mode: int | None = None  # permission bits only (the type comes from `type`)
    uid: int | None = None
    gid: int | None = None


@frozen
class OciHook:
    path: str  # absolute
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "NAME=VALUE" strings, passed as they are
    timeout: int | None = None  # seconds, > 0


@frozen
class OciHooks:
    prestart: tuple[OciHook, ...] = ()
    create_runtime: tuple[OciHook, ...] = ()
    create_container: tuple[OciHook, ...] = ()
    start_container: tuple[OciHook, ...] = ()
    poststart: tuple[OciHook, ...] = ()
    poststop: tuple[OciHook, ...] = ()


@frozen
class OciLinux:
    namespaces: tuple[OciNamespace, ...] = ()
    uid_mappings: tuple[OciIdMapping, ...] = ()
    gid_mappings: tuple[OciIdMapping, ...] = ()
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: tuple[tuple[str, str], ...] = ()  # in the file's order
    resources: OciResources = made_by(OciResources)
    cgroups_path: str | None = None
    devices: tuple[OciDevice, ...] = ()
    seccomp: dict | None = None  # checked for shape, a deep copy of the file's
    rootfs_propagation: str | None = None  # one of PROPAGATIONS
    mount_label: str | None = None
    # Kept as the file has them (deep copies), no meaning yet.
    intel_rdt: dict | None = None
    personality: dict | None = None
    time_offsets: dict | None = None

    def namespace(self, type: str) -> OciNamespace | None:
        return next((ns for ns in self.namespaces if ns.type == type), None)


@frozen
class OciConfig:
    oci_version: str
    root_path: str  # the bundle's root.path, resolved against the bundle when relative
    root_readonly: bool = False
    process: OciProcess | None = None  # the spec needs it for start only
    hostname: str | None = None
    domainname: str | None = None
    mounts: tuple[OciMount, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()  # sorted by name
    hooks: OciHooks = made_by(OciHooks)
    linux: OciLinux = made_by(OciLinux)
    raw: dict = made_by(dict, kept=True)  # a deep copy

    def annotation(self, name: str) -> str | None:
        return next((value for key, value in self.annotations if key == name), None)


# ---- entry points -------------------------------------------------------------------------------

def load_bundle(bundle: str) -> OciConfig:
    """`<bundle>/config.json`, parsed, with root.path an existing directory."""
    bundle = os.path.abspath(bundle)
    data = _read_json(os.path.join(bundle, "config.json"), follow=False)
    config = parse(data, bundle)
    try:
        st = os.stat(config.root_path)
    except OSError as e:
        raise SetupError(f"config.json: root.path: {config.root_path}: "
                         f"{os.strerror(e.errno or errno.EIO)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SetupError(f"config.json: root.path: {config.root_path}: not a directory")
    return config


def parse(data: dict, bundle: str) -> OciConfig:
    """A config.json's object: no file, no look at the root (load_bundle checks that)."""
    try:
        return _config(data, bundle)
    except _Invalid as e:
        raise SetupError(e.line("config.json")) from None


def load_process(path: str) -> OciProcess:
    """`hyjail-oci exec --process FILE`: a JSON object of config.json's `process` schema.

    The engine names the file (containerd may pass /proc/self/fd/N), so symbolic links to it
    are followed; it must still be a regular file."""
    data = _read_json(path, follow=True)
    try:
        return _process(data, "")
    except _Invalid as e:
        raise SetupError(e.line("process.json")) from None


def parse_process(data: dict, where: str = "process") -> OciProcess:
    """A process object; refusals name fields under `where` ("process.args: ...")."""
    try:
        return _process(data, where)
    except _Invalid as e:
        raise SetupError(e.line("")) from None


# ---- reading the file ---------------------------------------------------------------------------

def _read_json(path: str, follow: bool) -> dict:
    """The file's JSON object; refusals name the file by its path."""
    # O_NONBLOCK: a FIFO put in the file's place must not hang the runtime at open.
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        reason = ("a symbolic link (refused: it could point anywhere)" if e.errno == errno.ELOOP
                  else os.strerror(e.errno or errno.EIO))
        raise SetupError(f"{path}: {reason}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SetupError(f"{path}: not a regular file")
        chunks, size = [], 0
        if st.st_size <= MAX_FILE:
            # Read to the end, not st_size: a file still growing is caught as well.
            while size <= MAX_FILE and (chunk := os.read(fd, MAX_FILE + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
        if st.st_size > MAX_FILE or size > MAX_FILE:
            raise SetupError(f"{path}: larger than {MAX_FILE >> 20} MiB")
    except OSError as e:
        raise SetupError(f"{path}: {os.strerror(e.errno or errno.EIO)}") from None
    finally:
        os.close(fd)
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SetupError(f"{path}: not UTF-8 (at byte {e.start})") from None
    try:
        data = jsontext.loads(text, constants=False)
    except RecursionError:
        raise SetupError(f"{path}: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, NaN, an integer of thousands of digits
        raise SetupError(f"{path}: not JSON: {e}") from None
    if not isinstance(data, dict):
        raise SetupError(f"{path}: must be a JSON object, not {_kind(data)}")
    return data


# ---- config.json --------------------------------------------------------------------------------

def _config(data: Any, bundle: str) -> OciConfig:
    data = _object(data, "")
    version = _required(data, "ociVersion", "", _string)
    if not version.startswith("1."):
        raise _Invalid("ociVersion", f"{_show(version)}: hyjail reads runtime-spec 1.x configs")
    root = _object(_required(data, "root", "", None), "root")
    root_path = _required(root, "path", "root", _string)
    if not root_path:
        raise _Invalid("root.path", "must be a non-empty path")
    annotations = _string_map(data, "annotations", "")
    process = data.get("process")
    hooks = _optional(data, "hooks", "", _object)
    linux = _optional(data, "linux", "", _object)
    return OciConfig(
        oci_version=version,
        # The spec: "either an absolute path or a relative path to the bundle".
        root_path=_normal(os.path.join(bundle, root_path)),
        root_readonly=_bool(root, "readonly", "root"),
        process=None if process is None else _process(process, "process"),
        hostname=_optional(data, "hostname", "", _string),
        domainname=_optional(data, "domainname", "", _string),
        mounts=tuple(_mount(m, at) for m, at in _items(data, "mounts", "")),
        annotations=tuple(sorted(annotations)),
        hooks=OciHooks() if hooks is None else _hooks(hooks, "hooks"),
        linux=OciLinux() if linux is None else _linux(linux, "linux"),
        raw=_copy(data, ""),
    )


def _mount(value: Any, at: str) -> OciMount:
    mount = _object(value, at)
    return OciMount(
        destination=_required(mount, "destination", at, _absolute),
        type=_optional(mount, "type", at, _string),
        source=_optional(mount, "source", at, _string),
        options=_strings(mount, "options", at),
        uid_mappings=_id_mappings(mount, "uidMappings", at),
        gid_mappings=_id_mappings(mount, "gidMappings", at),
    )


def _hooks(hooks: dict, at: str) -> OciHooks:
    return OciHooks(**{name: tuple(_hook(h, where) for h, where in _items(hooks, key, at))
                       for key, name in HOOK_KINDS})


def _hook(value: Any, at: str) -> OciHook:
    hook = _object(value, at)
    return OciHook(
        path=_required(hook, "path", at, _absolute),
        args=_strings(hook, "args", at),
        env=_strings(hook, "env", at),
        timeout=_optional(hook, "timeout", at, _ints(1, 2**31 - 1)),
    )


# ---- process ------------------------------------------------------------------------------------

def _process(value: Any, at: str) -> OciProcess:
    process = _object(value, at)
    args_at = _at(at, "args")
    args = process.get("args")
    if (not isinstance(args, list) or not args
            or not all(isinstance(arg, str) for arg in args)):
        raise _Invalid(args_at, "must be a non-empty list of strings")
    args = _strings(process, "args", at)
    if not args[0]:
        raise _Invalid(f"{args_at}[0]", "must not be empty (it names the program)")
    # The spec makes user, uid and gid REQUIRED; runc (Go's zero values) takes their absence
    # as 0, and so do engines' process.json files with "user": {}.
    user_at = _at(at, "user")
    user = _optional(process, "user", at, _object) or {}
    size = _optional(process, "consoleSize", at, _object)
    size_at = _at(at, "consoleSize")
    return OciProcess(
        args=args,
        cwd=_required(process, "cwd", at, _absolute),
        terminal=_bool(process, "terminal", at),
        # winsize's fields are unsigned short
        console_size=None if size is None else (
            _required(size, "height", size_at, _ints(0, 65535)),
            _required(size, "width", size_at, _ints(0, 65535))),
        uid=_optional(user, "uid", user_at, _ints(0, ID_MAX)) or 0,
        gid=_optional(user, "gid", user_at, _ints(0, ID_MAX)) or 0,
        umask=_optional(user, "umask", user_at, _ints(0, 0o777)),
        additional_gids=tuple(_ints(0, ID_MAX)(g, where)
                              for g, where in _items(user, "additionalGids", user_at)),
        user_name=_optional(user, "username", user_at, _string),
        env=_env(process, at),
        capabilities=_capabilities(process, at),
        rlimits=_rlimits(process, at),
        no_new_privileges=_bool(process, "noNewPrivileges", at),
        oom_score_adj=_optional(process, "oomScoreAdj", at, _ints(-1000, 1000)),
        apparmor_profile=_optional(process, "apparmorProfile", at, _string),
        selinux_label=_optional(process, "selinuxLabel", at, _string),
    )


def _env(process: dict, at: str) -> tuple[tuple[str, str], ...]:
    env: list[tuple[str, str]] = []
    index: dict[str, int] = {}
    env_at = _at(at, "env")
    for i, entry in enumerate(_strings(process, "env", at)):
        name, equals, value = entry.partition("=")
        if not equals or not name:
            raise _Invalid(f"{env_at}[{i}]", f"{_show(entry)}: must be NAME=VALUE")
        if name in index:  # runc: a later NAME=... replaces the earlier in its place
            env[index[name]] = (name, value)
        else:
            index[name] = len(env)
            env.append((name, value))
    return tuple(env)


def _capabilities(process: dict, at: str) -> OciCapabilities | None:
    caps = _optional(process, "capabilities", at, _object)
    if caps is None:
        return None
    caps_at = _at(at, "capabilities")
    sets = {}
    for key in CAPABILITY_SETS:
        names: list[str] = []
        for i, name in enumerate(_strings(caps, key, caps_at)):
            short = name[4:].lower() if name[:4].upper() == "CAP_" else ""
            if short not in CAPABILITIES:
                raise _Invalid(f"{caps_at}.{key}[{i}]",
                               f"{_show(name)}: not a Linux capability (CAP_CHOWN ... "
                               "CAP_CHECKPOINT_RESTORE)")
            if short not in names:
                names.append(short)
        sets[key] = tuple(names)
    return OciCapabilities(**sets)


def _rlimits(process: dict, at: str) -> tuple[tuple[str, int, int], ...]:
    out: list[tuple[str, int, int]] = []
    for value, where in _items(process, "rlimits", at):
        rlimit = _object(value, where)
        kind = _required(rlimit, "type", where, _string)
        name = kind[7:].lower() if kind.startswith("RLIMIT_") else ""
        if name not in RLIMITS:
            known = ", ".join(f"RLIMIT_{n.upper()}" for n in sorted(RLIMITS))
            raise _Invalid(f"{where}.type", f"{_show(kind)}: not one of {known}")
        if any(seen == name for seen, _, _ in out):
            raise _Invalid(f"{where}.type", f"{kind} given twice")
        soft = _required(rlimit, "soft", where, _ints(0, U64))
        hard = _required(rlimit, "hard", where, _ints(0, U64))
        if soft > hard:
            raise _Invalid(where, f"{kind}: soft {soft} is above hard {hard}")
        out.append((name, _rlim(soft), _rlim(hard)))
    return tuple(out)


def _rlim(value: int) -> int:
    # The spec's RLIM_INFINITY is the uint64 2**64-1; Python's resource module spells it -1.
    return resource.RLIM_INFINITY if value == U64 else value


# ---- linux --------------------------------------------------------------------------------------

def _linux(linux: dict, at: str) -> OciLinux:
    namespaces: list[OciNamespace] = []
    for value, where in _items(linux, "namespaces", at):
        ns = _object(value, where)
        kind = _required(ns, "type", where, _string)
        if kind not in NAMESPACE_TYPES:
            raise _Invalid(f"{where}.type",
                           f"{_show(kind)}: not one of {', '.join(NAMESPACE_TYPES)}")
        if any(seen.type == kind for seen in namespaces):
            raise _Invalid(f"{where}.type", f"{kind} given twice")
        namespaces.append(OciNamespace(kind, _optional(ns, "path", where, _absolute)))
    propagation = _optional(linux, "rootfsPropagation", at, _string) or None
    if propagation is not None and propagation not in PROPAGATIONS:
        raise _Invalid(_at(at, "rootfsPropagation"),
                       f"{_show(propagation)}: not one of {', '.join(PROPAGATIONS)}")
    resources = _optional(linux, "resources", at, _object)
    seccomp = _optional(linux, "seccomp", at, _object)
    return OciLinux(
        namespaces=tuple(namespaces),
        uid_mappings=_id_mappings(linux, "uidMappings", at),
        gid_mappings=_id_mappings(linux, "gidMappings", at),
        masked_paths=tuple(_absolute(p, w) for p, w in _items(linux, "maskedPaths", at)),
        readonly_paths=tuple(_absolute(p, w) for p, w in _items(linux, "readonlyPaths", at)),
        sysctl=tuple(_string_map(linux, "sysctl", at)),
        resources=OciResources() if resources is None else _resources(resources,
                                                                      _at(at, "resources")),
        cgroups_path=_optional(linux, "cgroupsPath", at, _string) or None,
        devices=tuple(_device(d, w) for d, w in _items(linux, "devices", at)),
        seccomp=None if seccomp is None else _seccomp(seccomp, _at(at, "seccomp")),
        rootfs_propagation=propagation,
        mount_label=_optional(linux, "mountLabel", at, _string),
        intel_rdt=_raw_object(linux, "intelRdt", at),
        personality=_raw_object(linux, "personality", at),
        time_offsets=_raw_object(linux, "timeOffsets", at),
    )


def _id_mappings(obj: dict, key: str, at: str) -> tuple[OciIdMapping, ...]:
    out = []
    for value, where in _items(obj, key, at):
        mapping = _object(value, where)
        inside = _required(mapping, "containerID", where, _ints(0, U32))
        outside = _required(mapping, "hostID", where, _ints(0, U32))
        size = _required(mapping, "size", where, _ints(1, U32))
        if max(inside, outside) + size > 2**32:
            raise _Invalid(where, f"{inside}+{size} or {outside}+{size} ends beyond 32 bits")
        out.append(OciIdMapping(inside, outside, size))
    return tuple(out)


def _device(value: Any, at: str) -> OciDevice:
    device = _object(value, at)
    kind = _required(device, "type", at, _string)
    if kind not in ("c", "b", "u", "p"):
        raise _Invalid(f"{at}.type", f"{_show(kind)}: not one of c, b, u, p")
    number = _ints(0, U32)
    major = _optional(device, "major", at, number)
    minor = _optional(device, "minor", at, number)
    if kind != "p" and (major is None or minor is None):
        raise _Invalid(f"{at}.{'minor' if major is not None else 'major'}",
                       f"required for a device of type {kind}")
    mode = _optional(device, "fileMode", at, _ints(0, U32))
    return OciDevice(
        path=_required(device, "path", at, _absolute),
        type=kind,
        major=major,
        minor=minor,
        # runc ORs the type's S_IF* bits in; only the permission bits are the file's own
        file_mode=None if mode is None else mode & 0o7777,
        uid=_optional(device, "uid", at, _ints(0, ID_MAX)),
        gid=_optional(device, "gid", at, _ints(0, ID_MAX)),
    )


def _resources(res: dict, at: str) -> OciResources:
    memory = _optional(res, "memory", at, _object) or {}
    cpu = _optional(res, "cpu", at, _object) or {}
    pids = _optional(res, "pids", at, _object) or {}
    memory_at, cpu_at = _at(at, "memory"), _at(at, "cpu")
    other = [key for key in OTHER_SECTIONS if _asks(res, key, at)]
    other += [f"memory.{k}" for k in OTHER_MEMORY if _asks(memory, k, memory_at)]
    other += [f"cpu.{k}" for k in OTHER_CPU if _asks(cpu, k, cpu_at)]
    # runc's readings: -1 is "unlimited" and 0 "not set" (Go's zero value) for these.
    limit = _unset(_optional(memory, "limit", memory_at, _ints(-1, I64_MAX)))
    swap = _unset(_optional(memory, "swap", memory_at, _ints(-1, I64_MAX)))
    if limit is not None and swap is not None and swap < limit:
        raise _Invalid(f"{memory_at}.swap", f"{swap} is below memory.limit {limit} "
                       "(swap counts memory and swap together)")
    return OciResources(
        memory_limit=limit,
        memory_swap=swap,
        memory_reservation=_unset(_optional(memory, "reservation", memory_at,
                                            _ints(-1, I64_MAX))),
        cpu_shares=_optional(cpu, "shares", cpu_at, _ints(0, U64)) or None,
        cpu_quota=_unset(_optional(cpu, "quota", cpu_at, _ints(-1, I64_MAX))),
        cpu_period=_optional(cpu, "period", cpu_at, _ints(0, U64)) or None,
        cpus=_cpu_list(cpu, "cpus", cpu_at),
        mems=_cpu_list(cpu, "mems", cpu_at),
        pids_limit=_positive(_optional(pids, "limit", _at(at, "pids"), _ints(I64_MIN, I64_MAX))),
        device_rules=tuple(_device_rule(r, w) for r, w in _items(res, "devices", at)),
        unified=tuple(sorted(_string_map(res, "unified", at))),
        other=tuple(other),
    )


def _device_rule(value: Any, at: str) -> OciDeviceRule:
    rule = _object(value, at)
    kind = _optional(rule, "type", at, _string) or "a"
    if kind not in ("a", "c", "b"):
        raise _Invalid(f"{at}.type", f"{_show(kind)}: not one of a, c, b")
    access = _optional(rule, "access", at, _string) or "rwm"
    if not set(access) <= set("rwm"):
        raise _Invalid(f"{at}.access", f"{_show(access)}: letters of r, w, m only")
    wildcard = _ints(-1, U32)  # -1: any, as older engines wrote it
    major = _optional(rule, "major", at, wildcard)
    minor = _optional(rule, "minor", at, wildcard)
    return OciDeviceRule(
        allow=_required(rule, "allow", at, _boolean),
        type=kind,
        major=None if major == -1 else major,
        minor=None if minor == -1 else minor,
        access="".join(c for c in "rwm" if c in access),
    )


def _cpu_list(obj: dict, key: str, at: str) -> str | None:
    text = _optional(obj, key, at, _string)
    if not text:
        return None
    if not _is_cpu_list(text):
        raise _Invalid(_at(at, key), f"{_show(text)}: must be a list such as 0-3,6")
    return text


def _is_cpu_list(text: str) -> bool:
    """cpuset.cpus / cpuset.mems syntax: 0-3,6 (ASCII digits, ranges, commas)."""
    return all(0 < len(bounds) <= 2 and all(charsets.made_of(b, charsets.DIGITS) for b in bounds)
               for bounds in (part.split("-") for part in text.split(",")))


def _asks(obj: dict, key: str, at: str) -> bool:
    """Whether an unsupported field asks for something (present, not null, not false)."""
    value = obj.get(key)
    if key in OTHER_SECTIONS:
        kind = list if key == "hugepageLimits" else dict
        if value is not None and not isinstance(value, kind):
            raise _Invalid(_at(at, key), f"must be {'a list' if kind is list else 'an object'}")
        return bool(value)
    return value is not None and value is not False


def _seccomp(seccomp: dict, at: str) -> dict:
    """Shape only: what the compiling module walks without checking types again."""
    _required(seccomp, "defaultAction", at, _string)
    _optional(seccomp, "defaultErrnoRet", at, _ints(0, U32))
    _strings(seccomp, "architectures", at)
    _strings(seccomp, "flags", at)
    _optional(seccomp, "listenerPath", at, _absolute)
    _optional(seccomp, "listenerMetadata", at, _string)
    for value, where in _items(seccomp, "syscalls", at):
        syscall = _object(value, where)
        if not _strings(syscall, "names", where):
            raise _Invalid(f"{where}.names", "must be a non-empty list of strings")
        _required(syscall, "action", where, _string)
        _optional(syscall, "errnoRet", where, _ints(0, U32))
        for arg, arg_at in _items(syscall, "args", where):
            arg = _object(arg, arg_at)
            _required(arg, "index", arg_at, _ints(0, 5))  # a system call has six arguments
            _required(arg, "value", arg_at, _ints(0, U64))
            _optional(arg, "valueTwo", arg_at, _ints(0, U64))
            _required(arg, "op", arg_at, _string)
    return _copy(seccomp, at)


def _raw_object(obj: dict, key: str, at: str) -> dict | None:
    value = _optional(obj, key, at, _object)
    return None if value is None else _copy(value, _at(at, key))


# ---- typed access, each naming the field's path -------------------------------------------------

class _Invalid(Exception):
    """A refusal at a field's path; the entry points turn it into one SetupError line."""

    def __init__(self, at: str, reason: str):
        super().__init__(at, reason)
        self.at, self.reason = at, reason

    def line(self, label: str) -> str:
        return ": ".join(part for part in (label, self.at, self.reason) if part)


def _at(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _optional(obj: dict, key: str, at: str, check: _Check) -> Any:
    """obj[key] checked, or None when absent or null (null is Go's absent, as runc reads it)."""
    value = obj.get(key)
    return None if value is None else check(value, _at(at, key))


def _required(obj: dict, key: str, at: str, check: _Check | None) -> Any:
    value = obj.get(key)
    if value is None:
        raise _Invalid(_at(at, key), "required")
    return value if check is None else check(value, _at(at, key))


def _items(obj: dict, key: str, at: str) -> list[tuple[Any, str]]:
    """A list field's items with their paths (`mounts[3]`); absent is empty."""
    value = obj.get(key)
    if value is None:
        return []
    where = _at(at, key)
    if not isinstance(value, list):
        raise _Invalid(where, "must be a list")
    return [(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _object(value: Any, at: str) -> dict:
    if not isinstance(value, dict):
        raise _Invalid(at, f"must be an object, not {_kind(value)}")
    return value


def _string(value: Any, at: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(at, f"must be a string, not {_kind(value)}")
    if "\0" in value:
        raise _Invalid(at, f"{_show(value)}: contains NUL")
    try:
        value.encode("utf-8")  # a lone surrogate from a \ud800 escape names no bytes
    except UnicodeEncodeError:
        raise _Invalid(at, f"{_show(value)}: not valid Unicode") from None
    return value


def _strings(obj: dict, key: str, at: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is not None and not isinstance(value, list):
        raise _Invalid(_at(at, key), f"must be a list of strings, not {_kind(value)}")
    return tuple(_string(item, where) for item, where in _items(obj, key, at))


def _string_map(obj: dict, key: str, at: str) -> list[tuple[str, str]]:
    value = _optional(obj, key, at, _object) or {}
    where = _at(at, key)
    out = []
    for name, text in value.items():
        name_at = f"{where}[{_show(name)}]"
        if not _string(name, name_at):
            raise _Invalid(where, "a name is empty")
        out.append((name, _string(text, name_at)))
    return out


def _absolute(value: Any, at: str) -> str:
    path = _string(value, at)
    if not path.startswith("/"):
        raise _Invalid(at, f"{_show(path)}: must be an absolute path")
    return _normal(path)


def _normal(path: str) -> str:
    path = os.path.normpath(path)
    # normpath keeps a leading "//" (POSIX leaves it to the implementation); Linux does not.
    return "/" + path.lstrip("/") if path.startswith("//") else path


def _boolean(value: Any, at: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(at, f"must be true or false, not {_kind(value)}")
    return value


def _bool(obj: dict, key: str, at: str) -> bool:
    return bool(_optional(obj, key, at, _boolean))


def _ints(low: int, high: int) -> _Check:
    """A check for a whole number in low..high; JSON's true and 1.0 are not numbers here."""
    def check(value: Any, at: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Invalid(at, f"must be an integer in {low}..{high}, not {_show(value)}")
        return value
    return check


def _unset(value: int | None) -> int | None:
    return None if value in (-1, 0) else value


def _positive(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None


def _copy(value: Any, at: str) -> Any:
    """A deep copy of JSON data, sharing nothing with the caller's."""
    try:
        return jsontext.loads(jsontext.dumps(value))
    except (TypeError, ValueError, RecursionError):
        raise _Invalid(at, "holds something that is not JSON data") from None


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
