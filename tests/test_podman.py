"""Real podman running its containers as jails through hyjail-oci (issue 18's done-when):
run --rm, run -d with exec, logs, stop and rm, a terminal, --network none and podman's own
network (netavark, its namespace joined by path), --read-only, -v, --memory, --pids-limit,
--user, --cap-drop and a seccomp profile; then the same under a parent that denies every
namespace (tests/deny_namespaces.py: podman, conmon and hyjail-oci all under it), where
hyjail-oci makes trace-backend jails: what a chroot cannot give (a terminal, a read-only root,
a network namespace of podman's) is refused in one line.

Podman here is the test's own: its storage, run state, network configuration and
containers.conf in a temporary directory (nothing of the host's podman is read or left), its
image imported from a busybox root (no registry). A container on podman's network is made
inside a network namespace of the test's (tests/world.py), where netavark's bridge, rules
and forwarding go, in 10.77.210.0/24: the real host's network is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from hyjail import cgroups

from conftest import DENY, needs_jails, require, require_denied

pytestmark = [*needs_jails, pytest.mark.skipif(
    shutil.which("podman") is None, reason="podman is not installed (script/bootstrap does)")]
OCI = os.path.join(os.path.dirname(sys.executable), "hyjail-oci")
IMAGE = "localhost/hyjail-busybox:test"
INFRA = "localhost/hyjail-busybox:infra"
SUBNET = "10.77.210.0/24"


class Podman:
    def __init__(self, top: str, shape: str = "ns"):
        self.top = top
        # ns: on this host; hybrid: under tests/deny_namespaces.py --only user (the kernel's
        # rules but R2 and R5, ptrace's); trace: under it whole (a chroot, ptrace's rules).
        self.shape = shape
        self.denied = shape == "trace"
        self.prefix = {"ns": [], "hybrid": [sys.executable, DENY, "--only", "user"],
                       "trace": [sys.executable, DENY]}[shape]
        os.makedirs(top)
        self.conf = os.path.join(top, "containers.conf")
        # No network but loopback unless a test asks for podman's own (inside a network
        # namespace of its own: netavark's rules and forwarding go where it runs). Podman's
        # own defaults otherwise (1048576 open files: more than some hosts allow;
        # hyjail-oci lowers such a limit to the one it runs with).
        with open(self.conf, "w") as f:
            # No AppArmor profile named on a host that has AppArmor (hyjail-oci applies none).
            f.write(f"""[containers]
