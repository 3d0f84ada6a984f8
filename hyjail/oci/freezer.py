"""Pausing a container (`hyjail-oci pause`/`resume`): its jail's processes frozen by their
cgroup, on whichever hierarchy can (v1's freezer group, which every jail gets where the host
has one, else the jail's unified group's cgroup.freeze).

Owns finding the jail's freezing group and reading and writing its state; nothing else.
"""

from __future__ import annotations

import os
import time

from hyjail import cgroups
from hyjail.errors import HyjailError


def _group(record) -> tuple[int, str] | None:
    """(version, path) of the jail's group that freezes, or None."""
    found = cgroups.hierarchies()
    paths = cgroups.of_jail(record)
    for version in (1, 2):
        for hierarchy in found:
            if hierarchy.version != version or (version == 1
                                                and "freezer" not in hierarchy.controllers):
                continue
            for path in paths:
                if path.startswith(hierarchy.mount.rstrip("/") + "/"):
                    return version, path
    return None


def frozen(record) -> bool:
    group = _group(record)
    if group is None:
        return False
    version, path = group
    try:
        if version == 1:
            with open(os.path.join(path, "freezer.state")) as f:
                return f.read().strip() in ("FROZEN", "FREEZING")
        with open(os.path.join(path, "cgroup.freeze")) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def set_frozen(record, freeze: bool, timeout: float = 10.0) -> None:
    group = _group(record)
    if group is None:
        raise HyjailError("pause: this host has no cgroup that freezes the jail (no v1 "
                          "freezer, no unified group)", 1)
    version, path = group
    name, value = (("freezer.state", "FROZEN" if freeze else "THAWED") if version == 1
                   else ("cgroup.freeze", "1" if freeze else "0"))
    try:
        with open(os.path.join(path, name), "w") as f:
            f.write(value)
    except OSError as e:
        raise HyjailError(f"pause: {path}: {e.strerror}", 1) from None
    if version == 1 and freeze:  # FREEZING until every task has stopped
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(os.path.join(path, "freezer.state")) as f:
                if f.read().strip() == "FROZEN":
                    return
            time.sleep(0.01)
        raise HyjailError("pause: the jail's processes did not all freeze", 1)
