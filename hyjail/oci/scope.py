"""The systemd cgroup driver: a container's transient scope unit (`--systemd-cgroup`, a
cgroupsPath `SLICE:PREFIX:NAME`, what podman and containerd pass on a systemd host).

Owns the unit's name from cgroupsPath (runc's rules: `PREFIX-NAME.scope` in SLICE, an empty
slice `system.slice`, `-` the root slice), the host's fitness for it (systemd as init, the
unified hierarchy only: systemd delegates a v1 controller hierarchy by hierarchy, which
hyjail does not follow), and making the scope: StartTransientUnit over systemd's bus
(`busctl`), Delegate=yes, holding the container's stand-in. The scope lives as long as the
stand-in (systemd stops an empty scope and removes its groups; CollectMode
inactive-or-failed also a failed one), so neither a failed create nor a container's end
leaves a unit behind, and nothing has to stop it. systemd owns the scope's own group, what
is delegated below it is the container's: the stand-in moves to a leaf there, and the jail's
groups are made beside it (a group holding processes enables no controller for its
children), where engines find them through the stand-in, which is counted in them.
"""

from __future__ import annotations

import contextlib
import os
import time

from hyjail.errors import SetupError
from hyjail.frozen import frozen

FIELD = "config.json: linux.cgroupsPath"
STANDIN_LEAF = "standin"  # the stand-in's own group in the scope, when not in the jail's
JAIL_GROUP = "container"  # the jail's groups, in the scope
PLACED_SECONDS = 10.0  # systemd's job moving the stand-in into the new scope
# systemd's unit names: these characters, at most 255 of them (unit_name_is_valid).
UNIT_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\")


@frozen
class Scope:
    """The unit a container's groups go in: `unit` (NAME.scope) in `slice`."""
    slice: str
    unit: str


def parse(path: str | None, container_id: str, asked: bool) -> Scope | None:
    """cgroupsPath in the systemd driver's form as a Scope; None when it is the cgroupfs
    driver's (a path) and the driver was not asked for (`--systemd-cgroup`), or empty
    without it. With the flag, an empty cgroupsPath is `:hyjail:ID` (runc's default with
    `runc` as the prefix)."""
    if not path:
        if not asked:
            return None
        path = f":hyjail:{container_id}"
    if path.startswith("/") or path.count(":") != 2:
        if asked:
            raise SetupError(f"{FIELD}: {path}: the systemd driver (--systemd-cgroup) takes "
                             f"SLICE:PREFIX:NAME")
        return None
    slice_, prefix, name = path.split(":")
    if not name:
        raise SetupError(f"{FIELD}: {path}: SLICE:PREFIX:NAME without a NAME")
    if name.endswith(".slice"):
        raise SetupError(f"{FIELD}: {path}: a slice as the container's unit is not "
                         f"supported (a scope is: SLICE:PREFIX:NAME)")
    slice_ = {"": "system.slice", "-": "-.slice"}.get(slice_, slice_)
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    for what, value, suffix in (("slice", slice_, ".slice"), ("scope", unit, ".scope")):
        if not set(value) <= UNIT_CHARACTERS or len(value) > 255 or value == suffix or \
                not value.endswith(suffix):
            raise SetupError(f"{FIELD}: {path}: {value}: not a systemd {what}'s name")
    return Scope(slice=slice_, unit=unit)


def check_host(scope: Scope, unified_only: bool) -> None:
    """SetupError naming the field unless this host can make the scope: systemd as init,
    root (the system manager's bus), busctl, and the unified hierarchy alone."""
    where = f"{FIELD}: {scope.slice}: {scope.unit}: the systemd driver"
    if not os.path.isdir("/run/systemd/system"):
        raise SetupError(f"{where} needs systemd as the host's init (podman: "
                         f"--cgroup-manager cgroupfs)")
    if os.geteuid() != 0:
        raise SetupError(f"{where} of a user's systemd is not supported")
    if not unified_only:
        raise SetupError(f"{where} needs the unified cgroup hierarchy only (this host has "
                         f"v1 hierarchies; podman: --cgroup-manager cgroupfs)")
    if not _busctl():
        raise SetupError(f"{where} needs busctl (systemd's bus client)")


def start(scope: Scope, pid: int) -> str:
    """Make the scope holding pid (the stand-in), move pid to the scope's leaf, and return
    where the jail's groups go (an absolute cgroup path for `cgroups.create`'s `at`)."""
    import subprocess
    properties = [("PIDs", "au", "1", str(pid)), ("Delegate", "b", "true"),
                  ("Slice", "s", scope.slice), ("CollectMode", "s", "inactive-or-failed"),
                  ("Description", "s", f"hyjail container {scope.unit}")]
    # The system bus, as runc and podman use it (busctl's call on systemd's private socket
    # failed: "Invalid request descriptor"); the call after "--", so that no name (the root
    # slice's `-.slice`, say) is ever taken for an option.
    argv = [_busctl(), "--system", "--quiet", "--", "call", "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
            "StartTransientUnit", "ssa(sv)a(sa(sv))", scope.unit, "fail",
            str(len(properties)), *(word for p in properties for word in p), "0"]
    made = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if made.returncode != 0:
        why = (made.stderr.strip().splitlines() or [f"busctl exited {made.returncode}"])[-1]
        raise SetupError(f"{FIELD}: {scope.slice}: {scope.unit}: systemd would not make "
                         f"the scope: {why}")
    unified_mount, group = _wait_placed(scope, pid)
    leaf = os.path.join(unified_mount, group.lstrip("/"), STANDIN_LEAF)
    with contextlib.suppress(FileExistsError):
        os.mkdir(leaf, 0o755)
    with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
        f.write(str(pid))
    return f"{group.rstrip('/')}/{JAIL_GROUP}"


def _wait_placed(scope: Scope, pid: int) -> tuple[str, str]:
    """(the unified hierarchy's mount, the scope's group there), once systemd's job has
    moved pid into it (StartTransientUnit returns with the job queued)."""
    from hyjail import cgroups
    deadline = time.monotonic() + PLACED_SECONDS
    while True:
        try:
            mount, group = cgroups.unified_group(pid)  # check_host: there is one
        except (FileNotFoundError, ProcessLookupError):
            raise SetupError(f"{FIELD}: the container's process ended while its scope was "
                             f"made") from None
        if group.rstrip("/").endswith("/" + scope.unit):
            return mount, group
        if time.monotonic() > deadline:
            raise SetupError(f"{FIELD}: {scope.slice}: {scope.unit}: systemd did not move "
                             f"the container's process into the scope within "
                             f"{PLACED_SECONDS:g} s")
        time.sleep(0.005)


def _busctl() -> str | None:
    for directory in ("/usr/bin", "/bin", "/usr/local/bin"):
        path = os.path.join(directory, "busctl")
        if os.access(path, os.X_OK):
            return path
    return None