netns = "none"
apparmor_profile = "unconfined"
[engine]
runtime = "hyjail"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{top}/events.log"
tmp_dir = "{top}/tmp"
[engine.runtimes]
hyjail = ["{OCI}"]
[network]
network_config_dir = "{top}/networks"
default_subnet = "{SUBNET}"
""")
        # Podman's cgroupfs manager makes /libpod_parent (its containers' and conmon's groups
        # under it); made for the tests, it goes with them.
        self.made_parent = not cgroups.groups_at("libpod_parent")
        self.base = ["podman", "--root", os.path.join(top, "storage"),
                     "--runroot", os.path.join(top, "run")]
        self.env = {**os.environ, "CONTAINERS_CONF": self.conf}

    def argv(self, *args: str) -> list[str]:
        return [*self.base, *args]

    def __call__(self, *args: str, timeout: float = 120, netns: str | None = None,
                 **kwargs) -> subprocess.CompletedProcess:
        prefix = ["nsenter", f"--net=/var/run/netns/{netns}"] if netns else []
        prefix += self.prefix
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("env", self.env)
        return subprocess.run([*prefix, *self.argv(*args)], text=True, timeout=timeout,
                              **kwargs)

    def close(self) -> None:
        self("rm", "--all", "--force", "--time", "0")
        self("system", "reset", "--force")
        with open("/proc/self/mounts") as f:
            for point in reversed([line.split()[1] for line in f]):
                if point.startswith(self.top):
                    subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(self.top, ignore_errors=True)
        if self.made_parent:
            cgroups.remove_empty_groups("libpod_parent")


@pytest.fixture(scope="module", params=["ns", "hybrid", "trace"])
def podman(request):
    """Podman with hyjail-oci, on this host (ns), under a parent that denies user namespaces
    (hybrid) and under one that denies them all (trace)."""
    from hyjail.rootfs import busybox
    if request.param == "trace":
        require_denied(kind="trace")
    if request.param == "hybrid":
        require_denied("user", kind="hybrid")
    # Outside pytest's directory, whose mounts are checked after every test: podman's
    # storage mount comes and goes with its own cleanup processes, after a test's commands.
    top = pathlib.Path(tempfile.mkdtemp(prefix="hj-podman-"))
    root = busybox.build(str(top / "rootfs"))
    made = Podman(str(top / "p"), request.param)
    try:
        # The image, and a pod's infra image: the same root, sleeping by default.
        for image, change in ((IMAGE, []), (INFRA, ["--change", 'CMD ["sleep", "1000000"]'])):
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            done = subprocess.run(made.argv("import", *change, "-", image), stdin=tar.stdout,
                                  capture_output=True, text=True, env=made.env, timeout=120)
            tar.stdout.close()
            tar.wait()
            assert done.returncode == 0, done.stderr
        yield made
    finally:
        made.close()
        shutil.rmtree(top, ignore_errors=True)


def _run(podman: Podman, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return podman("run", "--rm", *args, **kwargs)


def test_run_rm_true_and_exit_status(podman):
    done = _run(podman, IMAGE, "true")
    assert done.returncode == 0, done.stderr
    done = _run(podman, IMAGE, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (done.returncode, done.stdout, done.stderr) == (7, "out\n", "err\n")
    missing = _run(podman, IMAGE, "/no/such")
    assert missing.returncode == 127 and "/no/such" in missing.stderr + missing.stdout


def test_detached_exec_logs_stop_rm(podman):
    done = podman("run", "-d", "--name", "web", IMAGE, "sh", "-c",
                  "echo started; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done")
    assert done.returncode == 0, done.stderr
    try:
        exec_ = podman("exec", "web", "sh", "-c", "echo in $(hostname); id -u")
        assert exec_.returncode == 0 and exec_.stdout.split()[2] == "0", exec_.stderr
        as_user = podman("exec", "--user", "1000:1000", "--workdir", "/tmp", "web",
                         "sh", "-c", "id -u; pwd")
        assert as_user.stdout.split() == ["1000", "/tmp"], as_user.stderr
        state = json.loads(podman("inspect", "web").stdout)[0]["State"]
        assert state["Status"] == "running" and state["Pid"] > 0
        stop = podman("stop", "--time", "10", "web")
        assert stop.returncode == 0, stop.stderr
        assert podman("logs", "web").stdout.split() == ["started", "bye"]
        state = json.loads(podman("inspect", "web").stdout)[0]["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    finally:
        assert podman("rm", "--force", "web").returncode == 0
    assert podman("ps", "-a", "-q").stdout == ""


def test_a_terminal(podman):
    """-it: the container's stdio is a terminal of its own (the jail's devpts; a trace
    jail's, which has no /dev/pts, a pty the supervisor made), its master sent to conmon."""
    argv = shlex.join([*podman.prefix,
                       *podman.argv("run", "--rm", "-it", IMAGE, "sh", "-c",
                                    "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; tty; "
                                    "echo term=$TERM")])
    done = subprocess.run(["script", "-qec", argv, "/dev/null"], capture_output=True,
                          text=True, timeout=120, env=podman.env)
    assert done.returncode == 0, done.stdout
    assert "is-a-tty" in done.stdout and "term=xterm" in done.stdout, done.stdout
    if not podman.denied:
        assert "/dev/pts/0" in done.stdout, done.stdout


def test_network_none_has_loopback_only(podman):
    done = _run(podman, "--network", "none", IMAGE, "sh", "-c", "ls /sys/class/net")
    # A chroot gets no sysfs of its own, and never the host's.
    assert done.stdout.split() == ([] if podman.denied else ["lo"]), done.stderr


def test_podmans_own_network_in_a_world_of_the_tests(podman):
    from world import World
    if podman.denied:  # netavark cannot make the container's namespace there
        pytest.skip("podman's own network needs a network namespace")
    with World() as world:
        started = podman("run", "-d", "--name", "net", "--network", "podman", IMAGE, "sh", "-c",
                         "mkdir /www; echo served > /www/index.html; "
                         "exec httpd -f -p 80 -h /www", netns=world.host)
        assert started.returncode == 0, started.stderr
        try:
            address = podman("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "net",
                             netns=world.host).stdout.strip()
            assert address.startswith("10.77.210."), address
            deadline = time.monotonic() + 20
            while world.fetch(world.host, f"http://{address}/index.html", 2) != "served\n":
                assert time.monotonic() < deadline, podman("logs", "net").stderr
                time.sleep(0.2)
        finally:
            podman("rm", "--force", "--time", "0", "net", netns=world.host)


