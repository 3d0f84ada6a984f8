"""Hybrid jails: on a host that has some namespaces, each rule takes its best provider, the
kernel's where the host has it and ptrace's for the rest, inside the same jail.

Each partial host is this one under a parent seccomp filter that refuses one kind of
namespace (tests/deny_namespaces.py), as a kernel built without it, a distribution's policy or
a container runtime would: without user namespaces R2 and R5 go to ptrace (root stays in the
host's user namespace, so the supervisor sets the jail's hostname), without pid namespaces R4,
R6 and R7, without network namespaces R3. The same behaviours as on the full backends hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import (
    HERE,
    HYJAIL,
    abis,
    fresh_loopback_ip,
    guard,
    hyjail,
    needs_jails,
    require_denied,
    sigkill_leaves_no_jailed_process,
)
from test_dilution import r5_answers
from test_trace import PID_CALLS, host_process  # noqa: F401 (a fixture)

pytestmark = needs_jails

# Which kind of namespace each partial host lacks, and the rules ptrace then holds.
HOSTS = {"no-userns": ("user", {"R2", "R5"}),
         "no-pidns": ("pid", {"R4", "R6", "R7"}),
         "no-netns": ("net", {"R3"})}
# (Where a partial host's jail answers otherwise than the ns backend's, and why:
# test_dilution.r5_answers.)


def on(host: str, *args: str, **kwargs) -> list[str]:
    """argv of `hyjail ARGS` on the partial host (as the filter leaves it: --backend auto)."""
    return [sys.executable, os.path.join(HERE, "deny_namespaces.py"), "--only", HOSTS[host][0],
            *HYJAIL, *args]


def run_on(host: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(on(host, *args), capture_output=True, text=True, timeout=timeout)


def probe_ops(root: str, host: str, abi: str, *ops: str, options=()) -> dict[str, str]:
    result = run_on(host, "run", *options, root, "tj", "127.0.0.1", "/bin/hjprobe", "tj", abi,
                    *ops)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


@pytest.fixture(params=list(HOSTS))
def host(request) -> str:
    """A partial host this one can make: skipped, naming why, where the filter would leave
    it another shape (this host lacks more, or ptrace cannot hold the rules it takes)."""
    kind, ptraced = HOSTS[request.param]
    require_denied(kind, kind="hybrid", ptrace=ptraced)
    return request.param


def plan_of(host: str):
    kind, ptraced = HOSTS[host]
    return require_denied(kind, kind="hybrid", ptrace=ptraced)


def test_each_partial_host_plans_a_hybrid(host, busybox_root):
    plan = json.loads(run_on(host, "features", "--json").stdout)
    picked = {row["rule"]: row["provider"] for row in plan["plan"] if "auto" in row["picked_by"]}
    assert {rule for rule, kind in picked.items() if kind == "ptrace"} == HOSTS[host][1]
    result = run_on(host, "run", "--name", "hy", busybox_root, "tj", "127.0.0.1", "/bin/sh",
                    "-c", guard("tj") + "echo inside")
    assert (result.returncode, result.stdout) == (0, "inside\n"), result.stderr


@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_root_in_a_hybrid_jail_cannot_do_what_r5_forbids(probe_root, host, abi):
    expected = r5_answers(plan_of(host), abi)
    ops = sorted(expected, key=lambda op: op == "sethostname")  # the probe checks the name
    assert probe_ops(probe_root, host, abi, *ops) == expected


@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_host_pids_are_out_of_reach(probe_root, host, abi, host_process):  # noqa: F811
    ops = [f"kill:{host_process}",
           *(f"pid:{call}:{pid}" for pid in (host_process, 0) for call in PID_CALLS)]
    result = probe_ops(probe_root, host, abi, *ops)
    assert result == {op: ("ESRCH" if op.endswith(f":{host_process}") else "ok") for op in ops}


def test_allow_mount_gives_a_mount_namespace_of_the_jails_own(busybox_root, host):
    """allow.mount where the jail has a user namespace but, without a pid namespace, no /proc
    to find its namespaces by: root inside mounts a tmpfs over its own /tmp (with
    allow.mount.tmpfs, as FreeBSD's)."""
    if not plan_of(host).uses("R5", "kernel"):
        pytest.skip("allow.mount needs the kernel's R5 (a user namespace of the jail's)")
    result = run_on(host, "run", "--allow", "mount", "--allow", "mount.tmpfs", busybox_root,
                    "tj", "127.0.0.1", "/bin/sh", "-c",
                    guard("tj") + "mount -t tmpfs none /tmp && echo mounted")
    assert (result.returncode, result.stdout) == (0, "mounted\n"), result.stderr


def test_the_hostname_is_the_jails_and_changes_only_there(busybox_root, host):
    before = os.uname().nodename
    script = guard("tj") + ("hostname renamed; hostname; [ -d /proc/sys ] && "
                            "cat /proc/sys/kernel/hostname; exit 0")
    result = run_on(host, "run", busybox_root, "tj", "127.0.0.1", "/bin/sh", "-c", script)
    assert result.returncode == 0, result.stderr
    # Where the jail has a /proc, its UTS namespace follows the name (even one ptrace holds).
    assert set(result.stdout.split()) == {"renamed"}
    assert os.uname().nodename == before
    off = run_on(host, "run", "--allow", "noset_hostname", busybox_root, "tj", "127.0.0.1",
                 "/bin/sh", "-c", guard("tj") + "hostname other; echo $?; hostname")
    assert off.stdout.split() == ["1", "tj"]


def test_kill_minus_one_reaches_only_the_jail(busybox_root, host, host_process):  # noqa: F811
    script = guard("tj") + "sleep 30 & sleep 30 & sleep 0.2; kill -9 -1; wait; echo survived"
    result = run_on(host, "run", busybox_root, "tj", "127.0.0.1", "/bin/sh", "-c", script)
    assert (result.returncode, result.stdout) == (0, "survived\n"), result.stderr


def test_the_command_ends_the_jail_and_a_killed_supervisor_leaves_nothing(busybox_root, host):
    ended = run_on(host, "run", busybox_root, "tj", "127.0.0.1", "/bin/sh", "-c",
                   guard("tj") + "sleep 60 & exit 5")
    assert ended.returncode == 5, ended.stderr
    with subprocess.Popen(on(host, "run", busybox_root, "tj", "127.0.0.1", "/bin/sh", "-c",
                             guard("tj") + "sleep 60 & sleep 60 & echo up; wait"),
                          stdout=subprocess.PIPE, text=True) as jail:
        assert jail.stdout.readline() == "up\n"
        sigkill_leaves_no_jailed_process(jail)


def test_jexec_and_ps_on_a_hybrid_jail(probe_root, host, host_process):  # noqa: F811
    ip = "127.0.0.1" if host != "no-netns" else fresh_loopback_ip()
    with subprocess.Popen(on(host, "run", "--name", "mixed", probe_root, "tj", ip, "/bin/sh",
                             "-c", guard("tj") + "echo up; sleep 60"),
                          stdout=subprocess.PIPE, text=True) as jail:
        try:
            assert jail.stdout.readline() == "up\n"
            listed = json.loads(hyjail("ls", "--json").stdout)
            assert [(j["name"], j["backend"]) for j in listed] == [("mixed", "hybrid")]
            commands = [p["command"] for p in json.loads(hyjail("ps", "--json").stdout)]
            assert "sleep 60" in commands
            entered = hyjail("exec", "mixed", "/bin/hjprobe", "tj", "int80", "nodename",
                             f"kill:{host_process}", "mount", "unshare_user", "sethostname",
                             "nodename")
            assert (entered.returncode, entered.stdout.split()) == (0, [
                "nodename=tj", f"kill:{host_process}=ESRCH", "mount=EPERM",
                "unshare_user=EPERM", "sethostname=ok", "nodename=hjprobe"]), entered.stderr
        finally:
            jail.terminate()
            jail.wait(timeout=20)


def test_without_a_network_namespace_the_supervisor_binds(probe_root):
    plan_of("no-netns")
    ip = fresh_loopback_ip()
    ops = ["bind:0.0.0.0", "bind:127.0.0.1", f"bind:{ip}", "bind:127.0.0.2"]
    result = run_on("no-netns", "run", probe_root, "tj", ip, "/bin/hjprobe", "tj", "64", *ops)
    assert result.stdout.split() == [f"bind:0.0.0.0={ip}", f"bind:127.0.0.1={ip}",
                                     f"bind:{ip}={ip}", "bind:127.0.0.2=EADDRNOTAVAIL"]
