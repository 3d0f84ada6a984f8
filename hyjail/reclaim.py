"""Undoing what a jail whose supervisor died left on the host.

Owns: killing a stale jail's pid 1 if it somehow outlived its supervisor (pid and start time
must both match), deleting its host veth end if its network namespace still holds it,
removing its addresses from the LAN's interface (a trace jail's aliases), unmounting a chroot
jail's mounts from the host's tree, and removing its cgroups.
The registry calls this for every stale record it finds; nothing else needs to.
"""

from __future__ import annotations

import contextlib
import os
import signal

from hyjail import linux
from hyjail.record import Record


def reclaim(record: Record) -> None:
    """Undo what a jail whose supervisor is gone left on the host."""
    if record.init_pid and linux.process_start_time(record.init_pid) == record.init_start:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.init_pid, signal.SIGKILL)
    if record.host_link and os.path.exists(f"/sys/class/net/{record.host_link}"):
        from hyjail.net import link
        link.reclaim(record.host_link)
    nat = record.params.get("nat") if isinstance(record.params, dict) else None
    if isinstance(nat, dict):
        from hyjail.net import link
        link.reclaim_nat(nat)  # its rules, and forwarding no other jail needs
    lan = record.params.get("lan") if isinstance(record.params, dict) else None
    if isinstance(lan, dict) and lan.get("mode") == "alias" and lan.get("added"):
        from hyjail.net import link
        link.reclaim_lan(lan)  # its addresses off the LAN's interface
    targets = record.params.get("host_mounts") if isinstance(record.params, dict) else None
    if isinstance(targets, list) and targets:
        _unmount_on_host(record.path, [t for t in targets if isinstance(t, str)])
    if not record.params.get("rootless"):  # a rootless jail has no cgroups of its own
        from hyjail import cgroups
        cgroups.remove_jail(record)


# A chroot jail's mount points, looked up as the jail resolves them: never above its root.
_IN_ROOT = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
_AT_FDCWD = -100


def _unmount_on_host(path: str, targets: list[str]) -> None:
    """Unmount, last first, what `hyjail.ns.mounts.carry_out_on_host` left at `targets`
    beneath `path` when its supervisor died: each looked up as the jail resolves it (never
    above its root) and unmounted only if a mount begins there."""
    try:
        root = linux.openat2(_AT_FDCWD, path, os.O_PATH | os.O_DIRECTORY,
                             linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS)
    except OSError:
        return
    try:
        for target in reversed(targets):
            with contextlib.suppress(OSError):
                fd = linux.openat2(root, target, os.O_PATH, _IN_ROOT)
                try:
                    parent = linux.openat2(root, os.path.dirname(target) or ".",
                                           os.O_PATH | os.O_DIRECTORY, _IN_ROOT)
                    try:
                        if linux.mount_id(fd) != linux.mount_id(parent):
                            linux.umount2(f"/proc/self/fd/{fd}", linux.MNT_DETACH)
                    finally:
                        os.close(parent)
                finally:
                    os.close(fd)
    finally:
        os.close(root)