def test_read_only_binds_and_limits(podman, tmp_path):
    require("mount_setattr")  # --read-only: every mount of the root read-only
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("host file\n")
    binds = ["-v", f"{data}:/data:ro", "-v", f"{tmp_path}:/rw"]
    done = _run(podman, "--read-only", *binds, "--memory", "64m", "--pids-limit", "32", IMAGE,
                "sh", "-c",
                "cat /data/f; touch /x 2>/dev/null || echo root-ro; touch /tmp/t && echo tmp; "
                "touch /data/g 2>/dev/null || echo data-ro; echo w > /rw/w; sleep 0.2")
    assert done.stdout.split() == ["host", "file", "root-ro", "tmp", "data-ro"], done.stderr
    if podman.denied:  # the binds were on the host's tree, and are gone
        with open("/proc/self/mounts") as f:
            assert str(data) not in f.read()
    assert (tmp_path / "w").read_text() == "w\n"


def test_a_device_of_the_hosts_at_a_path_of_the_containers(podman):
    done = _run(podman, "--device", "/dev/full:/dev/xfull", IMAGE, "sh", "-c",
                "head -c 2 /dev/xfull | wc -c; ls /dev/full /dev/xfull")
    if podman.denied:  # a chroot's /dev is the root's own: refused, never ignored
        assert done.returncode != 0
        assert "/dev/xfull: needs a mount namespace of the jail's" in done.stderr, done.stderr
    else:
        assert done.stdout.split() == ["2", "/dev/full", "/dev/xfull"], done.stderr


def test_stats_read_the_containers_own_groups_under_its_cgroup_parent(podman):
    """podman reads a container's groups from its pid (the stand-in's): they are the jail's,
    at the cgroupsPath podman chose (under --cgroup-parent), and gone with the container."""
    started = podman("run", "-d", "--name", "st", "--cgroup-parent", "/hj-podman-parent",
                     "--memory", "64m", IMAGE, "sleep", "60")
    assert started.returncode == 0, started.stderr
    ident = started.stdout.strip()
    groups = [os.path.join(h.mount, "hj-podman-parent", f"libpod-{ident}")
              for h in cgroups.hierarchies() if h.controllers]
    try:
        stats = podman("stats", "--no-stream", "--format", "{{.MemUsage}} {{.PIDs}}", "st")
        assert stats.returncode == 0, stats.stderr
        usage, _, pids = stats.stdout.strip().rpartition(" ")
        # The jail's memory (a few MB at most: busybox sleep, pid 1, the stand-in), its limit;
        # conmon's group would hold far more (conmon, the stand-in's python, the supervisor).
        amount, unit = usage.split(" / ")[0][:-2], usage.split(" / ")[0][-2:]
        assert unit in ("kB", "MB") and (unit == "kB" or float(amount) < 16), usage
        # sleep and the stand-in, and an ns jail's pid 1 (a trace jail's first is sleep)
        assert usage.endswith("/ 67.11MB") and pids == ("2" if podman.denied else "3"), \
            stats.stdout
        assert any(os.path.isdir(path) for path in groups)
    finally:
        assert podman("rm", "--force", "--time", "0", "st").returncode == 0
        left = [path for path in groups if os.path.isdir(path)]
        cgroups.remove_empty_groups("hj-podman-parent")  # with podman's conmon group in it
    assert left == []


SYSTEMD_UNIFIED = os.path.isdir("/run/systemd/system") and all(
    h.version == 2 for h in cgroups.hierarchies())


@pytest.mark.skipif(not SYSTEMD_UNIFIED,
                    reason="needs systemd as init and the unified cgroup hierarchy only")
