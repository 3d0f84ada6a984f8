"""The jail's user namespace, and the namespaces it owns.

Owns: making a user namespace with a given id map, and in it the jail's UTS and network
namespaces (and, with allow.mount, a copy of its mount namespace). Jailed processes live in
this user namespace; pid 1 and the host stay outside it. So root inside holds capabilities
only over what this namespace owns (its hostname, its network stack), and none at all over the
host's user namespace, which owns the jail's mount (unless allow.mount), pid, IPC and cgroup
namespaces: the kernel itself refuses jailed root a mount, a device node, a module or the
clock, whatever a capability set or a filter would say.

By default the map is the identity (root inside is uid 0 on files, as with FreeBSD jails);
`--userns` maps the jail's ids onto an unprivileged host range instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator

import prctl

from hyjail import linux


@contextlib.contextmanager
def _throwaway_child(body: Callable[[Callable[[bytes], object], Callable[[], bytes]], None]
                     ) -> Iterator[tuple[int, Callable[[bytes], object], Callable[[], bytes]]]:
    """Fork a child that runs body(say, hear) and exits; yield (its pid, say, hear) to the
    parent. Each side's `say` writes to the other's `hear`, which returns b"" once the other
    is gone. The parent reaps the child on leaving."""
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            # Its /proc must be its owner's, so the parent can write its id map and open its
            # namespaces: a non-dumpable child of a forked (not exec'd) pid 1 would leave them
            # the host's root's. No jailed process exists yet to reach it.
            prctl.set_dumpable(True)
            os.close(to_child_w)
            os.close(to_parent_r)
            body(lambda data: os.write(to_parent_w, data), lambda: os.read(to_child_r, 64))
            code = 0
        finally:
            os._exit(code)
    os.close(to_child_r)
    os.close(to_parent_w)
    try:
        yield pid, (lambda data: os.write(to_child_w, data)), (lambda: os.read(to_parent_r, 64))
    finally:
        os.close(to_child_w)
        os.close(to_parent_r)
        os.waitpid(pid, 0)


def create(id_map: tuple[tuple[int, int, int], ...],
           owned: tuple[tuple[str, int], ...]) -> dict[str, int]:
    """Make a user namespace mapped by id_map and, owned by it, the `owned` namespaces
    ((name, CLONE_* flag) pairs); return an fd of each by name.

    A throwaway child does the unsharing (a process cannot write its own map with a range,
    and the namespaces must be created from inside the user namespace); the caller, still in
    the parent user namespace, writes the map and keeps the namespaces by opening them.
    """
    def unshare_in_child(say: Callable[[bytes], object], hear: Callable[[], bytes]) -> None:
        # Our pid as the mounted /proc knows it, which need not be the pid namespace we are
        # in: pid 1 still sees the host's /proc at this point.
        proc_pid = os.readlink("/proc/self")
        linux.unshare(linux.CLONE_NEWUSER)
        say(proc_pid.encode() + b"\n")
        if hear() == b"m":  # mapped
            linux.unshare(sum(flag for _, flag in owned))
            say(b"n")
            hear()  # until the parent has opened them

    with _throwaway_child(unshare_in_child) as (_, say, hear):
        proc_pid = hear().decode().strip()
        if not proc_pid.isdigit():
            raise OSError("unshare of the user namespace failed")
        text = "".join(f"{inside} {outside} {count}\n" for inside, outside, count in id_map)
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{proc_pid}/{name}", "w") as f:
                f.write(text)
        say(b"m")
        if hear() != b"n":
            raise OSError("unshare of the jail's namespaces failed")
        return {name: os.open(f"/proc/{proc_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
                for name, _ in owned}


def own_mount_namespace() -> None:
    """Move the caller (pid 1, its mounts done) into a copy of its mount namespace owned by
    the jail's user namespace, where root inside may mount (allow.mount) over its own tree.
    The kernel locks every mount copied across, flags and all, so what hyjail made (the
    read-only and masked parts of /proc, the read-only /sys) stays as it is; and no file
    system that needs the host's user namespace (proc, cgroup, mqueue, any disk) can be made.
    """
    def unshare_in_child(say: Callable[[bytes], object], hear: Callable[[], bytes]) -> None:
        # The jail's user namespace as held before its root replaced the host's: a jail
        # whose pid namespace is the host's has no /proc now.
        owner = held_userns()
        if owner is None:
            with open("/proc/self/ns/uts", "rb") as uts:
                owner = linux.owning_userns(uts.fileno())
        linux.setns(owner, linux.CLONE_NEWUSER)
        linux.unshare(linux.CLONE_NEWNS)
        say(b"n")
        hear()  # until the parent has joined it

    with _throwaway_child(unshare_in_child) as (pid, _, hear):
        if hear() != b"n":
            raise OSError("a mount namespace of the jail's own failed")
        # Joined by the child's pidfd (Linux 5.8), not its /proc entry: there may be none.
        fd = os.pidfd_open(pid)
        try:
            linux.setns(fd, linux.CLONE_NEWNS)
        finally:
            os.close(fd)


# An fd of the jail's user namespace, held from before the jail's root replaces the host's
# (a jail whose pid namespace is the host's has no /proc to find it by afterwards).
_held_userns: int | None = None


def hold_jail_userns(uts_fd: int | None = None) -> int:
    """Keep an fd of the user namespace that owns the jail's UTS namespace (ours, or the
    one uts_fd names), for join_jail_userns; returns it (the exec path keeps it open)."""
    global _held_userns
    if uts_fd is not None:
        owner = linux.owning_userns(uts_fd)
    else:
        with open("/proc/self/ns/uts", "rb") as uts:
            owner = linux.owning_userns(uts.fileno())
    if _held_userns is not None:
        os.close(_held_userns)
    _held_userns = owner
    return owner


def held_userns() -> int | None:
    return _held_userns


def join_jail_userns() -> None:
    """Enter the jail's user namespace (held by hold_jail_userns), unless already in it, as
    its root. Afterwards the process has full capabilities there and none outside."""
    global _held_userns
    owner = _held_userns if _held_userns is not None else hold_jail_userns()
    try:
        linux.setns(owner, linux.CLONE_NEWUSER)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL (single-threaded as we are): we are in it already
            raise
    finally:
        os.close(owner)
        _held_userns = None
    if os.getuid() != 0:  # host root is unmapped under --userns: become the jail's root
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
