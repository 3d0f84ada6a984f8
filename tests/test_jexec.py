"""jexec / hyjail exec: a process entered into a running jail sees and reaches exactly what the
jail's own processes do, and gets SPEC 2's exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from conftest import (
    HOST_IP,
    fresh_ip,
    guard,
    hyjail,
    jail_ip,
    jail_record,
    needs,
    needs_jails,
    needs_probe_py,
    probe,
    running,
    veth_args,
)

pytestmark = needs_jails

JEXEC = [sys.executable, "-c", "from hyjail.commands import jexec_main; jexec_main()"]


def jexec(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*JEXEC, *args], capture_output=True, text=True, timeout=60, **kwargs)


@needs("R3:kernel", "R4:kernel")  # the jail's veth, and a pid namespace for ps to list
def test_jexec_sees_the_jails_hostname_root_address_and_processes(busybox_root):
    ip = fresh_ip()
    host_process = subprocess.Popen(["sleep", "60"])
    try:
        with running("run", "--name", "target", "--host-ip", HOST_IP, busybox_root, "inside",
                     ip, "/bin/sh", "-c", "echo up; sleep 100") as jail:
            assert jail.stdout.readline() == "up\n"
            jail_record(ip)
            script = guard("inside") + f"""
                echo "host=$(hostname)"
                echo "root=$(ls / | tr '\\n' ' ')"
                ip -o addr show eth0 | awk '{{print "addr=" $4}}'
                echo "procs=$(ps -o comm | tail -n +2 | sort | tr '\\n' ' ')"
                kill {host_process.pid}; echo "kill=$?"
            """
            result = jexec("target", "/bin/sh", "-c", script)
            assert result.returncode == 0, result.stderr
            lines = result.stdout.splitlines()
            assert "host=inside" in lines
            assert f"root={' '.join(sorted(os.listdir(busybox_root)))} " in lines
            assert f"addr={ip}/32" in lines
            (procs,) = [line for line in lines if line.startswith("procs=")]
            seen = procs.split("=", 1)[1].split()
            # The jail's own (init, its sleep) and this pipeline's; nothing of the host.
            assert {"hyjail-init", "sleep", "sh", "ps"} <= set(seen) and len(seen) < 12
            assert "kill=1" in lines and "No such process" in result.stderr
            assert host_process.poll() is None
    finally:
        host_process.kill()
        host_process.wait()


def test_jexec_sees_the_jails_hostname_and_root_and_gets_spec_2s_exit_codes(busybox_root):
    ip = jail_ip()
    host_process = subprocess.Popen(["sleep", "60"])
    try:
        with running("run", "--name", "target", *veth_args(ip), busybox_root, "inside", ip,
                     "/bin/sh", "-c", "echo up; sleep 100") as jail:
            assert jail.stdout.readline() == "up\n"
            jid = str(jail_record(ip)["jid"])
            script = guard("inside") + f"""
                echo "host=$(hostname)"
                echo "root=$(ls / | tr '\\n' ' ')"
                kill {host_process.pid}; echo "kill=$?"
            """
            result = jexec("target", "/bin/sh", "-c", script)
            assert result.returncode == 0, result.stderr
            lines = result.stdout.splitlines()
            assert "host=inside" in lines
            assert f"root={' '.join(sorted(os.listdir(busybox_root)))} " in lines
            assert "kill=1" in lines and "No such process" in result.stderr
            assert host_process.poll() is None
            # The same jail by JID, and SPEC 2's exit codes.
            assert jexec(jid, "/bin/sh", "-c", "exit 9").returncode == 9
            assert jexec(jid, "/bin/sh", "-c", "kill -TERM $$").returncode == 128 + 15
            assert hyjail("exec", jid, "nosuch").returncode == 127
            assert hyjail("exec", jid, "/etc/passwd").returncode == 126
            assert hyjail("exec", "-u", "nobody", jid, "id", "-u").stdout == "65534\n"
            unknown_user = hyjail("exec", "-u", "ghost", jid, "true")
            assert (unknown_user.returncode, unknown_user.stderr) == (
                125, "hyjail: ghost: no such user in the jail\n")
            # jexec(8) words and exits as FreeBSD's (tests/test_jexec8.py has the rest).
            assert (jexec(jid, "nosuch").returncode, jexec(jid, "nosuch").stderr) == (
                1, "jexec: execvp: nosuch: No such file or directory\n")
            assert jexec("-U", "nobody", jid, "id", "-u").stdout == "65534\n"
    finally:
        host_process.kill()
        host_process.wait()
    missing = jexec("target", "true")
    assert (missing.returncode, missing.stderr) == (1, 'jexec: jail "target" not found\n')


@needs_probe_py
def test_jexec_passes_only_standard_fds_and_dies_with_the_jail():
    ip = jail_ip()
    with running("run", "--name", "fdj", *veth_args(ip), "/", "fdj", ip, "/bin/sh", "-c",
                 "echo up; sleep 100") as jail:
        assert jail.stdout.readline() == "up\n"
        jail_record(ip)
        extra_read, extra_write = os.pipe()
        try:
            result = jexec("fdj", *probe("fdj", "fds"), pass_fds=(extra_read, extra_write))
        finally:
            os.close(extra_read)
            os.close(extra_write)
        assert (result.returncode, result.stdout) == (0, "fds=0,1,2\n"), result.stderr
        entered = subprocess.Popen([*JEXEC, "fdj", "sleep", "100"])
        try:
            deadline = time.monotonic() + 20
            while _count_sleeps("fdj") < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _count_sleeps("fdj") == 2
            jail.terminate()  # the jail's command ends: everything in its pid namespace dies
            assert jail.wait(timeout=20) == 128 + 15
            assert entered.wait(timeout=20) == 128 + 9
        finally:
            entered.kill()
            entered.wait()


def _count_sleeps(jail: str) -> int:
    listed = json.loads(hyjail("ps", "-j", jail, "--json").stdout)
    return sum(1 for p in listed if p["command"] == "sleep 100")


def test_jexec_finds_a_command_named_without_a_path_on_the_jails_path(busybox_root):
    with running("run", "--name", "bare", "--net", "none", busybox_root, "barehost",
                 "127.0.0.1", "/bin/sh", "-c", "echo up; sleep 100") as jail:
        assert jail.stdout.readline() == "up\n"
        for line in (jexec("bare", "hostname"), hyjail("exec", "bare", "hostname")):
            assert (line.returncode, line.stdout) == (0, "barehost\n"), line.stderr
