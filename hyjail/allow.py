"""FreeBSD's `allow.*` jail permissions: which exist, their defaults, and what each grants.

Owns: the names (as `--allow NAME` and `allow.NAME=1` spell them), the default set, and turning
user input into the frozen set a JailSpec carries. How a permission is enforced belongs to the
backend (`hyjail.ns.dilution` on the namespace backend); a permission the backend cannot grant
is refused when the jail is created, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hyjail.errors import SetupError

# name -> (on by default, what it lets root inside do)
PERMISSIONS: Mapping[str, tuple[bool, str]] = {
    # FreeBSD: "the jail root may exercise root privileges"; off, uid 0 is an ordinary user.
    "suser": (True, "root inside keeps root's powers over the jail (the capabilities the "
                    "rest grant); allow.nosuser: none at all, uid 0 is only a file owner"),
    "set_hostname": (True, "change the jail's hostname (never the host's)"),
    "reserved_ports": (True, "bind ports below 1024 as root"),
    "raw_sockets": (False, "open raw and packet sockets (their source is still the jail's IP)"),
    "sysvipc": (False, "use System V IPC (in the jail's own IPC namespace)"),
    "mqueue": (False, "use POSIX message queues (in the jail's own IPC namespace)"),
    "mlock": (False, "lock memory, within RLIMIT_MEMLOCK"),
    "chflags": (False, "set immutable and append-only file flags (jailed root then stays in "
                       "the host's user namespace)"),
    "mount": (False, "mount and unmount in the jail's own tree (each kind of file system also "
                     "needs its allow.mount.<fstype>)"),
    # FreeBSD: "access to other protocol stacks that have not had jail functionality added".
    "socket_af": (False, "open sockets of the families no network namespace confines (vsock, "
                         "which reaches the hypervisor and the host, bluetooth, CAN, TIPC, "
                         "ALG, ...), and i386's socketcall(2) socket creation, whose family "
                         "no filter can see; needs a network namespace"),
}
DEFAULT: frozenset[str] = frozenset(name for name, (on, _) in PERMISSIONS.items() if on)

# allow.mount.<fstype>, FreeBSD's names: what each lets root inside mount, or why it cannot.
# Linux decides before a mount which types a user namespace may make, and a seccomp filter
# cannot read the type's name, so "tmpfs" grants the kernel's whole user-namespace-safe set.
MOUNT_TYPES: Mapping[str, str] = {
    "tmpfs": "new tmpfs (and the kernel's other user-namespace-safe kinds: ramfs, devpts, "
             "overlay, a read-only sysfs)",
    "nullfs": "bind mounts of the jail's own tree",
}
MOUNT_TYPES_REFUSED: Mapping[str, str] = {
    "procfs": "a new proc needs the jail's pid namespace to belong to its user namespace, "
              "which hyjail keeps the host's",
    "linprocfs": "a new proc needs the jail's pid namespace to belong to its user namespace, "
                 "which hyjail keeps the host's",
    "devfs": "device nodes are never granted; the jail's /dev is made for it",
    "fdescfs": "/dev/fd is already /proc/self/fd",
    "linsysfs": "the jail's /sys is already mounted (read-only)",
    "fusefs": "a jail has no /dev/fuse",
    "zfs": "not a Linux file system",
}


def known(name: str) -> bool:
    """True for a permission name (without `allow.`), `mount.<fstype>` included."""
    return name in PERMISSIONS or (name.startswith("mount.") and len(name) > len("mount."))


def resolve(changes: Iterable[tuple[str, bool]]) -> frozenset[str]:
    """The default set with each (name, on) change applied in order; unknown names refused."""
    allowed = set(DEFAULT)
    for name, on in changes:
        if not known(name):
            names = ", ".join([*sorted(PERMISSIONS), "mount.<fstype>"])
            raise SetupError(f"allow.{name}: unknown permission (known: {names})")
        (allowed.add if on else allowed.discard)(name)
    return frozenset(allowed)


def parse_option(text: str) -> tuple[str, bool]:
    """`--allow` values: `NAME`, `allow.NAME`, `NAME=0|1`, `noNAME` (FreeBSD's negation)."""
    name, sep, value = text.removeprefix("allow.").partition("=")
    if sep:
        return name, parse_truth(f"allow.{name}", value)
    if name.startswith("no") and known(name[2:]):
        return name[2:], False
    return name, True


TRUE = ("1", "true", "yes", "on")  # how a boolean parameter's value may be spelled
FALSE = ("0", "false", "no", "off")


def parse_truth(what: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise SetupError(f"{what}={value}: not a boolean (1 or 0)")
