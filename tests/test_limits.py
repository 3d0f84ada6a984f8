"""Resource limits: --memory, --pids and --cpus through the jail's own cgroups (on a hybrid
host such as this one, v1 controllers plus a group in the unified hierarchy; on a v2-only host,
one group in the unified hierarchy), and --rlimit on the command."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
import time

import pytest

from conftest import hyjail, jail_ip, jail_record, needs, needs_jails, running

pytestmark = needs_jails


def _cgroup_mounts() -> tuple[dict[str, str], str | None]:
    """This host's cgroup file systems as /proc/self/mounts has them: each v1 controller's
    mount point, and the unified (v2) hierarchy's."""
    v1, v2 = {}, None
    with open("/proc/self/mounts") as f:
        for line in f:
            _, where, fstype, options, *_ = line.split()
            if fstype == "cgroup2" and v2 is None:
                v2 = where
            elif fstype == "cgroup":
                for option in options.split(","):
                    v1.setdefault(option, where)
    return v1, v2


V1, V2 = _cgroup_mounts()


def group_of(controller: str, jid: int) -> str:
    """The jail's group that holds controller: its v1 hierarchy's, else the unified one's."""
    return os.path.join(V1.get(controller) or V2 or "", "hyjail", str(jid))

# Fills a shell variable with N MiB: the shell itself grows, so the memory limit meets it.
HOG = "x=$(dd if=/dev/zero bs=1048576 count={mib} 2>/dev/null | tr '\\0' a); echo survived"


def test_memory_hog_is_stopped_by_the_limit(busybox_root):
    unlimited = hyjail("run", busybox_root, "hog", "127.0.0.1", "/bin/sh", "-c",
                       HOG.format(mib=48))
    assert (unlimited.returncode, unlimited.stdout) == (0, "survived\n"), unlimited.stderr
    limited = hyjail("run", "--memory", "24M", busybox_root, "hog", "127.0.0.1", "/bin/sh",
                     "-c", HOG.format(mib=48))
    assert limited.returncode == 137 and "survived" not in limited.stdout  # OOM-killed


def test_fork_bomb_is_held_and_the_host_stays_responsive(busybox_root):
    ip = jail_ip()
    bomb = "echo started; b() { b | b & }; b; sleep 30"
    with running("run", "--pids", "40", busybox_root, "bomb", ip, "/bin/sh", "-c",
                 bomb) as jail:
        assert jail.stdout.readline() == "started\n"
        record = jail_record(ip)
        time.sleep(2)
        group = group_of("pids", record["jid"])
        with open(os.path.join(group, "pids.current")) as f:
            assert int(f.read()) <= 40
        with open(os.path.join(group, "pids.events")) as f:
            assert int(f.read().split()[1]) > 0  # forks were refused at the limit
        started = time.monotonic()
        subprocess.run(["/bin/true"], check=True)
        assert time.monotonic() - started < 1.0


def cpu_seconds_of_a_busy_loop(root: str, *options: str, wall: float = 2.0) -> float:
    """CPU time a jailed busy loop gets in `wall` seconds (utime+stime, from inside)."""
    script = (f"(while :; do :; done) & sleep {wall}; "
              "awk '{print $14 + $15}' /proc/$!/stat; kill $!")
    result = hyjail("run", *options, root, "cpu", "127.0.0.1", "/bin/sh", "-c", script)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[0]) / os.sysconf("SC_CLK_TCK")


@needs("R1:kernel", "R4:kernel")  # the loop's CPU time, read in the jail's /proc
def test_cpus_caps_usage(busybox_root):
    capped = cpu_seconds_of_a_busy_loop(busybox_root, "--cpus", "0.2")
    free = cpu_seconds_of_a_busy_loop(busybox_root)
    # 0.2 CPU for 2 s is 0.4 s; allow scheduling slack either way.
    assert 0.2 <= capped <= 0.7, capped
    assert free >= 1.2, free


def test_limits_show_in_the_record_and_groups_go_with_the_jail(busybox_root):
    ip = jail_ip()
    with running("run", "--memory", "64M", "--pids", "50", "--cpus", "1.5", busybox_root, "lim",
                 ip, "/bin/sleep", "60"):
        record = jail_record(ip)
        jid = record["jid"]
        assert record["params"]["limits"] == {"memory": str(64 * 2**20), "pids": "50",
                                              "cpus": "1.5"}
        # the limits' groups, the unified one, a v1 cpuacct group that counts CPU time and
        # a v1 freezer group that pauses it (hyjail-oci pause)
        groups = sorted({group_of(c, jid) for c in ("cpu", "memory", "pids")} |
                        ({os.path.join(V2, "hyjail", str(jid))} if V2 else set()) |
                        {group_of(c, jid) for c in ("cpuacct", "freezer") if c in V1})
        assert sorted(glob.glob(os.path.join("/sys/fs/cgroup", "**", "hyjail", str(jid)),
                                recursive=True)) == groups
        for group in groups:  # pid 1 and everything under it
            with open(os.path.join(group, "cgroup.procs")) as f:
                assert str(record["init_pid"]) in f.read().split()
        if "cpu" in V1:
            with open(os.path.join(group_of("cpu", jid), "cpu.cfs_quota_us")) as f:
                assert f.read().strip() == "150000"
        else:
            with open(os.path.join(group_of("cpu", jid), "cpu.max")) as f:
                assert f.read().split()[0] == "150000"
    # The no_leaks fixture checks that every hyjail group is gone afterwards.


