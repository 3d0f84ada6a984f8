"""Which namespaces a jail's first process makes, and which user namespace owns each: the
description both backends' jail sides and the supervisors read (`hyjail.enforcement` derives
it from the plan).

Owns only the flags: nothing here creates a namespace or reads the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from hyjail import linux


@dataclass(frozen=True)
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
