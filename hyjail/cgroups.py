"""Per-jail control groups: one `hyjail` group with a child per jail, on v1, v2 and hybrid hosts.

Owns: finding the host's cgroup hierarchies (from mountinfo, not from guesses about the
distribution), choosing for each limit the hierarchy whose controller enforces it (v2 when the
unified hierarchy has the controller, else the v1 hierarchy that carries it), creating
`<hierarchy>/hyjail/<JID>` with the limits written, and removing it at teardown. A jail always
gets a group in the unified hierarchy when one is mounted, so it can be found and killed whole,
and, where the host has them, groups that count its memory and CPU time even without a limit
(`ACCOUNTED`, best effort): what `usage()` reads for `hyjail ls` and `hyjail top`, and the
OOM kills the supervisor reports.

Pid 1 moves itself in (`join`) before it unshares its cgroup namespace, so that the jail sees
its own group as the root and every process it ever has is counted.

Under a systemd unit with Delegate=yes (`hyjail@NAME.service` sets HYJAIL_CGROUPS=delegated),
the `hyjail` group is made under the caller's own group in each hierarchy instead of at the
top, so that the jail's groups are the unit's: on the unified hierarchy the unit's own
processes first move to its leaf `supervisor` (a group with children holds no process).
The record then keeps the paths (`of_jail`), which are not where `jail_paths` looks.

An OCI container's groups go where its config's cgroupsPath says (`create`'s `at`: podman's
--cgroup-parent, containerd's namespace), in every hierarchy as runc's, their record keeping
the paths likewise; its stand-in is counted in them (`take_in`), since engines read a
container's groups from its pid.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import time
from collections.abc import Callable

from hyjail.errors import SetupError
from hyjail.frozen import frozen
from hyjail.limits import Limits

GROUP = "hyjail"
CPU_PERIOD_US = 100_000
DELEGATED = "HYJAIL_CGROUPS"  # =delegated: under the caller's own groups (a unit's)
LEAF = "supervisor"  # a delegated unit's own processes, on the unified hierarchy


@frozen
class Hierarchy:
    """One mounted cgroup hierarchy: where, which version, its controllers."""

    mount: str
    version: int
    controllers: frozenset[str]


def hierarchies(mountinfo: str = "/proc/self/mountinfo") -> list[Hierarchy]:
    """The cgroup hierarchies mounted on this host (first mount of each)."""
    found: dict[frozenset[str] | str, Hierarchy] = {}
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            tail = fields[fields.index("-") + 1:]
            fstype, mount_point, options = tail[0], fields[4], tail[2]
            if fstype == "cgroup2" and "v2" not in found:
                found["v2"] = Hierarchy(mount_point, 2, _v2_controllers(mount_point))
            elif fstype == "cgroup":
                controllers = frozenset(o for o in options.split(",")
                                        if o not in ("rw", "ro") and "=" not in o)
                found.setdefault(controllers, Hierarchy(mount_point, 1, controllers))
    return list(found.values())


def _v2_controllers(mount: str) -> frozenset[str]:
    try:
        with open(os.path.join(mount, "cgroup.controllers")) as f:
            return frozenset(f.read().split())
    except OSError:
        return frozenset()


# controller -> the option whose limit it enforces
OPTIONS = {"memory": "--memory", "pids": "--pids", "cpu": "--cpus"}
# Controllers a jail's group gets without a limit, to count what it uses (a v2 group counts
# CPU time by itself; v1 needs cpuacct's), and v1's freezer, which pauses it (`hyjail-oci
# pause`; a v2 group freezes by itself).
ACCOUNTED = ("memory", "cpuacct", "freezer")


@frozen
class Usage:
    """What a jail's groups counted: None where no group of the host counts it."""
    memory: int | None = None  # bytes in use now
    cpu_seconds: float | None = None  # CPU time used, all its processes together
    oom_kills: int | None = None  # processes the kernel killed for want of memory


def _needed(limits: Limits) -> dict[str, str]:
    """controller -> the option that needs it, for the limits that are set."""
    cpu = limits.cpus if limits.cpus is not None else limits.cpu_shares
    wanted = {"memory": limits.memory, "pids": limits.pids, "cpu": cpu}
    return {c: OPTIONS[c] for c, v in wanted.items() if v is not None}


