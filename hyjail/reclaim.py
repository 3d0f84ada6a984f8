"""Undoing what a jail whose supervisor died left on the host.

Owns: killing a stale jail's pid 1 if it somehow outlived its supervisor (pid and start time
must both match), deleting its host veth end if its network namespace still holds it,
removing its addresses from the LAN's interface (a trace jail's aliases), detaching a trace
jail's copy of its root (with its mounts) from the registry's directory, and removing its
cgroups.
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
    copy = record.params.get("host_root_copy") if isinstance(record.params, dict) else None
    if isinstance(copy, str) and copy:  # a trace jail's root with its mounts (ns/mounts.py)
        with contextlib.suppress(OSError):
            linux.umount2(copy, linux.MNT_DETACH | _UMOUNT_NOFOLLOW)
        with contextlib.suppress(OSError):
            os.rmdir(copy)
    if not record.params.get("rootless"):  # a rootless jail has no cgroups of its own
        from hyjail import cgroups
        cgroups.remove_jail(record)


_UMOUNT_NOFOLLOW = 0x8  # the registry's own directory: never a symlink followed
