"""An OCI config.json onto a jail: what each field becomes, and the one line that refuses a
field no backend holds.

Owns the mapping from `hyjail.oci.config.OciConfig` (typed, checked for shape) to the
JailSpec every backend trusts. The rules of a jail are the floor: a container may ask for
less (fewer capabilities, a stricter seccomp profile stacked on the jail's filter, lower
rlimits, limits of memory, pids and CPU), never for more. A field that would take the jail
below its rules (the host's pid, mount, UTS or IPC namespace, a namespace joined by a path
other than a network namespace of its own, a capability jailed root never holds, a device
node) is refused, naming the field; so is one hyjail cannot carry out yet. The table below,
README's conformance table and `hyjail-oci features` say the same.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import struct

from hyjail import apparmor, cgroups, devices, fstab, linux
from hyjail.container import ContainerProcess
from hyjail.devices import Device
from hyjail.errors import SetupError
from hyjail.limits import RLIMITS, Limits
from hyjail.namespaces import JOINABLE, hostname_in, joined_by_a_thread, open_joinable
from hyjail.ns import sysctl as sysctls
from hyjail.ns.dilution import BASE_CAPS, CONTAINER_CAPS, GATED_CAPS
from hyjail.oci.config import OciConfig, OciMount, OciProcess
from hyjail.spec import JailSpec, check_hostname

# Capabilities a container may keep, and the allow.* permission that grants each beyond
# the jail's base set (None: every jail's root keeps it).
GRANTABLE_CAPS: dict[str, str | None] = {
    **dict.fromkeys(BASE_CAPS), **dict.fromkeys(CONTAINER_CAPS),
    **{cap: gate for gate, cap in GATED_CAPS.items()
       if gate in ("reserved_ports", "raw_sockets")},
    "ipc_lock": "mlock",
}
# The file systems every jail makes on its own (read-only /sys, a fresh /proc, a /dev of
# its own with devpts and shared memory): a config's are these, and taken as given.
OWN_MOUNTS = {("proc", "/proc"), ("tmpfs", "/dev"), ("sysfs", "/sys"), ("devpts", "/dev/pts"),
              ("cgroup", "/sys/fs/cgroup"), ("cgroup2", "/sys/fs/cgroup")}
# Options that change nothing here: every mount is nosuid and nodev, private to the jail's
# mount namespace (propagation), made once; time options are the kernel's defaults.
IGNORED_OPTIONS = frozenset({
    "bind", "rbind", "rw", "nosuid", "nodev", "suid", "dev", "exec", "defaults",
    "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable",
    "relatime", "norelatime", "strictatime", "nostrictatime", "noatime", "atime",
    "nodiratime", "diratime", "sync", "async", "nocopyup", "copyup", "z", "Z", "U",
    "idmap", "tmpcopyup", "notmpcopyup"})
TMPFS_DATA = ("size", "mode", "nr_inodes", "nr_blocks", "uid", "gid")
# Devices a jail's /dev holds (`hyjail.devices.DEVICES`, its terminals): rules allowing
# them change nothing.
HELD_DEVICES = {("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9), ("c", 5, 0),
                ("c", 5, 1), ("c", 5, 2), ("c", 136, None)}
BACKEND_ANNOTATION = "hyjail.backend"
UNPRIVILEGED_PORTS = "net.ipv4.ip_unprivileged_port_start"


def jail_spec(config: OciConfig, container_id: str) -> JailSpec:
    """The jail the config describes, or SetupError naming the first field it cannot be."""
    process = config.process
    if process is None:
        raise SetupError("config.json: process: a container to create needs one")
    linux_ = config.linux
    network = _network(config)
    allowed, caps = _capabilities(process)
    from hyjail import allow
    # System V IPC and POSIX queues in the container's own IPC namespace (required above).
    allowed = frozenset(allow.DEFAULT | allowed | {"sysvipc", "mqueue"})
    extra_filter = b""
    if linux_.seccomp is not None:
        from hyjail.oci import seccomp
        extra_filter = seccomp.compile_profile(linux_.seccomp)
    _refuse_unheld(config)
    added = _devices(config)
    joined = _joined(config)  # checked before a pod's hostname is read
    spec = JailSpec.create(
        config.root_path, _hostname(config, container_id), network["ip"], list(process.args),
        name=container_id, net="none", environ=None, backend=_backend(config),
        domainname=config.domainname or "", any_hostname=True,
        mounts=tuple(_mounts(config)), read_only=config.root_readonly,
        cwd=process.cwd, limits=_limits(config, process, added),
        userns_base=_userns_base(config), inherit_ip=network.get("inherit", frozenset()))
    settings = [sysctls.check(name, value, f"config.json: linux.sysctl.{name}", True)
                for name, value in linux_.sysctl]
    if network["path"] and "net_bind_service" in (caps or ()) and UNPRIVILEGED_PORTS not in (
            name for name, _ in settings):
        # The caller's namespace belongs to the host's user namespace, where jailed root
        # holds no CAP_NET_BIND_SERVICE: the namespace's own low ports opened instead, as
        # Docker does for every container.
        settings.append((UNPRIVILEGED_PORTS, "0"))
    from hyjail.frozen import replace
    return replace(
        spec, environ=process.env, allowed=allowed, netns_path=network["path"], joined=joined,
        sysctl=tuple(settings), devices=added, cgroup_path=_cgroup_path(config),
        container=ContainerProcess(uid=process.uid, gid=process.gid,
                                   groups=process.additional_gids, umask=process.umask,
                                   oom_score_adj=process.oom_score_adj, caps=caps,
                                   extra_filter=extra_filter,
                                   apparmor=apparmor.wanted(
                                       process.apparmor_profile,
                                       "config.json: process.apparmorProfile")))


def _joined(config: OciConfig) -> tuple[tuple[str, str], ...]:
    """A pod's IPC namespace, checked now (one of its kind, not the host's), to be joined;
    its UTS namespace, checked alike, gives its hostname to the jail's own (`_hostname`)."""
    joined = []
    for ns in config.linux.namespaces:
        if ns.type in JOINABLE and ns.path is not None:
            try:
                os.close(open_joinable(ns.type, ns.path))
            except SetupError as e:
                raise SetupError(f"config.json: {e}") from None
            if ns.type != "uts":
                joined.append((ns.type, ns.path))
    return tuple(joined)


