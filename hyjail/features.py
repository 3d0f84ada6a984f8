"""What this host offers the namespace backend's superuser dilution and limits, found by looking
at the running kernel (and, for user namespaces, by trying), not by version numbers.

Owns: the rows `hyjail features` prints. Each row is (feature, yes/no, detail). The full probe
of namespaces, ptrace and ABIs, and the rule-to-provider plan, come with the trace backend.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from hyjail import allow, cgroups


@dataclass(frozen=True)
class Feature:
    name: str
    available: bool
    detail: str


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _can_create_user_namespace() -> tuple[bool, str]:
    from hyjail import linux
    pid = os.fork()
    if pid == 0:
        try:
            linux.unshare(linux.CLONE_NEWUSER)
            os._exit(0)
        except OSError as e:
            os._exit(e.errno or 1)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code == 0, "created one" if code == 0 else f"unshare failed: {os.strerror(code)}"


def _unprivileged_userns() -> Feature:
    from hyjail.rootless import blocking_knobs
    blocking = blocking_knobs()
    if blocking:
        return Feature("unprivileged user namespaces", False,
                       "denied by sysctl " + ", ".join(blocking))
    return Feature("unprivileged user namespaces", True,
                   "no sysctl restricts them: users other than root get loopback-only jails")


def _cgroup_rows() -> list[Feature]:
    found = cgroups.hierarchies()
    versions = {h.version for h in found}
    layout = {frozenset({1}): "v1", frozenset({2}): "v2", frozenset({1, 2}): "hybrid"}
    rows = [Feature("cgroups", bool(found), layout.get(frozenset(versions), "none"))]
    for controller, option in cgroups.OPTIONS.items():
        home = cgroups.home(controller, found)
        where = f"v{home.version} at {home.mount}" if home else "no controller"
        rows.append(Feature(f"{option} ({controller} controller)", home is not None, where))
    return rows


def probe() -> list[Feature]:
    namespaces = sorted(os.listdir("/proc/self/ns"))
    userns_ok, userns_detail = _can_create_user_namespace()
    seccomp = _read("/proc/sys/kernel/seccomp/actions_avail") or ""
    rows = [
        Feature("namespaces", True, " ".join(namespaces)),
        Feature("user namespaces (root)", userns_ok, userns_detail),
        _unprivileged_userns(),
        Feature("capabilities", True, f"cap_last_cap {_read('/proc/sys/kernel/cap_last_cap')}"),
        Feature("seccomp filters", "errno" in seccomp.split(), seccomp or "not available"),
        Feature("i386 ABI (int 0x80)", os.path.exists("/proc/sys/abi/vsyscall32"),
                "filtered like x86_64" if os.path.exists("/proc/sys/abi/vsyscall32")
                else "not compiled in"),
        *_cgroup_rows(),
    ]
    for name, (default, what) in allow.PERMISSIONS.items():
        rows.append(Feature(f"allow.{name}", True,
                            f"{'on' if default else 'off'} by default: {what}"))
    for fstype, what in allow.MOUNT_TYPES.items():
        rows.append(Feature(f"allow.mount.{fstype}", True, f"off by default: {what}"))
    for fstype, reason in allow.MOUNT_TYPES_REFUSED.items():
        rows.append(Feature(f"allow.mount.{fstype}", False, reason))
    return rows


def as_dicts(rows: list[Feature]) -> list[dict]:
    return [asdict(row) for row in rows]
