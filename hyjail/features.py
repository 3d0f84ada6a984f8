"""What this host offers the namespace backend's superuser dilution and limits, found by looking
at the running kernel (and, for user namespaces, by trying), not by version numbers.

Owns: what `hyjail features` prints: the probe (`hyjail.platform`), the rule-to-provider plan
(`hyjail.plan`), and the host's permissions and limits, each row (feature, yes/no, detail).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hyjail import allow, cgroups
from hyjail.frozen import asdict


@dataclass(frozen=True)
class Feature:
    name: str
    available: bool
    detail: str


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


def host_rows() -> list[Feature]:
    """Capabilities, cgroups, and every allow.* permission with its default or refusal."""
    from hyjail import linux
    rows = [
        Feature("capabilities", True, f"cap_last_cap {linux.last_cap()}"),
        *_cgroup_rows(),
        *_network_rows(),
    ]
    for name, (default, what) in allow.PERMISSIONS.items():
        rows.append(Feature(f"allow.{name}", True,
                            f"{'on' if default else 'off'} by default: {what}"))
    for fstype, what in allow.MOUNT_TYPES.items():
        rows.append(Feature(f"allow.mount.{fstype}", True, f"off by default: {what}"))
    for fstype, reason in allow.MOUNT_TYPES_REFUSED.items():
        rows.append(Feature(f"allow.mount.{fstype}", False, reason))
    return rows


# What a jail on the LAN (--interface, vnet) and --nat/--publish use, each tried in a
# network namespace of its own that is gone at once (nothing of the host's is touched).
_LINK_KINDS = {
    "macvlan": ("ip link add t0 type veth peer name t1 && "
                "ip link add t2 link t0 type macvlan mode bridge",
                "a jail's own child of --interface's LAN (ns)"),
    "ipvlan": ("ip link add t0 type veth peer name t1 && "
               "ip link add t2 link t0 type ipvlan mode l2",
               "the same where macvlan is missing"),
    "nftables": ("nft add table inet hyjailprobe", "--nat and --publish"),
}


def _network_rows() -> list[Feature]:
    import shutil
    import subprocess
    rows = []
    for name, (script, what) in _LINK_KINDS.items():
        if shutil.which("unshare") is None or os.geteuid() != 0:
            rows.append(Feature(name, False, f"{what}: not tried (needs root and unshare)"))
            continue
        tried = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True,
                               text=True)
        why = (tried.stderr.strip().splitlines() or ["failed"])[-1]
        rows.append(Feature(name, tried.returncode == 0,
                            what if tried.returncode == 0 else f"{what}: {why}"))
    return rows


def report(fresh: bool = False) -> dict:
    """The probe (what this host allows, by trying), the rule-to-provider plan, and the
    host's permissions and limits: what `hyjail features` prints."""
    from hyjail import plan, platform
    probe = platform.current(fresh=fresh)
    return {"probe": [asdict(check) for check in probe.values()],
            "plan": plan.table(probe),
            "host": [asdict(row) for row in host_rows()]}


def as_text(data: dict) -> list[str]:
    lines = ["Probe (what this host allows, found by trying):"]
    width = max(len(c["name"]) for c in data["probe"])
    lines += [f"  {c['name']:<{width}}  {'yes' if c['ok'] else 'no ':<3}  {c['detail']}"
              for c in data["probe"]]
    lines.append("Plan (rule: providers, kernel first; * marks what --backend picks):")
    for row in data["plan"]:
        state = "ok" if not row["missing"] else "missing " + ", ".join(row["missing"])
        picked = ",".join(row["picked_by"]) or "-"
        lines.append(f"  {row['rule']} {row['name']:<9}  {row['provider']:<6}  "
                     f"{row['how']:<52}  {state:<24}  * {picked}")
    lines.append("Permissions and limits:")
    width = max(len(r["name"]) for r in data["host"])
    lines += [f"  {r['name']:<{width}}  {'yes' if r['available'] else 'no ':<3}  {r['detail']}"
              for r in data["host"]]
    return lines
