"""Kernel parameters a jail may have of its own: the sysctls its namespaces scope (an OCI
config's `linux.sysctl`; podman sets `net.ipv4.ping_group_range` this way).

Owns which names are namespaced, and so a jail's to set (`check`: everything else acts on
the whole host and is refused), and setting them from the jail's pid 1 (`apply`), which has
joined the jail's network, IPC and UTS namespaces but still sees the host's /proc: a file
under /proc/sys/net, /proc/sys/kernel's IPC knobs and /proc/sys/fs/mqueue acts on the
namespace of the process that writes it.
"""

from __future__ import annotations

import os

from hyjail import charsets, linux
from hyjail.errors import SetupError

# The namespace each scoped name belongs to (runc's list: Linux's per-namespace sysctls).
IPC_NAMES = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
             "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
UTS_NAMES = ("kernel.hostname", "kernel.domainname")
_TOP_CHARS = charsets.LOWER | charsets.DIGITS | {"_"}  # a name's first part (kernel, net)
_PART_CHARS = charsets.ALNUM | {"_", "-"}  # each later one; at least one (lo, eth0.1 is two)


def namespace_of(name: str) -> str | None:
    """"net", "ipc" or "uts" for a sysctl its namespace scopes; None for a host-wide one."""
    if name.startswith("net."):
        return "net"
    if name in IPC_NAMES or name.startswith("fs.mqueue."):
        return "ipc"
    if name in UTS_NAMES:
        return "uts"
    return None


def _sysctl_name(name: str) -> bool:
    top, *parts = name.split(".")
    return bool(parts) and charsets.made_of(top, _TOP_CHARS) and \
        all(charsets.made_of(part, _PART_CHARS) for part in parts)


def check(name: str, value: str, field: str, has_network: bool) -> tuple[str, str]:
    """(name, value) if the jail may set it, else SetupError naming `field`."""
    if not _sysctl_name(name) or "\0" in value or "\n" in value.rstrip("\n"):
        raise SetupError(f"{field}: {name!r}={value!r}: not a sysctl name and one-line value")
    scope = namespace_of(name)
    if scope is None:
        raise SetupError(f"{field}: {name}: acts on the whole host, not on the jail's own "
                         f"namespaces")
    if scope == "net" and not has_network:
        raise SetupError(f"{field}: {name}: the jail shares the host's network")
    return name, value


def apply(settings: tuple[tuple[str, str], ...]) -> None:
    """Write each setting through /proc/sys, opened beneath it without symlinks."""
    if not settings:
        return
    base = os.open("/proc/sys", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name, value in settings:
            path = name.replace(".", "/")
            try:
                fd = linux.openat2(base, path, os.O_WRONLY,
                                   linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS
                                   | linux.RESOLVE_NO_MAGICLINKS)
            except OSError as e:
                raise SetupError(f"sysctl {name}: {e.strerror}") from None
            try:
                os.write(fd, value.encode())
            except OSError as e:
                raise SetupError(f"sysctl {name}={value}: {e.strerror}") from None
            finally:
                os.close(fd)
    finally:
        os.close(base)