def test_a_jail_without_limits_is_still_counted(busybox_root):
    """No limit, yet hyjail ls shows the jail's memory and CPU time: its counting groups."""
    ip = jail_ip()
    with running("run", "--name", "counted", busybox_root, "counted", ip, "/bin/sh", "-c",
                 "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo up; sleep 60") as jail:
        assert jail.stdout.readline() == "up\n"
        listed = json.loads(hyjail("ls", "--json").stdout)
        used = next(j["usage"] for j in listed if j["name"] == "counted")
        assert used["memory"] > 0 and used["cpu_seconds"] > 0 and used["oom_kills"] == 0


@needs("R1:kernel", "R4:kernel", "ns.cgroup")  # its cgroup namespace, seen in its /proc
def test_a_jails_cgroup_namespace_is_rooted_at_its_own_group(busybox_root):
    """pid 1 makes its cgroup namespace only once the supervisor has moved it into the
    jail's groups (PLACED): made before, its root would be the supervisor's group."""
    result = hyjail("run", "--pids", "50", busybox_root, "rooted", "127.0.0.1", "/bin/cat",
                    "/proc/self/cgroup")
    assert result.returncode == 0, result.stderr
    assert ("pids:/\n" if "pids" in V1 else "0::/\n") in result.stdout


@needs("R1:kernel", "R4:kernel", "ns.cgroup")  # its cgroup namespace, seen in its /proc
def test_jexec_joins_the_jails_groups(busybox_root):
    ip = jail_ip()
    with running("run", "--name", "grouped", "--pids", "50", busybox_root, "grouped", ip,
                 "/bin/sleep", "60"):
        jid = jail_record(ip)["jid"]
        result = hyjail("exec", "grouped", "/bin/cat", "/proc/self/cgroup")
        assert result.returncode == 0, result.stderr
        # Inside its cgroup namespace the jail's own group is the root, for the entered
        # process as well.
        assert ("pids:/\n" if "pids" in V1 else "0::/\n") in result.stdout
        with open(os.path.join(group_of("pids", jid), "pids.current")) as f:
            assert int(f.read()) >= 1


def test_rlimits_are_set_on_the_command(busybox_root):
    result = hyjail("run", "--rlimit", "nofile=64:128", "--rlimit", "core=0", busybox_root,
                    "rl", "127.0.0.1", "/bin/sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c")
    assert result.stdout.split() == ["64", "128", "0"], result.stderr


@pytest.mark.parametrize("option, message", [
    (["--rlimit", "nofile=10:99999999999"], "above the host's hard limit"),
    (["--rlimit", "nofile=64:32"], "the soft limit is above the hard limit"),
    (["--rlimit", "bogus=1"], "NAME=SOFT[:HARD]"),
    (["--rlimit", "nofile=1", "--rlimit", "nofile=2"], "given twice"),
    (["--memory", "lots"], "--memory lots"),
    (["--pids", "0"], "--pids 0"),
    (["--cpus", "-1"], "--cpus -1"),
])
def test_bad_limits_get_one_line_and_125(busybox_root, option, message):
    result = hyjail("run", *option, busybox_root, "bad", "127.0.0.1", "/bin/true")
    assert result.returncode == 125
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


# ---- choosing hierarchies: pure planning, for the layouts this host does not have -----------

V2_HOST = ("30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
V1_HOST = ("31 25 0:27 / /sys/fs/cgroup/memory rw shared:5 - cgroup cgroup rw,memory\n"
           "32 25 0:28 / /sys/fs/cgroup/pids rw shared:6 - cgroup cgroup rw,pids\n"
           "33 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw shared:7 - cgroup cgroup rw,cpu,cpuacct\n")


def test_plan_prefers_the_unified_hierarchy_and_falls_back_to_v1(tmp_path):
    from hyjail import cgroups
    from hyjail.limits import Limits
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(V2_HOST + V1_HOST)
    found = cgroups.hierarchies(str(mountinfo))
    assert [(h.mount, h.version) for h in found] == [
        ("/sys/fs/cgroup", 2), ("/sys/fs/cgroup/memory", 1), ("/sys/fs/cgroup/pids", 1),
        ("/sys/fs/cgroup/cpu,cpuacct", 1)]
    # A unified hierarchy with the memory controller enforces --memory; v1 the rest.
    v2 = cgroups.Hierarchy("/sys/fs/cgroup", 2, frozenset({"memory"}))
    plan = cgroups.plan(Limits(memory=1 << 20, pids=5, cpus=1.0), [v2, *found[1:]])
    assert {h.mount: c for h, c in plan.items()} == {
        "/sys/fs/cgroup": ["memory"], "/sys/fs/cgroup/pids": ["pids"],
        "/sys/fs/cgroup/cpu,cpuacct": ["cpu"]}
    # No limits: only the unified group (to find and kill the jail whole).
    assert list(cgroups.plan(Limits(), [v2, *found[1:]])) == [v2]


def test_plan_refuses_a_limit_no_hierarchy_enforces():
    from hyjail import cgroups
    from hyjail.errors import SetupError
    from hyjail.limits import Limits
    bare_v2 = cgroups.Hierarchy("/sys/fs/cgroup", 2, frozenset())
    with pytest.raises(SetupError, match="--pids: this host has no pids cgroup controller"):
        cgroups.plan(Limits(pids=10), [bare_v2])


def test_features_reports_this_host():
    import json
    result = hyjail("features", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)["host"]}
    assert rows["cgroups"]["detail"] == ("hybrid" if V1 and V2 else "v1" if V1 else "v2")
    assert rows["--pids (pids controller)"]["detail"] == (
        f"v1 at {V1['pids']}" if "pids" in V1 else f"v2 at {V2}")
    assert rows["allow.raw_sockets"]["available"] and rows["allow.chflags"]["available"]
    assert rows["allow.mount.tmpfs"]["available"] and not rows["allow.mount.procfs"]["available"]
    table = hyjail("features").stdout
    assert "allow.set_hostname" in table and "seccomp.filter" in table


