"""`hyjail run` on the ns backend, with real jails: the view from inside (R1, R2, R4), exit
codes (SPEC 2), bad input, and the FreeBSD 4 `jail` drop-in."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from hyjail.ns import mounts as plan

from conftest import (
    fresh_ip,
    guard,
    hyjail,
    jail_ip,
    needs,
    needs_jails,
    needs_probe_py,
    new_leaks,
    probe,
    running,
)

pytestmark = needs_jails
# A jail over the host's tree (PATH /) needs a mount namespace to take the host's /proc away:
# a chroot of / would show the host's processes, and the trace backend refuses it.
over_the_host = needs("R1:kernel")


@over_the_host
def test_seed_example_host_processes_do_not_exist_in_the_jail():
    host_process = subprocess.Popen(["sleep", "60"])
    try:
        result = hyjail("run", "/", "ahost", "127.0.0.1", "/bin/sh", "-c",
                        guard("ahost", marker=False) + f"hostname; kill {host_process.pid}")
        assert result.stdout.splitlines() == ["ahost"]
        assert "No such process" in result.stderr
        assert result.returncode != 0
        assert host_process.poll() is None, "the jail killed a host process"
    finally:
        host_process.kill()
        host_process.wait()


@over_the_host
def test_jail_drop_in_runs_like_hyjail_run():
    jail = os.path.join(os.path.dirname(sys.executable), "jail")  # the installed entry point
    result = subprocess.run([jail, "/", "ahost", "127.0.0.1", "/bin/sh", "-c", "hostname; exit 3"],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (3, "ahost\n")


@needs("backend:ns")  # the ns backend's view: a veth, /proc, /sys, its own pids
def test_busybox_root_view(busybox_root, tmp_path):
    secret = os.path.join(os.path.dirname(busybox_root), "secret")
    with open(secret, "w") as f:
        f.write("host secret\n")
    ip = fresh_ip()
    script = guard("inside") + f"""
        echo "host=$(hostname)"
        echo "root=$(ls / | tr '\\n' ' ')"
        ip -o addr show | awk '{{print "addr=" $2 " " $4}}'
        cd / && cat ../secret ../../secret /../secret /proc/1/root/../secret {secret} \
            /proc/self/root/../secret /proc/self/cwd/../secret 2>/dev/null && echo LEAKED
        echo "mounts=$(awk '{{print $5}}' /proc/self/mountinfo | tr '\\n' ' ')"
        echo "pids=$(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' ')"
    """
    result = hyjail("run", busybox_root, "inside", ip, "/bin/sh", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "host=inside" in lines
    assert f"root={' '.join(sorted(os.listdir(busybox_root)))} " in lines
    # Exactly the jail's address on eth0: no kernel-made IPv6 link-local address either.
    assert sorted(line for line in lines if line.startswith("addr=")) == [
        f"addr=eth0 {ip}/32", "addr=lo 127.0.0.1/8", "addr=lo ::1/128"]
    assert "LEAKED" not in result.stdout and "host secret" not in result.stdout
    # Only the jail's own filesystems are mounted: the old root is gone, not just hidden.
    (mounts,) = [line for line in lines if line.startswith("mounts=")]
    # The /proc and /sys parts read-only or masked, as far as this kernel has them.
    proc = [f"/proc/{name}" for name in (*plan.PROC_READ_ONLY, *plan.PROC_MASKED)
            if os.path.exists(f"/proc/{name}")]
    sys_masked = [f"/sys/{name}" for name in plan.SYS_MASKED if os.path.exists(f"/sys/{name}")]
    sys_masked += sorted(glob.glob("/sys/devices/system/cpu/cpu*/thermal_throttle"))
    assert mounts.split("=", 1)[1].split() == [
        "/", "/proc", *proc, "/dev", "/dev/null", "/dev/zero", "/dev/full",
        "/dev/random", "/dev/urandom", "/dev/tty", "/dev/pts", "/dev/shm", "/sys", *sys_masked]
    (pids,) = [line for line in lines if line.startswith("pids=")]
    assert len(pids.split("=", 1)[1].split()) <= 6  # init, sh and its short-lived children


@needs_probe_py
def test_only_standard_fds_cross_into_the_jail():
    extra_read, extra_write = os.pipe()  # an fd the caller leaks into hyjail run
    try:
        result = hyjail("run", "/", "fdjail", "127.0.0.1", *probe("fdjail", "fds"),
                        pass_fds=(extra_read, extra_write))
    finally:
        os.close(extra_read)
        os.close(extra_write)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fds=0,1,2"


@pytest.mark.parametrize("script,status", [
    ("exit 0", 0), ("exit 7", 7), ("kill -TERM $$", 128 + 15), ("kill -KILL $$", 128 + 9),
])
def test_exit_status_is_the_commands(busybox_root, script, status):
    result = hyjail("run", busybox_root, "codes", "127.0.0.1", "/bin/sh", "-c", script)
    assert result.returncode == status, result.stderr


def test_command_not_found_is_127(busybox_root):
    result = hyjail("run", busybox_root, "codes", "127.0.0.1", "nosuchcommand", "arg")
    assert result.returncode == 127
    assert result.stderr == "hyjail: nosuchcommand: command not found in the jail\n"


def test_host_only_binary_is_not_found_in_a_busybox_root(busybox_root):
    assert not os.path.exists(os.path.join(busybox_root, "usr/bin/python3"))
    result = hyjail("run", busybox_root, "codes", "127.0.0.1", "/usr/bin/python3", "-c", "1")
    assert result.returncode == 127, result.stderr


def test_command_not_executable_is_126(busybox_root):
    result = hyjail("run", busybox_root, "codes", "127.0.0.1", "/etc/passwd")
    assert result.returncode == 126
    assert result.stderr.startswith("hyjail: /etc/passwd: cannot execute")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("args,named", [
    (["/nonexistent/root", "h", "127.0.0.1"], "/nonexistent/root"),
    (["/etc/passwd", "h", "127.0.0.1"], "/etc/passwd"),
    (["{badroot}", "h", "127.0.0.1"], "badroot/proc"),  # a file where /proc is mounted
    (["{root}", "h", "10.77.0.300"], "10.77.0.300"),
    (["{root}", "h", "0.0.0.0"], "0.0.0.0"),
    (["{root}", "h", "224.0.0.1"], "224.0.0.1"),
    (["{root}", "h", "169.254.9.9"], "169.254.9.9"),
    (["{root}", "bad_host", "127.0.0.1"], "bad_host"),
    (["{root}", "x" * 65, "127.0.0.1"], "x" * 65),
    (["--name", "12", "{root}", "h", "127.0.0.1"], "12"),
    (["--host-ip", "127.0.0.1", "{root}", "h", "10.77.9.9"], "127.0.0.1"),
])
def test_bad_input_is_one_line_and_125(busybox_root, tmp_path, args, named):
    (tmp_path / "badroot").mkdir()
    (tmp_path / "badroot" / "proc").write_text("")
    args = [a.replace("{root}", busybox_root).replace("{badroot}", str(tmp_path / "badroot"))
            for a in args]
    result = hyjail("run", *args, "/bin/true")
    assert result.returncode == 125
    assert result.stderr.startswith("hyjail: ") and result.stderr.count("\n") == 1
    assert named in result.stderr
    assert not new_leaks()


@pytest.mark.parametrize("args", [[], ["/"], ["/", "h", "127.0.0.1"], ["--net", "wifi", "/"],
                                  ["--nosuchoption"]])
def test_usage_errors_exit_2_with_one_line(args):
    result = hyjail("run", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("hyjail: ") and result.stderr.count("\n") == 1


@needs("R3:kernel")  # on the host's loopback (ptrace's R3), jails share addresses, as FreeBSD's
def test_address_held_by_a_running_jail_is_refused(busybox_root):
    ip = jail_ip()
    with running("run", "--name", "first", busybox_root, "one", ip, "/bin/sh", "-c",
                 "echo up; sleep 30") as first:
        assert first.stdout.readline() == "up\n"
        second = hyjail("run", busybox_root, "second", ip, "/bin/true")
        assert second.returncode == 125
        assert second.stderr.startswith(f"hyjail: {ip}: already held by running jail")
        duplicate = hyjail("run", "--name", "first", busybox_root, "x", jail_ip(), "/bin/true")
        assert duplicate.returncode == 125 and "first" in duplicate.stderr


@needs("R1:kernel", "R3:kernel")  # a network namespace, seen in the jail's /sys
def test_net_none_gives_loopback_only(busybox_root):
    result = hyjail("run", "--net", "none", busybox_root, "nonet", fresh_ip(), "/bin/sh", "-c",
                    "ls /sys/class/net")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lo"]


def test_the_start_path_is_told_phase_by_phase_when_asked(busybox_root):
    """HYJAIL_TRACE_START=1: each phase of the supervisor's, in order, with its time and the
    time since exec, on stderr; without it, nothing."""
    import re
    traced = hyjail("run", "--net", "none", busybox_root, "p", "127.0.0.1", "/bin/true",
                    env={**os.environ, "HYJAIL_TRACE_START": "1"})
    assert traced.returncode == 0, traced.stderr
    line = re.compile(r"hyjail: phase (.+?) +[0-9.]+ ms  \( *[0-9.]+ ms since exec\)\Z")
    names = [found[1] for found in map(line.match, traced.stderr.splitlines()) if found]
    assert names == ["called", "plan chosen", "admitted", "cgroups made", "pid 1 forked",
                     "pid 1 ready", "network up", "command started", "command ended",
                     "torn down"], traced.stderr
    quiet = hyjail("run", "--net", "none", busybox_root, "p", "127.0.0.1", "/bin/true")
    assert quiet.returncode == 0 and "phase" not in quiet.stderr


def test_a_command_named_without_a_path_is_found_on_the_jails_path(busybox_root):
    """Found by hyjail itself in the jail's root, where the host's Python library is out of
    reach: os.execvpe's own `import warnings` failed there once nothing else had imported it.
    By the installed command: `python -m` (runpy) imports warnings itself."""
    command = os.path.join(os.path.dirname(sys.executable), "hyjail")
    result = subprocess.run([command, "run", "--net", "none", busybox_root, "bare", "127.0.0.1",
                             "hostname"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "bare\n"), result.stderr