def _pod_hostname(config: OciConfig) -> str | None:
    for ns in config.linux.namespaces:
        if ns.type == "uts" and ns.path is not None:
            fd = open_joinable("uts", ns.path)
            try:
                return hostname_in(fd)
            finally:
                os.close(fd)
    return None


def _hostname(config: OciConfig, container_id: str) -> str:
    name = _pod_hostname(config) or config.hostname or container_id[:12]
    try:
        return check_hostname(name, any_text=True)
    except SetupError as e:
        raise SetupError(f"config.json: hostname: {e}") from None


def _backend(config: OciConfig) -> str:
    from hyjail.spec import BACKENDS
    wanted = config.annotation(BACKEND_ANNOTATION) or "auto"
    if wanted not in BACKENDS:
        raise SetupError(f"config.json: annotations.{BACKEND_ANNOTATION}: {wanted}: one of "
                         f"{', '.join(BACKENDS)}")
    return wanted


# ---- namespaces and the network -------------------------------------------------------------

# What each namespace left out (the host's) would take from the jail: refused.
REQUIRED_NAMESPACES = {
    "pid": "the host's processes (SPEC R4: a jail sees only its own)",
    "mount": "the host's tree (SPEC R1: a jail sees only the tree below its root)",
    "uts": "the host's hostname (SPEC R2: a jail has its own)",
    "ipc": "the host's System V IPC (hyjail refuses sysvipc=inherit)",
}