def home(controller: str, found: list[Hierarchy]) -> Hierarchy | None:
    """The hierarchy that enforces `controller`: the unified one if it has it, else v1's."""
    for version in (2, 1):
        for hierarchy in found:
            if hierarchy.version == version and controller in hierarchy.controllers:
                return hierarchy
    return None


def plan(limits: Limits, found: list[Hierarchy]) -> dict[Hierarchy, list[str]]:
    """Which hierarchies get a group for this jail, and which controllers each enforces.
    Raises SetupError naming the limit when no hierarchy can enforce it (fail closed)."""
    chosen: dict[Hierarchy, list[str]] = {h: [] for h in found if h.version == 2}
    for controller, option in _needed(limits).items():
        hierarchy = home(controller, found)
        if hierarchy is None:
            raise SetupError(f"{option}: this host has no {controller} cgroup controller "
                             "(not in the unified hierarchy nor a v1 one)")
        chosen.setdefault(hierarchy, []).append(controller)
    return chosen


def jail_paths(jid: int, existing: bool = False) -> list[str]:
    """Where jail `jid`'s groups would be on every hierarchy (or are, with `existing`)."""
    paths = [os.path.join(h.mount, GROUP, str(jid)) for h in hierarchies()]
    return [p for p in paths if os.path.isdir(p)] if existing else paths


def delegated() -> bool:
    return os.environ.get(DELEGATED) == "delegated"


def bases(found: list[Hierarchy]) -> dict[Hierarchy, str]:
    """Where each hierarchy's `hyjail` group goes: its top, or (delegated) the caller's own
    group there (/proc/self/cgroup)."""
    if not delegated():
        return {h: h.mount for h in found}
    result = {}
    for h, path in _own_groups(found).items():
        if h.version == 2 and path.endswith("/" + LEAF):
            path = path[:-len(LEAF) - 1]  # moved to the leaf already: the unit's is its parent
        result[h] = os.path.join(h.mount, path.lstrip("/"))
    return result


def _own_groups(found: list[Hierarchy], pid: int | str = "self") -> dict[Hierarchy, str]:
    """Our own group (or process pid's) in each hierarchy, as /proc/PID/cgroup names it ("/"
    where it names none)."""
    own: dict[frozenset[str], str] = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            number, _, rest = line.rstrip("\n").partition(":")
            names, _, path = rest.partition(":")
            key = frozenset({"v2"}) if number == "0" else frozenset(
                n for n in names.split(",") if n and "=" not in n)
            own[key] = path
    return {h: own.get(frozenset({"v2"}) if h.version == 2 else h.controllers, "/")
            for h in found}


def unified_group(pid: int | str = "self") -> tuple[str, str] | None:
    """(the unified hierarchy's mount, our group there, or process pid's, as /proc/PID/cgroup
    names it); None without a unified hierarchy."""
    found = [h for h in hierarchies() if h.version == 2]
    if not found:
        return None
    return found[0].mount, _own_groups(found, pid)[found[0]]


def own_procs_file() -> str | None:
    """The cgroup.procs of our own group in the unified hierarchy (None without one)."""
    unified = unified_group()
    if unified is None:
        return None
    mount, own = unified
    return os.path.join(mount, own.lstrip("/"), "cgroup.procs")


def create(jid: int, limits: Limits, at: str | None = None) -> list[str]:
    """Create the jail's groups with its limits written, and its accounting groups; returns
    their paths. On failure of a limit's group, removes what it made and raises SetupError.
    `at`: the caller's place for them instead of `hyjail/<JID>` (an OCI config's cgroupsPath,
    the cgroupfs driver's form): from each hierarchy's root if absolute, else from our own
    group there; the parents are made as needed (their controllers enabled on the unified
    hierarchy) and left at teardown, and a group there already must be an empty leaf (else
    SetupError, and nothing of the jail's is left in any hierarchy)."""
    found = hierarchies()
    chosen = plan(limits, found)
    made: list[str] = []
    try:
        where = bases(found) if at is None else _places(found, at)
        for hierarchy, controllers in chosen.items():
            path = _make(hierarchy, controllers, jid, where[hierarchy], at)
            made.append(path)
            for controller in controllers:
                _write_limit(hierarchy.version, path, controller, limits)
        made += _accounting(jid, found, chosen, where, at)
        if at is not None:  # as runc's: a group in every hierarchy, where an engine reads them
            for hierarchy in found:
                if hierarchy.version == 1 and hierarchy.controllers and \
                        where[hierarchy] not in made:
                    with contextlib.suppress(OSError):
                        made.append(_make_group_at(hierarchy, [], where[hierarchy], at))
    except OSError as e:
        remove(made)
        raise SetupError(f"cgroup {e.filename or ''}: {e.strerror}") from None
    except SetupError:  # a group at `at` that holds processes: nothing of ours is left
        remove(made)
        raise
    return made