def test_gc_sweeps_groups_no_live_jail_owns(busybox_root):
    """What a teardown could not remove (a group still busy) is left for `hyjail gc`, which
    keeps every live jail's groups."""
    from hyjail import cgroups
    unified = next(h for h in cgroups.hierarchies() if h.version == 2)
    with running("run", "--persist", "--name", "kept", busybox_root, "k", "127.0.0.1",
                 "/bin/sleep", "60") as start:
        start.wait(timeout=30)
        jid = int(start.stdout.read())
        orphan = os.path.join(unified.mount, "hyjail", str(jid + 1000))
        os.mkdir(orphan)
        try:
            assert hyjail("gc").returncode == 0
            assert not os.path.exists(orphan)
            assert os.path.isdir(os.path.join(unified.mount, "hyjail", str(jid)))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(orphan)
            assert hyjail("stop", "kept").returncode == 0


def test_top_refreshes_every_jails_use(busybox_root):
    """hyjail top: a table per refresh (not on a terminal: no screen clearing), CPU% from
    the second on."""
    ip = jail_ip()
    with running("run", "--name", "busy", busybox_root, "busy", ip, "/bin/sh", "-c",
                 "echo up; while true; do :; done") as jail:
        assert jail.stdout.readline() == "up\n"
        shown = hyjail("top", "-n", "2", "-d", "0.5")
        assert shown.returncode == 0, shown.stderr
        tables = shown.stdout.strip("\n").split("\n\n")
        assert len(tables) == 2 and "\033" not in shown.stdout
        first, second = ([line for line in t.splitlines() if " busy " in line][0].split()
                         for t in tables)
        assert first[3] == "-" and float(second[3]) > 20  # a busy loop: its CPU share


def test_a_delegated_units_jail_has_its_groups_under_the_units(busybox_root):
    """HYJAIL_CGROUPS=delegated (hyjail@NAME.service, Delegate=yes): the jail's groups are
    made under the caller's own, as systemd gives a unit its subtree; jexec joins them and
    hyjail ls counts them there; they go with the jail. (The test plays systemd: it makes the
    unit's groups and starts hyjail in them.)"""
    from hyjail import cgroups
    unit = f"unit-under-test-{os.getpid()}"
    # (not v1 cpuset's: such a group takes no task before its cpus and mems are set; the
    # unified hierarchy's may list cpuset among its controllers and is needed)
    made = [os.path.join(h.mount, unit) for h in cgroups.hierarchies()
            if h.version == 2 or "cpuset" not in h.controllers]
    for path in made:
        os.mkdir(path)

    def into_the_unit() -> None:
        for path in made:
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write("0")
    ip = jail_ip()
    try:
        with running("run", "--name", "unitj", "--memory", "64M", busybox_root, "unitj", ip,
                     "/bin/sh", "-c", "echo up; sleep 60",
                     env={**os.environ, "HYJAIL_CGROUPS": "delegated"},
                     preexec_fn=into_the_unit) as jail:
            assert jail.stdout.readline() == "up\n"
            record = jail_record(ip)
            under = f"/{unit}/hyjail/{record['jid']}"
            with open(f"/proc/{record['init_pid']}/cgroup") as f:
                lines = f.read().splitlines()
            assert any(line.endswith(under) and ("memory" in line or line.startswith("0::"))
                       for line in lines), lines
            assert record["params"]["cgroups"] and all(
                under in path for path in record["params"]["cgroups"])
            assert hyjail("exec", "unitj", "/bin/true").returncode == 0
            listed = json.loads(hyjail("ls", "--json").stdout)
            assert next(j for j in listed if j["name"] == "unitj")["usage"]["memory"] > 0
        for path in made:
            assert not os.path.exists(os.path.join(path, "hyjail"))  # gone with the jail
    finally:
        for path in made:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(path, "supervisor"))
            with contextlib.suppress(OSError):
                os.rmdir(path)