def _network(config: OciConfig) -> dict:
    """The jail's network: a namespace of its own (loopback only), or the caller's,
    joined by path (podman's netavark, CNI), with the addresses found there."""
    namespaces = {ns.type: ns for ns in config.linux.namespaces}
    for kind, taken in REQUIRED_NAMESPACES.items():
        if kind not in namespaces:
            raise SetupError(f"config.json: linux.namespaces: no {kind} namespace would leave "
                             f"the container {taken}")
    for ns in config.linux.namespaces:
        if ns.path is not None and ns.type not in ("network", *JOINABLE):
            raise SetupError(f"config.json: linux.namespaces: joining a {ns.type} namespace "
                             f"({ns.path}) is not supported: a jail's own are made for it")
        if ns.type == "time":
            raise SetupError("config.json: linux.namespaces: time: not supported")
    if "user" in namespaces and (namespaces["user"].path or not config.linux.uid_mappings):
        raise SetupError("config.json: linux.namespaces: user: only with uidMappings and "
                         "gidMappings of its own (no path)")
    net = namespaces.get("network")
    if net is None:  # the host's network (podman --network host): FreeBSD's ip4=inherit,
        # ip6=inherit, every host address the jail's, its tracer holding the rest of R3
        return {"ip": "127.0.0.1", "path": None, "inherit": frozenset({4, 6})}
    if net.path is None:
        return {"ip": "127.0.0.1", "path": None}
    addresses = addresses_in(net.path)
    return {"ip": ",".join(addresses) or "127.0.0.1", "path": net.path}


def addresses_in(path: str) -> list[str]:
    """The addresses a network namespace holds (IPv4, then IPv6; loopback left out), read
    from a thread that has joined it. Refuses a namespace that is not one, or is the host's
    (/proc/PID/ns/net of a process outside any jail would give it)."""
    where = f"config.json: linux.namespaces: network: {path}"
    fd = open_joinable("net", path, where)
    try:
        return joined_by_a_thread(fd, linux.CLONE_NEWNET,
                                  lambda: _ipv4_addresses() + _ipv6_addresses(), where)
    finally:
        os.close(fd)


_SIOCGIFCONF = 0x8912
_IFREQ = 40  # struct ifreq on 64-bit Linux


def _ipv4_addresses() -> list[str]:
    import fcntl
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        buffer = bytearray(_IFREQ * 64)
        address = ctypes_address(buffer)
        request = struct.pack("iL", len(buffer), address)
        length, _ = struct.unpack("iL", fcntl.ioctl(s.fileno(), _SIOCGIFCONF, request))
    found = []
    for offset in range(0, length, _IFREQ):
        ip = socket.inet_ntoa(bytes(buffer[offset + 20:offset + 24]))
        if not ip.startswith("127."):
            found.append(ip)
    return found


def ctypes_address(buffer: bytearray) -> int:
    import ctypes
    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))


def _ipv6_addresses() -> list[str]:
    import ipaddress
    found = []
    with contextlib.suppress(FileNotFoundError), open("/proc/thread-self/net/if_inet6") as f:
        for line in f:
            fields = line.split()
            address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            if not (address.is_loopback or address.is_link_local):
                found.append(str(address))
    return found


def _userns_base(config: OciConfig) -> int | None:
    """A user namespace of the container's own: hyjail's --userns, one range of 65536 ids
    from container id 0, the same for users and groups."""
    if not any(ns.type == "user" for ns in config.linux.namespaces):
        return None
    from hyjail.spec import USERNS_SIZE
    uids, gids = config.linux.uid_mappings, config.linux.gid_mappings
    if (len(uids) != 1 or uids != gids or uids[0].container_id != 0
            or uids[0].size != USERNS_SIZE):
        raise SetupError(f"config.json: linux.uidMappings: one range of {USERNS_SIZE} ids from "
                         f"0, the same as gidMappings (hyjail's --userns)")
    return uids[0].host_id


# ---- the process ------------------------------------------------------------------------------