def _make(hierarchy: Hierarchy, controllers: list[str], jid: int, where: str,
          at: str | None) -> str:
    """The jail's group in hierarchy: hyjail/<JID> under `where`, or the caller's `at`."""
    return (_make_group(hierarchy, controllers, jid, where) if at is None
            else _make_group_at(hierarchy, controllers, where, at))


def _places(found: list[Hierarchy], at: str) -> dict[Hierarchy, str]:
    """Where the group `at` is in each hierarchy (`create`)."""
    if at.startswith("/"):
        return {h: os.path.join(h.mount, at.lstrip("/")) for h in found}
    return {h: os.path.join(h.mount, own.lstrip("/"), at)
            for h, own in _own_groups(found).items()}


def _make_group_at(hierarchy: Hierarchy, controllers: list[str], path: str, at: str) -> str:
    """The group at path, its missing parents made and, on the unified hierarchy, the
    controllers enabled in each of them down from the top (`create`'s `at`)."""
    relative = os.path.relpath(path, hierarchy.mount).split("/")
    parent = hierarchy.mount
    for part in relative:
        if hierarchy.version == 2 and controllers:
            _write(os.path.join(parent, "cgroup.subtree_control"),
                   " ".join(f"+{c}" for c in controllers))
        parent = os.path.join(parent, part)
        if parent != path:
            with contextlib.suppress(FileExistsError):
                os.mkdir(parent, 0o755)
                _inherit_cpuset(hierarchy, parent)
    try:
        os.mkdir(path, 0o755)
        _inherit_cpuset(hierarchy, path)
    except FileExistsError:
        # Only an empty leaf is taken: the jail's end kills every process beneath its group
        # (cgroup.kill takes the whole subtree), so a group with processes or groups of its
        # own (/system.slice) would take the host's with it.
        with open(os.path.join(path, "cgroup.procs")) as f:
            busy = f.read().strip()
        if busy or any(entry.is_dir() for entry in os.scandir(path)):
            raise SetupError(f"cgroupsPath {at}: {path} holds processes or groups already; "
                             f"a container's group is a new one, or an empty one") from None
    return path


def _inherit_cpuset(hierarchy: Hierarchy, path: str) -> None:
    """A new v1 cpuset group starts with no CPU and no memory node (no process could join
    it): its parent's, as runc gives it."""
    if hierarchy.version == 1 and "cpuset" in hierarchy.controllers:
        for name in ("cpuset.cpus", "cpuset.mems"):
            with open(os.path.join(os.path.dirname(path), name)) as f:
                _write(os.path.join(path, name), f.read().strip())


def take_in(pid: int, paths: list[str]) -> Callable[[], None]:
    """Move host process pid into a jail's groups (an OCI container's stand-in: engines read
    a container's groups from its pid, `hyjail.oci.standin`); returns what moves it back to
    its own groups, to be called before the jail's are emptied (which would kill it)."""
    found = hierarchies()
    own = _own_groups(found, pid)
    back = [os.path.join(h.mount, own[h].lstrip("/")) for path in paths
            for h in found if path.startswith(h.mount + "/")]

    def give_back() -> None:
        for original in back:
            with contextlib.suppress(OSError):  # it ended, or its group did
                _write(os.path.join(original, "cgroup.procs"), str(pid))
    try:
        place(pid, paths)
    except OSError as e:  # never half in: what moved goes back, and the jail does not start
        give_back()
        raise SetupError(f"cgroup {e.filename or ''}: {e.strerror}") from None
    return give_back


