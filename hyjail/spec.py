"""JailSpec: what one jail is, validated once at the edge.

Owns: the frozen description of a jail (root path, hostname, addresses, name, network mode,
command) and every check on user input that does not need the registry or the kernel's
network. The CLI, the library and (later) the jail.conf parser all build a JailSpec through
`JailSpec.create`; everything downstream trusts it.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import stat

from hyjail import allow, charsets
from hyjail.devices import check as check_device
from hyjail.errors import SetupError
from hyjail.frozen import frozen, hidden
from hyjail.limits import Limits
from hyjail.net.addresses import (
    DEFAULT_HOST_ADDRESSES,
    Address,
    host_side_for,
    parse_addresses,
    parse_host_addresses,
    routed,
)

HOST_NAME_MAX = 64  # bytes, as the kernel's sethostname() allows
_LABEL_CHARS = charsets.ALNUM | {"-"}  # a host name's label: 1-63 of these, no '-' at an end
_NAME_CHARS = charsets.ALNUM | {"_", "-"}  # a jail's name: 1-64 of these

# The identity (inside, outside, count): every id but (uid_t)-1, as on the host.
IDENTITY_MAP = ((0, 0, 2**32 - 1),)
USERNS_SIZE = 65536
# --userns without a base: a range of its own per JID, far above ordinary users' ids.
USERNS_AUTO_BASE = 2**30

# Directories of the root that the jail's own filesystems are mounted on: a root without
# them gets none (FreeBSD's jail of a bare directory), one with something else there is refused.
MOUNT_DIRS = ("proc", "dev")


class NetMode(enum.Enum):
    VETH = "veth"  # a veth pair for the jail's addresses (loopback-only when all are loopback)
    NONE = "none"  # loopback only, whatever the addresses


def check_hostname(hostname: str, any_text: bool = False) -> str:
    """A host name as DNS has them; with any_text, anything sethostname(2) takes that
    prints on one line (FreeBSD's jail(8) accepts '_', spaces and the like)."""
    if len(hostname.encode()) > HOST_NAME_MAX:
        raise SetupError(f"{hostname!r}: host name longer than {HOST_NAME_MAX} bytes")
    if any_text:
        if not hostname or not hostname.isprintable():
            raise SetupError(f"host.hostname={hostname!r}: not empty, no control characters")
        return hostname
    labels = hostname.split(".")
    if not all(_label(label) for label in labels):
        raise SetupError(f"{hostname!r}: not a valid host name (letters, digits, '-' and '.')")
    return hostname


def check_domainname(domainname: str) -> str:
    if len(domainname.encode()) > HOST_NAME_MAX or "\0" in domainname:
        raise SetupError(f"host.domainname={domainname!r}: at most {HOST_NAME_MAX} bytes, "
                         f"no NUL")
    return domainname


def check_osrelease(release: str) -> str:
    """FreeBSD's osrelease; "" for the host's own (given as such by `jls -s`, it asks for
    nothing: no tracer to answer uname)."""
    if len(release.encode()) > HOST_NAME_MAX or not release.isprintable():
        raise SetupError(f"osrelease={release!r}: at most {HOST_NAME_MAX} bytes, printable")
    return "" if release == os.uname().release else release


def command_environment(environ: dict[str, str] | None, preserve: bool) -> dict[str, str]:
    """The variables a jail's command gets from its caller: TERM alone (the rest comes from
    the jail's passwd inside), or everything with preserve; then environ's, over them."""
    base = dict(os.environ) if preserve else (
        {"TERM": os.environ["TERM"]} if "TERM" in os.environ else {})
    for name, value in (environ or {}).items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise SetupError(f"--env {name}={value}: a name without '=' and no NUL in either")
        base[name] = value
    return base


def check_user(given: str) -> tuple[str, str | None]:
    """--user USER[:GROUP]: names (or numbers) of the jail's own passwd and group, matched as
    text against those files inside the jail (never a host look-up)."""
    user, colon, group = given.partition(":")
    if not user or (colon and not group) or not given.isprintable() or len(given) > 256:
        raise SetupError(f"--user {given}: USER or USER:GROUP, of the jail's passwd and group")
    return user, group if colon else None


def check_inside(path: str, option: str) -> str:
    if not path.startswith("/") or "\0" in path:
        raise SetupError(f"{option} {path}: an absolute path inside the jail")
    return path


def _on_lan(ip: str, interface: str | None, gateway: str | None,
            vnet_interfaces: tuple[str, ...] | None, mode: NetMode) -> tuple[str, object]:
    """(the addresses alone, the LanSpec) for --interface / jail.conf's interface and vnet:
    their addresses may carry the LAN's /prefix; (ip, None) for a jail on a veth."""
    if interface is None and vnet_interfaces is None:
        if gateway is not None:
            raise SetupError(f"--gateway {gateway}: only for a jail on the LAN (--interface)")
        return ip, None
    from hyjail.net import lan
    if mode is NetMode.NONE:
        raise SetupError("--net none: a jail on the LAN has a network")
    if gateway is not None:
        try:
            gateway = str(ipaddress.ip_address(gateway))
        except ValueError:
            raise SetupError(f"--gateway {gateway}: not an IP address") from None
    plain, prefixes = lan.split(ip)
    if vnet_interfaces is not None:
        names = tuple(lan.check_interface(n, "vnet.interface") for n in vnet_interfaces)
        return plain, lan.LanSpec(names, prefixes, gateway, vnet=True)
    return plain, lan.LanSpec((lan.check_interface(interface),), prefixes, gateway)


def _check_uplink(name: str | None) -> str | None:
    if name is None:
        return None
    from hyjail.net.lan import check_interface
    return check_interface(name, "--nat")


def _published(given: tuple[str, ...]) -> tuple:
    if not given:
        return ()
    from hyjail.net import nat
    return tuple(nat.parse_publish(text) for text in given)


def check_dns(servers: tuple[str, ...]) -> tuple[str, ...]:
    checked = []
    for server in servers:
        try:
            checked.append(str(ipaddress.ip_address(server)))
        except ValueError:
            raise SetupError(f"--dns {server}: not an IP address") from None
    return tuple(checked)


def _label(label: str) -> bool:
    return charsets.made_of(label, _LABEL_CHARS, 1, 63) and "-" not in (label[0], label[-1])


def check_name(name: str) -> str:
    if not charsets.made_of(name, _NAME_CHARS, 1, 64) or name.isdigit():
        raise SetupError(f"{name!r}: a jail name is letters, digits, '_' and '-', not a number")
    return name


def check_jid(jid: int | str) -> int:
    text = str(jid)
    if not text.isdigit() or int(text) < 1:
        raise SetupError(f"{text!r}: a JID is a whole number from 1")
    return int(text)


def check_root(path: str) -> str:
    """Resolve PATH and check it can be a jail's root; return the resolved path."""
    resolved = os.path.realpath(path)
    try:
        st = os.stat(resolved)
    except OSError as e:
        raise SetupError(f"{path}: {e.strerror.lower()}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SetupError(f"{path}: not a directory")
    for name in MOUNT_DIRS:
        sub = os.path.join(resolved, name)
        try:
            sub_st = os.lstat(sub)
        except OSError:
            continue
        if not stat.S_ISDIR(sub_st.st_mode):
            raise SetupError(f"{sub}: not a directory (the jail's /{name} is mounted there)")
    return resolved


# Permissions that cannot go together, and why (refused, never ignored).
CONFLICTS = {
    ("chflags", "mount"): "allow.mount needs the jail's own user namespace, which allow.chflags "
                          "gives up (immutable flags need a capability in the host's)",
}


def check_allowed(allowed: frozenset[str]) -> frozenset[str]:
    for (first, second), reason in CONFLICTS.items():
        if first in allowed and second in allowed:
            raise SetupError(f"allow.{first} and allow.{second}: {reason}")
    for name in sorted(allowed):
        reason = None
        fstype = name.removeprefix("mount.") if name.startswith("mount.") else None
        if fstype is not None:
            reason = allow.MOUNT_TYPES_REFUSED.get(fstype)
            if fstype not in allow.MOUNT_TYPES and reason is None:
                known = ", ".join(sorted(allow.MOUNT_TYPES))
                raise SetupError(f"allow.{name}: unknown file system type (grantable: {known})")
            if reason is None and "mount" not in allowed:
                raise SetupError(f"allow.{name}: needs allow.mount too")
        if reason:
            raise SetupError(f"allow.{name}: cannot be granted: {reason}")
    return allowed


# What --backend accepts: the plan (`hyjail.plan.choose`) reads this table too.
BACKENDS = ("auto", "ns", "trace")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise SetupError(f"--backend {backend}: one of {', '.join(BACKENDS)}")
    return backend


def check_userns_base(base: int) -> int:
    if base != -1 and not 1 <= base <= 2**32 - 1 - USERNS_SIZE:
        raise SetupError(f"--userns {base}: a host uid from 1 that leaves room for "
                         f"{USERNS_SIZE} ids")
    return base


@frozen
class JailSpec:
    """One jail, validated: everything the supervisor needs to start it."""

    path: str
    hostname: str
    addresses: tuple[Address, ...]
    command: tuple[str, ...]
    name: str | None = None
    net: NetMode = NetMode.VETH
    host_addresses: tuple[Address, ...] = DEFAULT_HOST_ADDRESSES
    persist: bool = False  # the jail outlives its command, until it is stopped
    jid: int | None = None  # a requested JID; by default the lowest free one
    environ: tuple[tuple[str, str], ...] = hidden(())
    allowed: frozenset[str] = allow.DEFAULT  # the allow.* permissions root inside has
    limits: Limits = Limits()
    # --userns: map the jail's ids 0-65535 onto host ids from this base (None: identity).
    userns_base: int | None = None
    backend: str = "auto"  # auto, ns or trace: which providers the plan prefers (hyjail.plan)
    domainname: str = ""  # host.domainname: the NIS domain name of the jail's UTS namespace
    osrelease: str = ""  # FreeBSD's osrelease: uname's release in the jail ("": the host's)
    # The administrator's file systems in the jail's tree (hyjail.fstab.JailMount), in order.
    mounts: tuple = ()
    # FreeBSD's ip4=inherit / ip6=inherit: the IP versions of which every host address is
    # the jail's (no network namespace; the tracer judges nothing of that version's
    # addresses, and still confines the rest of R3: abstract unix names, raw sockets).
    inherit_ip: frozenset[int] = frozenset()
    devfs_ruleset: int = 4  # FreeBSD's: which device nodes its /dev holds (ns/mounts.py)
    devices: tuple = ()  # --device: the host's device nodes it holds besides (hyjail.devices)
    # Whom the command runs as (a user and group of the jail's own files; root by default)
    # and where (a directory inside the jail; its root by default): hyjail.ns.whom.
    user: str | None = None
    group: str | None = None
    cwd: str | None = None
    read_only: bool = False  # --read-only: the root read-only, fresh tmpfs on /tmp, /run, ...
    dns: tuple[str, ...] = ()  # --dns: the name servers of the jail's own /etc/resolv.conf
    # On the LAN (hyjail.net.lan.LanSpec): its addresses on an interface of the host's, or
    # interfaces of its own (vnet), instead of a veth.
    lan: object | None = None
    # Out through the host (--nat UPLINK, masqueraded) and in (--publish: hyjail.net.nat).
    nat: str | None = None
    publish: tuple = ()
    # An OCI container's (`hyjail.oci`): a network namespace its caller prepared (podman's,
    # CNI's), joined by path instead of a new one (net is then NONE: no veth of hyjail's);
    # namespaced sysctls set in the jail's namespaces; its process's ids, environment and
    # capabilities exactly (`hyjail.container.ContainerProcess`, for whom and dilution).
    netns_path: str | None = None
    # A pod's IPC namespace, joined by path: (("ipc", PATH),).
    joined: tuple[tuple[str, str], ...] = ()
    sysctl: tuple[tuple[str, str], ...] = ()
    container: object | None = None
    # Where its cgroups go instead of hyjail/<JID> (an OCI config's cgroupsPath: hyjail.cgroups),
    # and a host process counted in them for as long as the jail has them (the pid of an OCI
    # container's stand-in, from which engines read the container's groups).
    cgroup_path: str | None = None
    companion: int | None = None

    @classmethod
    def create(cls, path: str, hostname: str, ip: str, command: list[str] | tuple[str, ...],
               *, name: str | None = None, net: str = "veth", host_ip: str | None = None,
               persist: bool = False, jid: int | str | None = None,
               environ: dict[str, str] | None = None,
               allow_changes: tuple[tuple[str, bool], ...] = (),
               limits: Limits | None = None, userns_base: int | None = None,
               backend: str = "auto", domainname: str = "",
               any_hostname: bool = False, osrelease: str = "",
               mounts: tuple = (), inherit_ip: frozenset[int] = frozenset(),
               devfs_ruleset: int = 4, preserve_env: bool = False, user: str | None = None,
               cwd: str | None = None, read_only: bool = False,
               dns: tuple[str, ...] = (), interface: str | None = None,
               gateway: str | None = None,
               vnet_interfaces: tuple[str, ...] | None = None, nat: str | None = None,
               publish: tuple[str, ...] = (), devices: tuple[str, ...] = ()) -> JailSpec:
        """Build a spec from user-facing values, raising SetupError naming any bad one.
        environ: variables for the command, over a clean environment (the caller's TERM, and
        the user's HOME, SHELL, USER, LOGNAME and PATH, set inside), or over everything of the
        caller's with preserve_env. user: USER[:GROUP] of the jail's; cwd: a directory
        inside. devices: host device nodes (/dev/fuse) the jail's /dev holds besides."""
        if not command and not persist:
            raise SetupError("no command given (only a persistent jail may have none)")
        try:
            mode = NetMode(net)
        except ValueError:
            raise SetupError(f"{net!r}: --net is 'veth' or 'none'") from None
        ip, lan = _on_lan(ip, interface, gateway, vnet_interfaces, mode)
        addresses = parse_addresses(ip)
        hosts = parse_host_addresses(host_ip) if host_ip else DEFAULT_HOST_ADDRESSES
        clash = set(hosts) & set(addresses)
        if clash:
            raise SetupError(f"{clash.pop()}: cannot be both the jail's and the host side's")
        env = command_environment(environ, preserve_env)
        user_name, group = check_user(user) if user is not None else (None, None)
        return cls(
            path=check_root(path),
            hostname=check_hostname(hostname, any_text=any_hostname),
            addresses=addresses,
            command=tuple(command),
            name=check_name(name) if name is not None else None,
            net=mode,
            host_addresses=hosts,
            persist=persist,
            jid=check_jid(jid) if jid is not None else None,
            environ=tuple(env.items()),
            allowed=check_allowed(allow.resolve(allow_changes)),
            limits=limits or Limits(),
            userns_base=check_userns_base(userns_base) if userns_base is not None else None,
            backend=check_backend(backend),
            domainname=check_domainname(domainname),
            osrelease=check_osrelease(osrelease),
            mounts=tuple(mounts),
            inherit_ip=frozenset(inherit_ip),
            devfs_ruleset=devfs_ruleset,  # checked by jail(8)'s parameters (lifecycle)
            devices=tuple(dict.fromkeys(check_device(path) for path in devices)),
            user=user_name, group=group,
            cwd=check_inside(cwd, "--chdir") if cwd is not None else None,
            read_only=read_only,
            dns=check_dns(dns),
            lan=lan,
            nat=_check_uplink(nat),
            publish=_published(publish),
        )._checked()

    def _checked(self) -> JailSpec:
        if "chflags" in self.allowed and self.userns_base is not None:
            raise SetupError("--userns with allow.chflags: immutable flags need jailed root to "
                             "stay in the host's user namespace")
        return self

    def id_map(self, jid: int) -> tuple[tuple[int, int, int], ...]:
        """The jail's user namespace map (inside, outside, count)."""
        if self.userns_base is None:
            return IDENTITY_MAP
        base = USERNS_AUTO_BASE + jid * USERNS_SIZE if self.userns_base == -1 else self.userns_base
        return ((0, base, USERNS_SIZE),)

    def record_params(self) -> dict:
        """What the registry keeps of this spec beyond the jail's identity: what jexec needs
        to confine an entered process exactly like the command, and what `hyjail ls` shows."""
        params: dict = {"allow": sorted(self.allowed), "limits": self.limits.describe(),
                        "rlimits": [list(r) for r in self.limits.rlimits]}
        if self.persist:
            params["persist"] = "1"
        return params

    @property
    def veth_addresses(self) -> tuple[Address, ...]:
        """The addresses the jail's veth carries; empty for a loopback-only jail, and one on
        the LAN."""
        return routed(self.addresses) if self.net is NetMode.VETH and self.lan is None else ()

    @property
    def needs_veth(self) -> bool:
        return bool(self.veth_addresses)

    @property
    def veth_host_addresses(self) -> tuple[Address, ...]:
        return host_side_for(self.veth_addresses, self.host_addresses)