def test_the_systemd_cgroup_manager_puts_the_container_in_a_scope_of_its_own(podman):
    """podman's default on a systemd host: `--systemd-cgroup` and machine.slice:libpod:ID;
    the container in its scope, stats read there, the scope gone with the container."""
    manager = ("--cgroup-manager", "systemd")
    started = podman(*manager, "run", "-d", "--name", "sd", "--memory", "64m", IMAGE,
                     "sleep", "60")
    assert started.returncode == 0, started.stderr
    unit = f"libpod-{started.stdout.strip()}.scope"
    try:
        shown = subprocess.run(["systemctl", "show", "-P", "ControlGroup", unit],
                               capture_output=True, text=True, timeout=60).stdout.strip()
        assert shown == f"/machine.slice/{unit}"
        stats = podman(*manager, "stats", "--no-stream", "--format", "{{.MemUsage}}", "sd")
        assert stats.returncode == 0 and stats.stdout.strip().endswith("/ 67.11MB"), \
            stats.stdout + stats.stderr
    finally:
        assert podman(*manager, "rm", "--force", "--time", "0", "sd").returncode == 0
    deadline = time.monotonic() + 30
    while os.path.exists(f"/sys/fs/cgroup/machine.slice/{unit}"):
        assert time.monotonic() < deadline, f"{unit} is still there"
        time.sleep(0.1)


def test_podmans_own_defaults_for_this_host(podman):
    """What a stock podman on this host asks (its cgroup manager: systemd where systemd is
    init; its own AppArmor profile where AppArmor is enforced and apparmor_parser there):
    the tests' configuration without those two settings."""
    from hyjail import apparmor
    stock = os.path.join(podman.top, "stock.conf")
    with open(podman.conf) as f:
        text = f.read()
    with open(stock, "w") as f:
        f.write("\n".join(line for line in text.splitlines()
                          if not line.startswith(("cgroup_manager", "apparmor_profile"))))
    confined = apparmor.enabled() and shutil.which("apparmor_parser") and not podman.denied
    done = podman("run", "--rm", IMAGE, "sh", "-c", "cat /proc/self/attr/current; echo ok",
                  env={**podman.env, "CONTAINERS_CONF": stock})
    if podman.denied and apparmor.enabled() and shutil.which("apparmor_parser"):
        # podman names its profile; the trace backend refuses one, in one line
        assert done.returncode != 0 and "process.apparmorProfile" in done.stderr, done.stderr
        return
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "ok" and (not confined or lines[0].startswith("containers-default")), \
        done.stdout


def test_an_apparmor_profile_named_to_podman_confines_the_container(podman,
                                                                    apparmor_profile):
    if podman.denied:
        pytest.skip("the trace backend refuses an AppArmor profile (test_oci_runtime)")
    done = podman("run", "--rm", "--security-opt", f"apparmor={apparmor_profile}", IMAGE,
                  "sh", "-c", "cat /proc/self/attr/current; touch /tmp/denied || echo refused")
    assert (done.returncode, done.stdout) == (0, f"{apparmor_profile} (enforce)\nrefused\n"), \
        done.stderr


def test_cp_and_top_act_on_the_containers_tree_and_processes(podman, tmp_path):
    """podman cp and top join the mount namespace of the container's pid (the stand-in's,
    the jail's): a file copied in lands in the container's tree, never the host's (it did),
    one copied out comes from it, and top lists the container's processes."""
    if podman.denied:
        pytest.skip("a host that denies namespaces gives the stand-in no mount namespace: "
                    "podman cp and top act on the host's tree there (README)")
    target = f"/hj-podman-cp-{os.getpid()}"
    (tmp_path / "marker").write_text("copied\n")
    started = podman("run", "-d", "--name", "cp", IMAGE, "sleep", "60")
    assert started.returncode == 0, started.stderr
    try:
        copied = podman("cp", str(tmp_path / "marker"), f"cp:{target}")
        assert copied.returncode == 0, copied.stderr
        assert not os.path.exists(target)
        assert podman("exec", "cp", "cat", target).stdout == "copied\n"
        out = podman("cp", "cp:/etc/hyjail-root", str(tmp_path / "back"))
        assert out.returncode == 0 and (tmp_path / "back").exists(), out.stderr
        top = podman("top", "cp", "pid", "comm")
        commands = {line.split()[-1] for line in top.stdout.splitlines()[1:] if line.strip()}
        assert top.returncode == 0 and "sleep" in commands and commands <= {
            "sleep", "hyjail-init"}, top.stdout
    finally:
        if os.path.exists(target):  # the host's, where the bug put it
            os.unlink(target)
        podman("rm", "--force", "--time", "0", "cp")