def _accounting(jid: int, found: list[Hierarchy], chosen: dict[Hierarchy, list[str]],
                where: dict[Hierarchy, str], at: str | None = None) -> list[str]:
    """Counting groups for what no limit put in a group already: the memory controller
    enabled for the jail's v2 group, or a group of the v1 hierarchy that has it. Best effort:
    a host that will not count only shows less."""
    made = []
    for controller in ACCOUNTED:
        hierarchy = home(controller, found)
        if hierarchy is None or controller in chosen.get(hierarchy, []):
            continue
        with contextlib.suppress(OSError):
            if hierarchy.version == 2 and at is None:
                _enable(where[hierarchy], [controller])
            elif hierarchy.version == 2:
                _make_group_at(hierarchy, [controller], where[hierarchy], at)
            elif hierarchy not in chosen:
                made.append(_make(hierarchy, [], jid, where[hierarchy], at))
                chosen = {**chosen, hierarchy: []}
    return made


def usage(paths: list[str]) -> Usage:
    """What the jail's groups (`jail_paths(jid, existing=True)`) count now."""
    found: dict[str, float | int] = {}
    readers = (
        ("memory", "memory.current", int), ("memory", "memory.usage_in_bytes", int),
        ("cpu_seconds", "cpuacct.usage", lambda text: int(text) / 1e9),
        ("cpu_seconds", "cpu.stat", lambda text: _field(text, "usage_usec") / 1e6),
        ("oom_kills", "memory.events", lambda text: _field(text, "oom_kill")),
        ("oom_kills", "memory.oom_control", lambda text: _field(text, "oom_kill")),
    )
    for path in paths:
        for what, name, parse in readers:
            if what in found:
                continue
            with contextlib.suppress(OSError, ValueError, KeyError), \
                    open(os.path.join(path, name)) as f:
                found[what] = parse(f.read())
    return Usage(**found)


def report_oom(paths: list[str], name: str) -> None:
    """At the jail's end, before its groups go: one line on stderr (the terminal of
    `hyjail run`, the log of a persistent jail) if the kernel killed any of its processes
    for want of memory, which a SIGKILLed command's 137 alone does not say."""
    kills = usage(paths).oom_kills
    if kills:
        sys.stderr.write(f"hyjail: jail {name}: the kernel's OOM killer killed {kills} "
                         f"process{'es' if kills > 1 else ''} (memory limit reached)\n")
        sys.stderr.flush()


def _field(text: str, key: str) -> int:
    """A `key value` line's value, from a flat-keyed file (cpu.stat, memory.events)."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    raise KeyError(key)


def _make_group(hierarchy: Hierarchy, controllers: list[str], jid: int, base: str) -> str:
    parent = os.path.join(base, GROUP)
    path = os.path.join(parent, str(jid))
    for _ in range(10):  # another supervisor may remove an empty parent under us
        with contextlib.suppress(FileExistsError):
            os.mkdir(parent, 0o755)
        if hierarchy.version == 2 and controllers:
            _enable(base, controllers)
        try:
            os.mkdir(path, 0o755)
            return path
        except FileNotFoundError:
            continue
        except FileExistsError:
            _remove_group(path)  # a leftover of a dead jail with this JID
            os.mkdir(path, 0o755)
            return path
    raise OSError(errno.EBUSY, "kept disappearing", parent)


def _enable(base: str, controllers: list[str]) -> None:
    """Controllers for base's `hyjail` group and its children (unified hierarchy). A
    delegated base's own processes first move to its leaf: a group whose subtree has
    controllers holds none itself."""
    enable = " ".join(f"+{c}" for c in controllers)
    try:
        _write(os.path.join(base, "cgroup.subtree_control"), enable)
    except OSError as e:
        if e.errno != errno.EBUSY or not delegated():
            raise
        leaf = os.path.join(base, LEAF)
        with contextlib.suppress(FileExistsError):
            os.mkdir(leaf, 0o755)
        with open(os.path.join(base, "cgroup.procs")) as f:
            for pid in f.read().split():
                with contextlib.suppress(ProcessLookupError):
                    _write(os.path.join(leaf, "cgroup.procs"), pid)
        _write(os.path.join(base, "cgroup.subtree_control"), enable)
    _write(os.path.join(base, GROUP, "cgroup.subtree_control"), enable)


def of_jail(record) -> list[str]:
    """A running jail's groups: where its record says (delegated), else where they go."""
    kept = record.params.get("cgroups") if isinstance(record.params, dict) else None
    return list(kept) if isinstance(kept, list) else jail_paths(record.jid, existing=True)