def _capabilities(process: OciProcess) -> tuple[frozenset[str], tuple[str, ...] | None]:
    """(the allow.* permissions the container's capabilities need, the capability set).
    A capability jailed root never holds is refused; so are ambient capabilities and
    capabilities of a process that is not root (which hyjail's dilution gives none)."""
    given = process.capabilities
    if given is None:
        return frozenset(), ()
    field = "config.json: process.capabilities"
    for name in given.bounding:
        if name not in GRANTABLE_CAPS:
            raise SetupError(f"{field}.bounding: CAP_{name.upper()}: a jail's root never "
                             f"holds it")
    for kind in ("effective", "permitted", "inheritable"):
        beyond = set(getattr(given, kind)) - set(given.bounding)
        if beyond:
            raise SetupError(f"{field}.{kind}: CAP_{sorted(beyond)[0].upper()}: not in the "
                             f"bounding set")
    if given.ambient:
        raise SetupError(f"{field}.ambient: not supported (a jail's process holds no ambient "
                         f"capabilities)")
    if process.uid != 0 and (given.effective or given.permitted):
        raise SetupError(f"{field}.effective: a process of uid {process.uid} holds no "
                         f"capabilities in a jail")
    gates = frozenset(gate for name in given.bounding if (gate := GRANTABLE_CAPS[name]))
    return gates, tuple(sorted(set(given.bounding)))


def _cgroup_path(config: OciConfig) -> str | None:
    """linux.cgroupsPath in the cgroupfs driver's form (`/PARENT/NAME`, or relative to the
    runtime's own group): where the jail's groups go. The systemd driver's form
    (`SLICE:PREFIX:NAME`) is `hyjail.oci.scope`'s: None here."""
    path = config.linux.cgroups_path
    if path is None or (":" in path and not path.startswith("/")):
        return None
    parts = [part for part in path.split("/") if part]
    if not parts or "\0" in path or any(part in (".", "..") for part in parts):
        raise SetupError(f"config.json: linux.cgroupsPath: {path}: a group's path, without "
                         f"'.' or '..'")
    if path.startswith("/") and parts[0] == cgroups.GROUP:
        raise SetupError(f"config.json: linux.cgroupsPath: {path}: /{cgroups.GROUP} holds "
                         f"hyjail's own jails' groups")
    return ("/" if path.startswith("/") else "") + "/".join(parts)


def _devices(config: OciConfig) -> tuple[Device, ...]:
    """linux.devices: each the host's node at the same path, of the type and number asked
    (bound, not made: its mode and owner are the host node's, as runc's in a user namespace;
    found by its number where the host's node of that path is another)."""
    found: dict[Device, None] = {}
    for index, asked in enumerate(config.linux.devices):
        where = f"config.json: linux.devices[{index}]: {asked.path}"
        if asked.type == "p":
            raise SetupError(f"{where}: a FIFO: not supported (a device node of the host's is)")
        found[devices.by_number(asked.path, asked.type == "b",
                                os.makedev(asked.major or 0, asked.minor or 0),
                                f"config.json: linux.devices[{index}]:")] = None
    return tuple(found)


