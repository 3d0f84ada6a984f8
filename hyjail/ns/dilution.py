"""Diluting root (SPEC R5) on the namespace backend: the last steps before a jailed exec.

Owns: the one function, `Confinement.apply`, that both the jail's command (`ns.init`) and an
entered process (`ns.enter`, for jexec) run just before exec, so the two can never differ:
join the jail's user namespace, lower the rlimits, cut the capability bounding set to what
ordinary root work needs, clear the inheritable and ambient sets, switch user (jexec -u), set
no_new_privs, load the seccomp filter, and then check from /proc that all of it holds.

What root keeps, by default: file ownership and permission overrides, setuid/setgid to other
users, kill, chroot, binding ports below 1024 and setting the jail's hostname (the last two are
`allow.reserved_ports` and `allow.set_hostname`). Capabilities held in the jail's user
namespace reach only what it owns, its hostname and its network stack; CAP_NET_ADMIN is never
kept, so the jail cannot change its addresses or routes.
"""

from __future__ import annotations

import binascii  # base64's own (base64 itself imports re)
import os
import resource

import prctl

from hyjail import linux
from hyjail.errors import SetupError
from hyjail.frozen import frozen
from hyjail.limits import RLIMITS
from hyjail.ns import syscall_filter, userns

BASE_CAPS = ("chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid",
             "sys_chroot", "audit_write")
GATED_CAPS = {"set_hostname": "sys_admin", "reserved_ports": "net_bind_service",
              "raw_sockets": "net_raw", "mount": "sys_admin", "chflags": "linux_immutable"}
# Held in the host's user namespace (allow.chflags, or a host without user namespaces),
# sys_admin would reach the host's kernel. With allow.chflags the jail's hostname is still
# root's to set, by the rule that a user namespace's owner holds every capability in it;
# without user namespaces the supervisor sets it (R2's ptrace provider).
HOST_USERNS_NEVER = ("sys_admin",)
# A chroot is left by a second chroot: a chrooted jail's root never keeps sys_chroot.
CHROOT_NEVER = ("sys_chroot",)
# What an OCI container may keep besides, in the jail's own user namespace only (runc's and
# podman's defaults ask for them): file capabilities it writes are namespaced to it, the
# bounding set and securebits only narrow, and a device node needs the host's namespace.
CONTAINER_CAPS = ("setpcap", "setfcap", "mknod")


def kept_caps(allowed: frozenset[str], in_host_userns: bool = False,
              chrooted: bool = False) -> tuple[str, ...]:
    if "suser" not in allowed:  # allow.nosuser: jailed root holds no capability
        return ()
    never = (HOST_USERNS_NEVER if in_host_userns or stays_in_host_userns(allowed) else ()) \
        + (CHROOT_NEVER if chrooted else ())
    gated = dict.fromkeys(cap for gate, cap in GATED_CAPS.items() if gate in allowed)
    return tuple(cap for cap in (*BASE_CAPS, *gated) if cap not in never)


def stays_in_host_userns(allowed: frozenset[str]) -> bool:
    """allow.chflags: jailed root stays where CAP_LINUX_IMMUTABLE means something."""
    return "chflags" in allowed


def cap_mask(names: tuple[str, ...]) -> int:
    return sum(1 << getattr(prctl, f"CAP_{name.upper()}") for name in names)


@frozen
class Account:
    """A user of the jail's own passwd, resolved: name, uid, gid."""

    name: str
    uid: int
    gid: int
    # Supplementary groups, computed from the jail's /etc/group (`hyjail.accounts`); None
    # only under the host-nss weakening, which asks NSS inside the jail (initgroups).
    groups: tuple[int, ...] | None = ()