def _write_limit(version: int, path: str, controller: str, limits: Limits) -> None:
    if controller == "memory":
        if version == 2:
            _write(os.path.join(path, "memory.max"), str(limits.memory))
            _write_if_present(os.path.join(path, "memory.swap.max"), "0")
        else:
            _write(os.path.join(path, "memory.limit_in_bytes"), str(limits.memory))
            _write_if_present(os.path.join(path, "memory.memsw.limit_in_bytes"),
                              str(limits.memory))
    elif controller == "pids":
        _write(os.path.join(path, "pids.max"), str(limits.pids))
    elif controller == "cpu":
        if limits.cpus is not None:
            quota = max(1000, round(limits.cpus * CPU_PERIOD_US))
            if version == 2:
                _write(os.path.join(path, "cpu.max"), f"{quota} {CPU_PERIOD_US}")
            else:
                _write(os.path.join(path, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
                _write(os.path.join(path, "cpu.cfs_quota_us"), str(quota))
        if limits.cpu_shares is not None:
            if version == 2:  # the kernel's own mapping of shares onto weights
                weight = 1 + (limits.cpu_shares - 2) * 9999 // 262142
                _write(os.path.join(path, "cpu.weight"), str(weight))
            else:
                _write(os.path.join(path, "cpu.shares"), str(limits.cpu_shares))


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _write_if_present(path: str, value: str) -> None:
    if os.path.exists(path):
        _write(path, value)


def place(pid: int, paths: list[str]) -> None:
    """Move process pid into each group. The first move on a host in a while waits out an
    RCU grace period (10-20 ms; the kernel's cgroup_threadgroup_rwsem), so the supervisor
    moves its pid 1 (and jexec the process it enters), a child it has not reaped (the pid
    cannot be reused), while that child builds its namespaces and mounts
    (`foreground.place_in_cgroups`)."""
    for path in paths:
        _write(os.path.join(path, "cgroup.procs"), str(pid))


def remove(paths: list[str]) -> None:
    """Kill anything left in the groups, remove them, and the `hyjail` parents once empty
    (never a parent of a caller's cgroupsPath: the caller's). A group still busy after the
    wait is left for `hyjail gc` (`sweep`), with one line saying so."""
    for path in paths:
        try:
            _remove_group(path)
        except OSError as e:
            sys.stderr.write(f"hyjail: cgroup {path}: {e.strerror}; left for `hyjail gc`\n")
            continue
        if os.path.basename(os.path.dirname(path)) == GROUP:
            with contextlib.suppress(OSError):  # busy: other jails' groups are in it
                os.rmdir(os.path.dirname(path))


def groups_at(relative: str) -> list[str]:
    """The groups at `relative` (from each hierarchy's root) in the hierarchies that have
    one."""
    return [path for hierarchy in hierarchies()
            if os.path.isdir(path := os.path.join(hierarchy.mount, relative))]


def remove_empty_groups(relative: str) -> None:
    """The empty groups at `relative` (from each hierarchy's root) and beneath it removed, in
    every hierarchy; a group with a process stays. For what a container engine made around
    its containers' groups (podman's --cgroup-parent, its conmon group, containerd's
    namespace) when a test or the bench made the engine's world itself."""
    for hierarchy in hierarchies():
        for directory, _, _ in os.walk(os.path.join(hierarchy.mount, relative), topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def sweep(live_jids: set[int]) -> None:
    """Remove every jail group whose JID no live jail holds (what a busy teardown left)."""
    for hierarchy in hierarchies():
        parent = os.path.join(hierarchy.mount, GROUP)
        with contextlib.suppress(OSError):
            for entry in os.listdir(parent):
                if entry.isdigit() and int(entry) not in live_jids:
                    remove([os.path.join(parent, entry)])


def _remove_group(path: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        _kill_members(path)
        time.sleep(0.01)


def _kill_members(path: str) -> None:
    kill_file = os.path.join(path, "cgroup.kill")
    if os.path.exists(kill_file):
        with contextlib.suppress(OSError):
            _write(kill_file, "1")
        return
    with contextlib.suppress(OSError), open(os.path.join(path, "cgroup.procs")) as f:
        for pid in f.read().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def remove_jail(record) -> None:
    """Remove whatever groups a dead jail has (the reclaim path)."""
    remove([p for p in of_jail(record) if os.path.isdir(p)])