def _limits(config: OciConfig, process: OciProcess, added: tuple[Device, ...]) -> Limits:
    """linux.resources as hyjail's limits (cgroups), and the rlimits, each lowered to the
    hard limit the runtime runs with (hyjail never raises one; podman asks 1048576 files).
    Device rules may allow what the jail's /dev holds: its own, and the `added` devices."""
    resources = config.linux.resources
    field = "config.json: linux.resources"
    if resources.other:
        raise SetupError(f"{field}.{resources.other[0]}: not supported")
    if resources.unified:
        raise SetupError(f"{field}.unified: not supported")
    if resources.cpus or resources.mems:
        which = "cpu.cpus" if resources.cpus else "cpu.mems"
        raise SetupError(f"{field}.{which}: not supported (hyjail limits CPU time: "
                         f"cpu.quota, cpu.period and cpu.shares)")
    shares = resources.cpu_shares  # clamped as the kernel does
    shares = None if shares is None else min(max(shares, 2), 262144)
    held = HELD_DEVICES | {("b" if d.block else "c", os.major(d.rdev), os.minor(d.rdev))
                           for d in added}
    for index, rule in enumerate(resources.device_rules):
        if rule.allow and (rule.type, rule.major, rule.minor) not in held and (
                rule.type, rule.major, None) not in held:
            raise SetupError(f"{field}.devices[{index}]: allowing {rule.type} "
                             f"{_number(rule.major)}:{_number(rule.minor)}: a jail's /dev "
                             f"holds only its own devices")
    cpus = None
    if resources.cpu_quota is not None and resources.cpu_quota > 0:
        cpus = resources.cpu_quota / (resources.cpu_period or 100_000)
    rlimits = []
    for name, soft, hard in process.rlimits:
        _, host_hard = resource.getrlimit(RLIMITS[name])
        if host_hard != resource.RLIM_INFINITY:
            hard = host_hard if hard == resource.RLIM_INFINITY else min(hard, host_hard)
            soft = hard if soft == resource.RLIM_INFINITY else min(soft, hard)
        rlimits.append((name, soft, hard))
    return Limits(memory=resources.memory_limit, pids=resources.pids_limit, cpus=cpus,
                  cpu_shares=shares, rlimits=tuple(rlimits))


def _number(value: int | None) -> str:
    return "*" if value is None else str(value)


def _refuse_unheld(config: OciConfig) -> None:
    process = config.process
    if process.selinux_label:
        raise SetupError("config.json: process.selinuxLabel: not supported")
    if config.hooks.create_container:
        raise SetupError("config.json: hooks.createContainer: not supported (a host program "
                         "in the container's namespaces before its rules hold); use "
                         "createRuntime (on the host) or startContainer (in the container)")


# ---- mounts -------------------------------------------------------------------------------------

def _mounts(config: OciConfig) -> list[fstab.JailMount]:
    made = []
    for index, mount in enumerate(config.mounts):
        made += _mount(mount, f"config.json: mounts[{index}]")
    made += [fstab.JailMount("mask", _inside(path, "config.json: linux.maskedPaths"))
             for path in config.linux.masked_paths]
    made += [fstab.JailMount("readonly", _inside(path, "config.json: linux.readonlyPaths"))
             for path in config.linux.readonly_paths]
    return made


def _inside(path: str, field: str) -> str:
    target = os.path.normpath(path).lstrip("/")
    if not target:
        raise SetupError(f"{field}: {path}: the container's root itself")
    return target


def _mount(mount: OciMount, field: str) -> list[fstab.JailMount]:
    kind = "bind" if mount.is_bind else (mount.type or "")
    destination = mount.destination
    if (kind, destination) in OWN_MOUNTS:
        return []
    target = _inside(destination, f"{field}.destination")
    options = [o for o in mount.options if o not in IGNORED_OPTIONS]
    flags = {"ro": mount.read_only, "noexec": "noexec" in mount.options}
    data = []
    for option in options:
        key, _, value = option.partition("=")
        if key in TMPFS_DATA and kind == "tmpfs":
            data.append(option)
        elif option not in ("ro", "noexec"):
            raise SetupError(f"{field}.options: {option}: not one hyjail knows for a {kind} "
                             f"mount")
    if kind == "bind":
        if not mount.source:
            raise SetupError(f"{field}.source: a bind needs one")
        source = fstab.host_source(mount.source, f"{field}.source")
        return [fstab.JailMount("bind", target, source=source, read_only=flags["ro"],
                                recursive=mount.recursive, noexec=flags["noexec"],
                                create=True)]
    if kind in ("tmpfs", "mqueue"):
        return [fstab.JailMount(kind, target, read_only=flags["ro"], noexec=flags["noexec"],
                                data=",".join(data), create=True)]
    raise SetupError(f"{field}: type {kind or '(none)'} on {destination}: a container mounts "
                     f"binds, tmpfs and mqueue (its /proc, /dev, /dev/pts and /sys are the "
                     f"jail's own)")
