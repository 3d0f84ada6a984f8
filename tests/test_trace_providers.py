"""The trace backend's providers for kernels before 6.9 and 6.12 (Debian 11's 5.10, 12's 6.1),
run here with the probe's answers for Landlock scopes and thread pidfds withheld
(HYJAIL_PROBE_WITHOUT): R3's stand-in for unix calls (abstract names: the jail's own only),
R4's signals without thread pidfds, and F_SETOWN judged, each shown to fail when weakened."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess

import pytest

from conftest import abis, hyjail, needs, needs_root, require

pytestmark = [needs_root, needs("backend:trace")]

OLDER_KERNEL = {"HYJAIL_PROBE_WITHOUT": "landlock.scope,pidfd.thread"}


def older(**more: str) -> dict:
    return {**os.environ, **OLDER_KERNEL, **more}


def probe_ops(root: str, abi: str, *ops: str, env: dict | None = None) -> dict[str, str]:
    result = hyjail("run", "--backend", "trace", root, "tp", "127.0.0.1", "/bin/hjprobe", "tp",
                    abi, *ops, env=env or older(), timeout=180)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


@contextlib.contextmanager
def host_abstract_sockets():
    """A stream listener and a datagram socket of the host's at abstract names; yields
    (names, reached), reached() telling whether anything got to either."""
    tag = f"hjtp{os.getpid()}"
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        stream.bind(b"\0" + tag.encode())
        stream.listen(64)
        datagram.bind(b"\0" + tag.encode() + b"d")
        for s in (stream, datagram):
            s.setblocking(False)

        def reached() -> bool:
            with contextlib.suppress(BlockingIOError):
                stream.accept()[0].close()
                return True
            with contextlib.suppress(BlockingIOError):
                datagram.recv(64)
                return True
            return False
        yield {"stream": tag, "datagram": tag + "d"}, reached
    finally:
        stream.close()
        datagram.close()


def test_the_plan_picks_the_older_kernels_providers():
    shown = hyjail("features", "--json", env=older())
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)["plan"]
    r3 = [row for row in rows if row["rule"] == "R3" and row["provider"] == "ptrace"]
    assert r3[0]["missing"] == ["landlock.scope"] and r3[0]["picked_by"] == []
    assert r3[1]["missing"] == [] and "trace" in r3[1]["picked_by"]
    r4 = next(row for row in rows if row["rule"] == "R4" and row["provider"] == "ptrace")
    assert r4["missing"] == [] and "trace" in r4["picked_by"]


@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_the_hosts_abstract_names_are_out_of_reach_and_the_jails_own_work(probe_root, abi):
    with host_abstract_sockets() as (names, reached):
        got = probe_ops(probe_root, abi, f"uconnect:{names['stream']}",
                        f"uconnectd:{names['datagram']}", f"usendmsg:{names['datagram']}",
                        "uown:hjtp-own", "uown:/tmp/hjtp-sock")
        assert not reached()
    assert got == {f"uconnect:{names['stream']}": "ECONNREFUSED",
                   f"uconnectd:{names['datagram']}": "ECONNREFUSED",
                   f"usendmsg:{names['datagram']}": "ECONNREFUSED",
                   "uown:hjtp-own": "ok", "uown:/tmp/hjtp-sock": "ok"}


def test_a_path_flipped_to_the_hosts_abstract_name_reaches_nothing(probe_root):
    """A child flips a shared page's sockaddr between a path and the host's abstract name
    while we connect: the stand-in connects with its own copy, judged once."""
    with host_abstract_sockets() as (names, reached):
        got = probe_ops(probe_root, "64", f"uflip:{names['stream']}:20000")
        assert not reached()
    assert got[f"uflip:{names['stream']}:20000"] != "ok"


def test_the_weakened_jail_reaches_the_hosts_abstract_name(probe_root):
    """The same calls run as made (no Landlock scope, no stand-in): the escape the tests
    above would see."""
    with host_abstract_sockets() as (names, reached):
        got = probe_ops(probe_root, "64", f"uconnect:{names['stream']}",
                        env=older(HYJAIL_UNSAFE_WEAKEN="unjudged-unix"))
        assert reached()
    assert got[f"uconnect:{names['stream']}"] == "ok"


@pytest.mark.parametrize(("provider", "env", "pid"), [
    ("stand-in", OLDER_KERNEL, "other"), ("scoped", {}, "child")])
def test_a_jailed_server_sees_the_callers_uid_and_gid(probe_root, provider, env, pid):
    """SO_PEERCRED of a jailed listener names the jailed caller's uid and gid, also where
    the stand-in performs the connect for it (it takes the caller's credentials first); the
    pid it names is then the supervisor's, not the caller's (README, "Backends")."""
    if provider == "scoped":
        require("landlock.scope")
    op = "upeercred:/tmp/hjtp-cred:4321:8765"
    got = probe_ops(probe_root, "64", op, env={**os.environ, **env})
    assert got == {op: f"ok:4321:8765:{pid}"}


@pytest.fixture
def host_process():
    sleeper = subprocess.Popen(["sleep", "60"])
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait()


@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_sigio_cannot_be_pointed_at_a_host_process(probe_root, abi, host_process):
    ops = [f"pid:{call}:{host_process}" for call in ("setown", "setown_ex", "fiosetown")]
    got = probe_ops(probe_root, abi, *ops, "pid:setown:0")
    assert got == {ops[0]: "ESRCH", ops[1]: "ESRCH", ops[2]: "EPERM", "pid:setown:0": "ok"}
    weakened = probe_ops(probe_root, abi, *ops, env=older(HYJAIL_UNSAFE_WEAKEN="any-fown"))
    assert set(weakened.values()) == {"ok"}


@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_threads_signals_and_forks_work_without_thread_pidfds(probe_root, abi):
    assert probe_ops(probe_root, abi, "threads") == {"threads": "ok"}


def test_signals_between_jail_processes_without_thread_pidfds(busybox_root):
    script = ("sleep 30 & pid=$!; kill -0 $pid && echo alive; kill -TERM $pid; wait $pid; "
              "echo status=$?")
    result = hyjail("run", "--backend", "trace", busybox_root, "tp", "127.0.0.1", "/bin/sh",
                    "-c", script, env=older())
    assert (result.returncode, result.stdout) == (0, "alive\nstatus=143\n"), result.stderr



def battery(pattern: str, weaken: str = "") -> tuple[int, list]:
    result = hyjail("check", "--json", "--backend", "trace", "-k", pattern, timeout=600,
                    env=older(HYJAIL_UNSAFE_WEAKEN=weaken))
    return result.returncode, json.loads(result.stdout)["rows"]


@pytest.mark.parametrize(("weaken", "pattern"), [
    ("unjudged-unix", "the host's abstract unix socket"),
    ("unjudged-unix", "unix path flipped to a host abstract name"),
    ("any-fown", "setown"),
])
def test_the_older_kernels_attempts_hold_and_escape_when_weakened(weaken, pattern):
    """The battery's attempts for these providers, on the trace backend as a 5.10 host runs
    it: held here, and ESCAPED against the jail weakened on purpose (the native ABI's rows
    at least: i386's socketcall refuses a unix call it would let through)."""
    code, rows = battery(pattern)
    assert code == 0 and rows and {row["result"] for row in rows} == {"held"}, rows
    code, rows = battery(pattern, weaken)
    assert code == 1
    assert {row["result"] for row in rows if row["abi"] == "64"} == {"ESCAPED"}, rows
