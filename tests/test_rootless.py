"""Jails started by a user other than root: the same rules, one user namespace higher, with
loopback only; and, where the host denies unprivileged user namespaces, one line naming why.

The user is uid 65534 (nobody). Its jail root lives in a directory it can read, its registry
in /tmp/hyjail-65534, which the fixtures remove again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from conftest import HERE, HYJAIL, abis, guard, needs, needs_root, new_leaks
from test_dilution import ALLOWED, DENIED, ONLY_ABI

# A user's jail: in a user namespace the user makes, with the kernel's providers only (the
# ptrace ones need root).
pytestmark = [needs_root, needs("userns.unprivileged", "backend:ns")]

USER = 65534
USER_STATE = f"/tmp/hyjail-{USER}"
AS_USER = {"user": USER, "group": USER, "extra_groups": [], "cwd": "/"}


def as_user(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*HYJAIL, *args], capture_output=True, text=True, timeout=timeout,
                          env={"PATH": os.environ["PATH"]}, **AS_USER)


def user_records() -> list[str]:
    jails = os.path.join(USER_STATE, "jails")
    return sorted(os.listdir(jails)) if os.path.isdir(jails) else []


@pytest.fixture(scope="module")
def user_root(probe_root):
    """A copy of the probe root that the user can reach, with /out writable by the user."""
    top = tempfile.mkdtemp(prefix="hyjail-rootless-")
    os.chmod(top, 0o755)
    root = os.path.join(top, "root")
    shutil.copytree(probe_root, root, symlinks=True,  # not the device nodes' contents
                    ignore=lambda where, names: names if where.endswith("/dev") else [])
    os.mkdir(os.path.join(root, "out"))
    os.chown(os.path.join(root, "out"), USER, USER)
    yield root
    shutil.rmtree(top)
    shutil.rmtree(USER_STATE, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_user_records():
    """The user's registry is empty after every test, as root's is (conftest checks that)."""
    yield
    assert user_records() == [], "a rootless jail's record was left behind"


def test_root_inside_is_the_user_outside(user_root):
    script = guard("rl") + """
        id -u; hostname; cat /proc/self/uid_map | tr -s ' '
        touch /out/made; set -- /proc/[0-9]*; echo $#; ip -o addr | awk '{print $2, $4}'
    """
    result = as_user("run", user_root, "rl", "127.0.0.1", "/bin/sh", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["0", "rl", " 0 0 1"]
    assert lines[3] == "2"  # pid 1 and the shell: nothing of the host's
    assert lines[4:] == ["lo 127.0.0.1/8", "lo ::1/128"]
    made = os.stat(os.path.join(user_root, "out", "made"))
    assert (made.st_uid, made.st_gid) == (USER, USER)
    os.unlink(os.path.join(user_root, "out", "made"))


# Where a rootless jail answers otherwise, and why. Only root is mapped in it, so chown to
# another uid has no one to give the file to; /proc/sys belongs to the host's root, whom the
# jail's root is not even on files, so the permission check refuses before the read-only one.
ROOTLESS = {"chown": "EINVAL", "write_proc_sys": "EACCES"}


@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_root_inside_a_rootless_jail_is_diluted_the_same(user_root, abi):
    expected = {**DENIED, **ALLOWED, **ONLY_ABI[abi], **ROOTLESS}
    ops = sorted(expected, key=lambda op: op == "sethostname")
    result = as_user("run", user_root, "r5", "127.0.0.1", "/bin/hjprobe", "r5", abi, *ops)
    assert result.returncode == 0, result.stderr
    assert dict(line.split("=", 1) for line in result.stdout.splitlines()) == expected


@pytest.mark.parametrize(("options", "ip", "says"), [
    ((), "10.77.9.9", "10.77.9.9: a jail started by a user other than root has loopback only"),
    (("--memory", "64M"), "127.0.0.1", "--memory: cgroup limits need root"),
    (("--pids", "10"), "127.0.0.1", "--pids: cgroup limits need root"),
    (("--userns",), "127.0.0.1", "--userns: needs root"),
    (("--allow", "chflags"), "127.0.0.1", "allow.chflags: needs root"),
])
def test_what_needs_root_is_refused_in_one_line(user_root, options, ip, says):
    result = as_user("run", *options, user_root, "rl", ip, "/bin/true")
    assert result.returncode == 125
    assert result.stderr.startswith(f"hyjail: {says}") and result.stderr.count("\n") == 1


def test_rlimits_and_loopback_by_net_none_work(user_root):
    result = as_user("run", "--net", "none", "--rlimit", "nofile=64", user_root, "rl",
                     "10.77.9.9", "/bin/sh", "-c", "ulimit -n; ls /sys/class/net")
    assert (result.returncode, result.stdout.split()) == (0, ["64", "lo"]), result.stderr


def test_jls_jexec_ps_and_stop_for_the_users_own_jails(user_root):
    started = as_user("run", "--persist", "--name", "mine", user_root, "rl", "127.0.0.1",
                      "/bin/sleep", "60")
    assert started.returncode == 0, started.stderr
    try:
        entered = subprocess.run(
            [sys.executable, "-c", "from hyjail.commands import jexec_main; jexec_main()",
             "mine", "/bin/sh", "-c", guard("rl") + "id -u; ps -o comm | sort"],
            capture_output=True, text=True, timeout=30, **AS_USER)
        assert entered.returncode == 0, entered.stderr
        uid, *commands = entered.stdout.split()
        assert uid == "0"
        assert set(commands) - {"COMMAND", "ps", "sh", "sort"} == {"hyjail-init", "sleep"}
        other = subprocess.run(
            [sys.executable, "-c", "from hyjail.commands import jexec_main; jexec_main()",
             "-u", "nobody", "mine", "/bin/true"], capture_output=True, text=True, **AS_USER)
        assert (other.returncode, other.stderr) == (
            1, "jexec: -u nobody: a jail started by a user other than root has only its root "
                 "mapped\n")
        listed = as_user("ps")
        assert [line.split()[3] for line in listed.stdout.splitlines()[1:]] == [
            "hyjail-init", "/bin/sleep"]
        assert "mine" not in as_user_root_view()
    finally:
        stopped = as_user("stop", "mine")
    assert stopped.returncode == 0, stopped.stderr


def as_user_root_view() -> str:
    """What root's jls shows: root's registry only."""
    return subprocess.run([*HYJAIL, "ls"], capture_output=True, text=True).stdout


def test_killing_the_users_supervisor_leaves_no_jailed_process(user_root):
    started = as_user("run", "--persist", "--name", "doomed", user_root, "rl", "127.0.0.1",
                      "/bin/sleep", "60")
    assert started.returncode == 0, started.stderr
    import json
    with open(os.path.join(USER_STATE, "jails", "1.json")) as f:
        record = json.load(f)
    os.kill(record["supervisor_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{record['init_pid']}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{record['init_pid']}")
    assert as_user("gc").returncode == 0
    assert user_records() == []


DENY_USER_NAMESPACES = textwrap.dedent("""
    # As root: a user namespace whose own limit of user namespaces is 0, then the user.
    import os, sys
    from hyjail import linux
    go_r, go_w = os.pipe(); ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        linux.unshare(linux.CLONE_NEWUSER)
        os.write(ready_w, b"u"); os.read(go_r, 1)
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0")
        os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
        os.chdir("/")
        os.execv(sys.executable, [sys.executable, "-m", "hyjail", *sys.argv[1:]])
    os.read(ready_r, 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write("0 0 65536")
    os.write(go_w, b"g")
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
""")


def test_a_denied_user_namespace_names_the_knob(user_root):
    result = subprocess.run([sys.executable, "-c", DENY_USER_NAMESPACES, "run", user_root,
                             "rl", "127.0.0.1", "/bin/true"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 125
    assert result.stderr == (
        "hyjail: a jail started by a user other than root needs an unprivileged user "
        "namespace, and this host denies it: sysctl user.max_user_namespaces=0\n")


def test_other_knobs_are_named_too():
    from hyjail import rootless
    values = {"kernel.apparmor_restrict_unprivileged_userns": "1",
              "kernel.unprivileged_userns_clone": "0"}
    assert rootless.blocking_knobs(values.get) == [
        "kernel.unprivileged_userns_clone=0", "kernel.apparmor_restrict_unprivileged_userns=1"]
    assert rootless.blocking_knobs({}.get) == []


def test_user_namespaces_denied_by_a_filter_say_no_sysctl_explains_it(user_root):
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "deny_namespaces.py"), "--only", "user", *HYJAIL,
         "run", user_root, "rl", "127.0.0.1", "/bin/true"],
        capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]},
        **AS_USER)
    assert result.returncode == 125
    assert result.stderr == (
        "hyjail: a jail started by a user other than root needs an unprivileged user "
        "namespace, and this host denies it: Operation not permitted, and no sysctl says so: "
        "a seccomp policy or security module of this host refuses them\n")


def test_allow_mount_in_a_rootless_jail(user_root):
    script = "mount -t tmpfs x /tmp && echo tmpfs=$?; umount /proc/sys; echo umount=$?"
    result = as_user("run", "--allow", "mount", "--allow", "mount.tmpfs", user_root, "rl",
                     "127.0.0.1", "/bin/sh", "-c", script)
    assert result.stdout.split() == ["tmpfs=0", "umount=1"], result.stderr


def test_a_users_jail_runs_its_command_as_root_only(user_root):
    """--user in a jail of a user other than root: only root is mapped, so any other user is
    refused in one line (never run as an unmapped id)."""
    refused = as_user("run", "--user", "nobody", user_root, "rl", "127.0.0.1", "/bin/true")
    assert (refused.returncode, refused.stderr) == (
        125, "hyjail: --user nobody: its ids are not mapped in this jail's user namespace (a "
             "jail of a user other than root maps only root)\n")
    ran = as_user("run", "--user", "root", "--chdir", "/out", user_root, "rl", "127.0.0.1",
                  "/bin/sh", "-c", "id -u; pwd")
    assert ran.stdout == "0\n/out\n", ran.stderr
    assert not new_leaks()
