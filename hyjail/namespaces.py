"""Which namespaces a jail's first process makes, and which user namespace owns each: the
description both backends' jail sides and the supervisors read (`hyjail.enforcement` derives
it from the plan).

Owns only the flags, and the check of a pod's namespace an OCI container joins by path
(`open_joinable`): nothing here creates a namespace or reads the plan.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable

from hyjail import linux
from hyjail.errors import SetupError
from hyjail.frozen import frozen

TYPE_CHECKING = False  # typing's own costs every start 2 ms; only a checker reads these
if TYPE_CHECKING:
    from typing import TypeVar
    T = TypeVar("T")


@frozen
class Namespaces:
    """The namespaces the jail's first process makes (mount: whenever R1 is the kernel's)."""
    mount: bool  # R1: a mount namespace and pivot_root (else a chroot)
    pid: bool  # R4, R6, R7: pid 1 of its own pid namespace, with a /proc of its own
    net: bool  # R3: a network namespace (and a veth for an address other than loopback)
    uts: bool
    ipc: bool
    cgroup: bool
    user: bool  # R5: jailed processes live in the jail's own user namespace

    def host_owned_flags(self, allowed: frozenset[str]) -> int:
        """The namespaces the host's user namespace owns (pid is made by the supervisor)."""
        flags = linux.CLONE_NEWNS if self.mount else 0
        flags |= linux.CLONE_NEWIPC if self.ipc else 0
        flags |= linux.CLONE_NEWCGROUP if self.cgroup else 0
        if not self.user:
            flags |= linux.CLONE_NEWUTS if self.uts else 0
        if self.net and (not self.user or "chflags" in allowed):
            flags |= linux.CLONE_NEWNET
        return flags

    def jail_owned(self, allowed: frozenset[str]) -> tuple[tuple[str, int], ...]:
        """The namespaces the jail's user namespace owns: its hostname, and its network
        stack unless allow.chflags keeps root in the host's user namespace (where it must
        hold no CAP_NET_ADMIN over the jail's network)."""
        if not self.user:
            return ()
        owned = (("uts", linux.CLONE_NEWUTS),)
        if self.net and "chflags" not in allowed:
            owned += (("net", linux.CLONE_NEWNET),)
        return owned


# The namespaces an OCI container may join by path besides the network: a pod's. (A pod's
# UTS namespace is read for its hostname, not joined: the jail's own UTS namespace is how
# jexec finds the jail's user namespace, `hyjail.ns.userns.hold_jail_userns`.)
JOINABLE = {"ipc": linux.CLONE_NEWIPC, "uts": linux.CLONE_NEWUTS}
_KINDS = {"net": linux.CLONE_NEWNET, **JOINABLE}


def open_joinable(kind: str, path: str, where: str | None = None) -> int:
    """A caller's namespace at path (netavark's /run/netns/NAME; a pod's /proc/PID/ns/KIND,
    a magic link), opened and checked to be one of that kind and not the host's (this
    process's nor init's: jails would then share the host's network or System V IPC, or
    learn its hostname)."""
    where = where or f"linux.namespaces: {kind}: {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SetupError(f"{where}: {e.strerror}") from None
    try:
        try:
            found = linux.namespace_type(fd)
        except OSError:
            found = None
        if found != _KINDS[kind]:
            raise SetupError(f"{where}: not {'a network' if kind == 'net' else 'an ' + kind} "
                             f"namespace")
        inode = os.fstat(fd).st_ino
        for host in (f"/proc/self/ns/{kind}", f"/proc/1/ns/{kind}"):
            with contextlib.suppress(OSError):
                if os.stat(host).st_ino == inode:
                    raise SetupError(f"{where}: the host's own "
                                     f"{'network' if kind == 'net' else kind} namespace")
    except BaseException:
        os.close(fd)
        raise
    return fd


def joined_by_a_thread(fd: int, flag: int, look: Callable[[], T], where: str) -> T:
    """look(), called by a thread that has joined the namespace fd names (a thread's network
    and UTS namespaces are its own: the process's stay as they were). SetupError naming
    `where` if it fails."""
    found: list = []
    errors: list[BaseException] = []

    def joined() -> None:
        try:
            linux.setns(fd, flag)
            found.append(look())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    import threading
    thread = threading.Thread(target=joined)
    thread.start()
    thread.join()
    if errors:
        raise SetupError(f"{where}: {errors[0]}")
    return found[0]


def hostname_in(uts_fd: int) -> str:
    """The hostname a UTS namespace holds (a pod's)."""
    return joined_by_a_thread(uts_fd, linux.CLONE_NEWUTS, socket.gethostname,
                              "reading a pod's hostname")