def test_memory_pids_and_cpu_limits_reach_the_jails_cgroups(podman):
    started = podman("run", "-d", "--name", "lim", "--memory", "64m", "--pids-limit", "32",
                     "--cpu-shares", "512", "--cpus", "0.5", IMAGE, "sleep", "60")
    assert started.returncode == 0, started.stderr
    try:
        full = json.loads(podman("inspect", "lim").stdout)[0]["Id"]
        from hyjail import cgroups, jails
        record = jails.get(full).record
        values = {}
        for path in cgroups.of_jail(record):
            for name in ("memory.limit_in_bytes", "memory.max", "pids.max", "cpu.shares",
                         "cpu.weight", "cpu.cfs_quota_us", "cpu.max"):
                with contextlib.suppress(OSError), open(os.path.join(path, name)) as f:
                    values[name] = f.read().strip()
        memory = values.get("memory.max", values.get("memory.limit_in_bytes"))
        shares = values.get("cpu.weight", values.get("cpu.shares"))
        quota = values.get("cpu.max", values.get("cpu.cfs_quota_us"))
        assert (memory, values["pids.max"]) == (str(64 << 20), "32"), values
        assert shares in ("512", "20") and quota in ("50000", "50000 100000"), values
    finally:
        podman("rm", "--force", "--time", "0", "lim")


def test_user_cap_drop_and_a_seccomp_profile(podman, tmp_path):
    done = _run(podman, "--user", "1000:1000", IMAGE, "sh", "-c", "id -u; id -g")
    assert done.stdout.split() == ["1000", "1000"], done.stderr
    done = _run(podman, "--cap-drop", "all", IMAGE, "sh", "-c",
                "grep CapBnd /proc/self/status; chown 1 /tmp 2>/dev/null || echo refused")
    bounding = [] if podman.denied else ["CapBnd:", "0000000000000000"]  # a chroot: no /proc
    assert done.stdout.split() == [*bounding, "refused"], done.stderr
    profile = tmp_path / "seccomp.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 13}]}))
    done = _run(podman, "--security-opt", f"seccomp={profile}", IMAGE, "sh", "-c",
                "mkdir /tmp/d 2>&1; echo $?")
    assert "Permission denied" in done.stdout and done.stdout.split()[-1] == "1", done.stdout
    refused = _run(podman, "--cap-add", "sys_admin", IMAGE, "true")
    assert refused.returncode != 0
    assert "CAP_SYS_ADMIN: a jail's root never holds it" in refused.stderr


def test_a_pods_members_share_its_namespaces(podman):
    """podman's pods: members join the infra container's network and IPC namespaces through
    its pid (hyjail-oci's stand-in, in the jail's namespaces) and take its hostname. On the
    trace backend the infra container has no namespace of its own: a member's join would
    be the host's, and is refused."""
    assert podman("pod", "create", "--name", "pod1", "--infra-image", INFRA,
                  "--infra-name", "pod1-infra").returncode == 0
    try:
        assert podman("pod", "start", "pod1").returncode == 0
        links = "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/ipc"
        member = _run(podman, "--pod", "pod1", IMAGE, "sh", "-c", links)
        if podman.denied:
            assert member.returncode != 0
            assert "the host's own network namespace" in member.stderr, member.stderr
            return
        assert member.returncode == 0, member.stderr
        infra = podman("exec", "pod1-infra", "sh", "-c", links)
        assert member.stdout.split() == infra.stdout.split(), (member.stdout, infra.stdout)
        assert member.stdout.split()[0] == "pod1"
    finally:
        podman("pod", "rm", "--force", "pod1")


def test_the_hosts_network_is_freebsds_ip_inherit(podman):
    """--network host: no network namespace, every host address the jail's (FreeBSD's
    ip4=inherit, ip6=inherit), the tracer holding the rest of R3: a server of the test's
    own on the host's loopback is reached."""
    import socket
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(30)
        port = server.getsockname()[1]
        prefix = podman.prefix
        client = subprocess.Popen(
            [*prefix, *podman.argv("run", "--rm", "--network", "host", IMAGE, "sh", "-c",
                                   f"echo hello | nc 127.0.0.1 {port}")],
            env=podman.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            connection, _ = server.accept()
            with connection:  # closed: nc ends
                assert connection.recv(16) == b"hello\n"
            _, errors = client.communicate(timeout=60)
            assert client.returncode == 0, errors
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