@frozen
class Confinement:
    """What a jailed process may keep: its allow.* set, rlimits and account."""

    allowed: frozenset[str]
    rlimits: tuple[tuple[str, int, int], ...] = ()
    account: Account | None = None  # switch to this user (jexec -u); else stay root
    # Whether jailed processes live in the jail's user namespace (R5's kernel provider); if
    # not, root stays in the host's, where it never keeps sys_admin.
    userns: bool = True
    # Whether the jail's root is a chroot (R1's ptrace provider): then no sys_chroot.
    chrooted: bool = False
    # A traced jail: the calls its supervisor judges (call -> prefilter tag), and the calls
    # it refuses outright.
    traced: tuple[tuple[str, int], ...] = ()
    # (call, argument, value): a traced call listed here is judged only with these values.
    traced_arguments: tuple[tuple[str, int, int], ...] = ()
    # (call, argument): a traced call whose argument is 0 (the caller itself) runs unjudged.
    self_args: tuple[tuple[str, int], ...] = ()
    refused: tuple[tuple[str, int], ...] = ()
    # Landlock scopes (signals, abstract unix sockets) that keep the jail's processes from
    # reaching outside the jail where no namespace does; 0 for none.
    landlock_scopes: int = 0
    # (call, argument index, value, errno): refused when that argument has that value.
    refused_arguments: tuple[tuple[str, int, int, int], ...] = ()
    # The battery's deliberate weakenings (`hyjail.weaken`); none, outside its own tests.
    weakened: frozenset[str] = frozenset()
    # An OCI container's (`hyjail.container.ContainerProcess`): its capability set, within
    # what the jail's root keeps (None: all of that); its own seccomp profile, loaded after
    # the jail's filter; its umask and OOM score.
    caps: tuple[str, ...] | None = None
    extra_filter: bytes = b""
    umask: int | None = None
    oom_score_adj: int | None = None
    apparmor: str | None = None  # its AppArmor profile (None or "unconfined": none)

    @property
    def keep(self) -> tuple[str, ...]:
        kept = kept_caps(self.allowed, in_host_userns=not self.userns, chrooted=self.chrooted)
        if self.caps is None:
            return kept
        in_own_userns = ("suser" in self.allowed and self.userns
                         and not stays_in_host_userns(self.allowed))
        return tuple(c for c in (*kept, *(CONTAINER_CAPS if in_own_userns else ()))
                     if c in self.caps)

    def to_params(self) -> dict:
        """The confinement as the registry keeps it (without the account), so that jexec
        confines an entered process exactly like the command."""
        return {"userns": self.userns, "chrooted": self.chrooted,
                "traced": [list(t) for t in self.traced],
                "self_args": [list(t) for t in self.self_args],
                "traced_arguments": [list(t) for t in self.traced_arguments],
                "refused": [list(r) for r in self.refused],
                "landlock_scopes": self.landlock_scopes,
                "refused_arguments": [list(r) for r in self.refused_arguments],
                "weakened": sorted(self.weakened),
                **({"caps": list(self.caps)} if self.caps is not None else {}),
                **({"apparmor": self.apparmor} if self.apparmor else {}),
                **({"extra_filter": binascii.b2a_base64(self.extra_filter, newline=False).decode()}
                   if self.extra_filter else {})}

    @classmethod
    def from_params(cls, params: dict, account: Account | None = None) -> Confinement:
        """The jail's own confinement from its registry record (to_params's counterpart)."""
        held = params.get("confinement", {})
        rlimits = tuple((name, int(soft), int(hard))
                        for name, soft, hard in params.get("rlimits", ()))
        return cls(frozenset(params.get("allow", ())), rlimits, account,
                   userns=held.get("userns", True), chrooted=held.get("chrooted", False),
                   traced=tuple((name, tag) for name, tag in held.get("traced", ())),
                   self_args=tuple((name, at) for name, at in held.get("self_args", ())),
                   traced_arguments=tuple(tuple(t) for t in held.get("traced_arguments", ())),
                   refused=tuple((name, err) for name, err in held.get("refused", ())),
                   landlock_scopes=held.get("landlock_scopes", 0),
                   refused_arguments=tuple(tuple(r) for r in held.get("refused_arguments", ())),
                   weakened=frozenset(held.get("weakened", ())),
                   caps=tuple(held["caps"]) if "caps" in held else None,
                   apparmor=held.get("apparmor"),
                   extra_filter=binascii.a2b_base64(held.get("extra_filter", "")))

    def prepare(self) -> Confinement:
        """Compile the filter now, while the host's tree (and libseccomp) is in reach: call
        it before the root changes; the jail side then only loads it."""
        if "no-filter" not in self.weakened:
            self._program()
        return self

    def _program(self) -> bytes:
        return syscall_filter.program(self.allowed, dict(self.traced), dict(self.refused),
                                      self.refused_arguments, dict(self.self_args),
                                      weakened=self.weakened,
                                      traced_arguments=self.traced_arguments)

    def apply(self) -> None:
        """Confine the calling (single-threaded, about to exec) process. Raises SetupError
        when any part does not hold afterwards: a jail never runs half-diluted."""
        if self.umask is not None:
            os.umask(self.umask)
        if self.oom_score_adj is not None:  # still root of the host's user namespace here
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(self.oom_score_adj))
        if self.apparmor and self.apparmor != "unconfined":  # as runc: before caps go
            from hyjail import apparmor
            apparmor.confine_on_exec(self.apparmor)
        if self.userns and not stays_in_host_userns(self.allowed):
            userns.join_jail_userns()
        for name, soft, hard in self.rlimits:
            resource.setrlimit(RLIMITS[name], (soft, hard))
        keep = self.keep
        wanted = cap_mask(keep)
        if "all-caps" in self.weakened:
            wanted = linux.capability_sets()["bounding"]
        for cap in range(linux.last_cap() + 1):  # by number: newer caps than prctl knows go too
            if not wanted & (1 << cap):
                prctl.capbset_drop(cap)
        prctl.cap_inheritable.limit()
        linux.clear_ambient_caps()
        if self.account is not None:
            if self.account.groups is None:
                os.initgroups(self.account.name, self.account.gid)
            else:  # never initgroups: NSS would load the jail's modules into this process
                os.setgroups(list(self.account.groups))
            os.setgid(self.account.gid)
            os.setuid(self.account.uid)  # leaving uid 0 clears every capability
        if os.geteuid() == 0 and "all-caps" not in self.weakened:
            prctl.cap_effective.limit(*keep)  # effective must stay within permitted
            prctl.cap_permitted.limit(*keep)
        prctl.set_no_new_privs(True)
        if self.landlock_scopes:
            linux.landlock_scope(self.landlock_scopes)
        if "no-filter" not in self.weakened:
            syscall_filter.load(self._program())
        if self.extra_filter:  # stacked: the kernel takes the stricter answer of the two
            syscall_filter.load(self.extra_filter)
        _verify(wanted, filtered="no-filter" not in self.weakened)


def _verify(bounding: int, filtered: bool = True) -> None:
    """Read back, from the kernel (a chrooted process may have no /proc), that the sets,
    no_new_privs and the filter hold."""
    sets = linux.capability_sets()
    expected = {"bounding": bounding, "inheritable": 0, "ambient": 0}
    for name, value in expected.items():
        if sets[name] != value:
            raise SetupError(f"superuser dilution did not hold: {name} set is "
                             f"{sets[name]:#x}")
    if sets["permitted"] & ~bounding or not prctl.get_no_new_privs() or (
            filtered and not prctl.get_seccomp()):
        raise SetupError("superuser dilution did not hold: permitted set, no_new_privs or "
                         "seccomp")
