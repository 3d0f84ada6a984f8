"""R6 and SPEC 2 signals on the ns backend: signals reach the command, the jail dies with its
command and with its supervisor, and many jails at once all work and all clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (
    alive,
    connect_to_jail,
    descendants,
    guard,
    host_plan,
    hyjail,
    jail_ip,
    jail_record,
    needs_jails,
    new_leaks,
    running,
    veth_args,
)

pytestmark = needs_jails


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                    signal.SIGUSR1])
def test_signal_to_hyjail_run_reaches_a_trapping_command(busybox_root, signum):
    name = signal.Signals(signum).name[3:]
    script = (f'trap "echo got {name}; exit 3" {name}; echo ready; '
              "while :; do sleep 0.05; done")
    with running("run", busybox_root, "traps", "127.0.0.1", "/bin/sh", "-c", script) as jail:
        assert jail.stdout.readline() == "ready\n"
        jail.send_signal(signum)
        assert jail.wait(timeout=20) == 3
        assert jail.stdout.read() == f"got {name}\n"


def test_command_exit_kills_the_rest_of_the_jail(busybox_root):
    with running("run", busybox_root, "bg", "127.0.0.1", "/bin/sh", "-c",
                 "sleep 1000 & sleep 1000 & echo started; sleep 0.2") as jail:
        assert jail.stdout.readline() == "started\n"
        jailed = descendants(jail.pid)
        assert len(jailed) >= 3  # pid 1, sh and two sleeps
        assert jail.wait(timeout=20) == 0
        assert alive(jailed) == []


def test_supervisor_sigkill_leaves_no_jailed_process(busybox_root):
    ip = jail_ip()
    with running("run", *veth_args(ip), busybox_root, "doomed", ip, "/bin/sh", "-c",
                 "sleep 1000 & sleep 1000 & echo started; wait") as jail:
        assert jail.stdout.readline() == "started\n"
        record = jail_record(ip)
        jailed = descendants(jail.pid)
        assert len(jailed) >= 3  # the shell and its sleeps (and pid 1, where it has one)
        jail.kill()
        jail.wait(timeout=20)
        deadline = time.monotonic() + 10
        while alive(jailed) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert alive(jailed) == []
    # The record outlives its supervisor; the next command (here gc) reclaims it and the veth.
    assert os.path.exists(f"/run/hyjail/jails/{record['jid']}.json")
    assert hyjail("gc").returncode == 0
    assert not os.path.exists(f"/run/hyjail/jails/{record['jid']}.json")


def test_stale_record_is_reclaimed_by_the_next_run(busybox_root):
    ip = jail_ip()
    with running("run", busybox_root, "stale", ip, "/bin/sh", "-c", "echo up; sleep 1000") as j:
        assert j.stdout.readline() == "up\n"
        jail_record(ip)
        j.kill()
        j.wait(timeout=20)
    # Same address again: the dead jail's record must not hold it.
    result = hyjail("run", busybox_root, "again", ip, "/bin/true")
    assert result.returncode == 0, result.stderr


def test_ten_jails_at_once(busybox_root):
    ips = [jail_ip() for _ in range(10)]

    def serve_and_ask(index: int) -> tuple[int, bytes, str]:
        ip, name = ips[index], f"j{index}"
        with running("run", *veth_args(ip), busybox_root, name, ip, "/bin/sh", "-c",
                     guard(name) + "nc -l -p 7000 -e /bin/hostname") as jail:
            with connect_to_jail(ip, 7000, timeout=60) as sock:
                answer = sock.recv(100)
            return jail.wait(timeout=60), answer, jail.stderr.read()

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(serve_and_ask, range(10)))
    assert [(code, answer) for code, answer, _ in results] == [
        (0, f"j{i}\n".encode()) for i in range(10)], results
    assert not new_leaks()


def test_pid_1_reaps_orphaned_zombies(busybox_root):
    # Each `( sleep & )` orphans a sleep onto pid 1; once it exits only pid 1 can reap it.
    script = ("for i in 1 2 3 4 5; do (sleep 0.1 &); done; sleep 1; "
              "ps -o stat,comm | awk '$1 ~ /^Z/' | wc -l")
    result = hyjail("run", busybox_root, "reaper", "127.0.0.1", "/bin/sh", "-c", script)
    assert (result.returncode, result.stdout.strip()) == (0, "0"), result.stderr


def test_loopback_jail_start_loads_neither_netlink_nor_ptrace(busybox_root):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "hyjail", "run",
                             busybox_root, "lean", "127.0.0.1", "/bin/true"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    loaded = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
              if line.startswith("import time:")}
    assert "hyjail.supervisor" in loaded  # the measurement itself works
    # (Its filter comes compiled from the cache, or pyseccomp compiles it once.) A jail whose
    # supervisor traces it (a rule left to ptrace here) needs python-ptrace, and no other.
    unneeded = ("pyroute2",) if host_plan("auto").traced else ("pyroute2", "ptrace")
    assert not {m for m in loaded if m.split(".")[0] in unneeded}
