"""hyjail-oci driven as an engine drives runc (issue 18): bundles of the test's own, the
lifecycle create -> start -> state -> kill -> delete, exec, pause, the terminal through a
console socket, and what config.json asks of the jail (mounts, masked paths, sysctls, a
seccomp profile, capabilities, a network namespace joined by path), each refusal in one
line with nothing left behind. Podman and containerd themselves: tests/test_podman.py."""

from __future__ import annotations

import array
import fcntl
import json
import os
import pathlib
import signal
import socket
import struct
import subprocess
import sys
import termios
import time

import pytest

from hyjail import cgroups
from hyjail.oci import features

from conftest import DENY, missing, needs_jails, require_denied

pytestmark = needs_jails
OCI = os.path.join(os.path.dirname(sys.executable), "hyjail-oci")
CAP_KILL = 5
PROCESS_KEYS = ("terminal", "consoleSize", "user", "args", "env", "cwd", "capabilities",
                "rlimits", "noNewPrivileges", "oomScoreAdj", "apparmorProfile")
LINUX_KEYS = ("namespaces", "sysctl", "seccomp", "resources", "devices", "maskedPaths",
              "readonlyPaths", "uidMappings", "gidMappings", "cgroupsPath")


@pytest.fixture(scope="module")
def oci_root(tmp_path_factory) -> str:
    """A busybox root of this module's own: an OCI runtime makes missing mount points."""
    from hyjail.rootfs import busybox
    return busybox.build(str(tmp_path_factory.mktemp("oci") / "rootfs"))


class Runtime:
    """hyjail-oci with a --root of the test's own; every container deleted at the end."""

    def __init__(self, tmp_path, rootfs: str):
        self.state = str(tmp_path / "state")
        self.tmp = tmp_path
        self.rootfs = rootfs
        self.count = 0

    def __call__(self, *args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        return subprocess.run([OCI, "--root", self.state, *args], text=True, timeout=timeout,
                              **kwargs)

    def bundle(self, args: list[str], **change) -> str:
        """A bundle whose config is `hyjail-oci spec`'s, run without a terminal, with `args`
        and the changes given (a key of `process` or `linux` by its name, else top-level)."""
        self.count += 1
        where = self.tmp / f"bundle{self.count}"
        where.mkdir()
        config = features.default_config()
        config["process"].update(terminal=False, args=args)
        config["root"] = {"path": self.rootfs, "readonly": False}
        for key, value in change.items():
            section = ("process" if key in PROCESS_KEYS else "linux" if key in LINUX_KEYS
                       else None)
            (config[section] if section else config)[key] = value
        (where / "config.json").write_text(json.dumps(config))
        return str(where)

    def create(self, name: str, bundle: str, *extra: str,
               flags: tuple[str, ...] = ()) -> tuple[int, str]:
        """create with the container's stdio in a file (a pipe would stay open in the
        supervisor, which keeps the caller's stdio for the container, as runc's init does);
        (exit status, stderr). flags: global ones, before the command."""
        out = self.tmp / f"{name}.out"
        with open(out, "w") as stdout, open(self.tmp / f"{name}.err", "w") as stderr:
            done = subprocess.run([OCI, "--root", self.state, *flags, "create", "--bundle",
                                   bundle, *extra, name], stdout=stdout, stderr=stderr,
                                  timeout=60)
        return done.returncode, (self.tmp / f"{name}.err").read_text()

    def output(self, name: str) -> str:
        return (self.tmp / f"{name}.out").read_text()

    def state_of(self, name: str) -> dict:
        done = self("state", name)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def wait_for(self, name: str, status: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while (current := self.state_of(name))["status"] != status:
            assert time.monotonic() < deadline, current
            time.sleep(0.05)
        return current

    def containers(self) -> list[str]:
        return os.listdir(self.state) if os.path.isdir(self.state) else []

    def clean(self) -> None:
        if os.path.isdir(self.state):
            for name in os.listdir(self.state):
                self("delete", "--force", name)
            assert os.listdir(self.state) == []


@pytest.fixture
def oci(tmp_path, oci_root):
    runtime = Runtime(tmp_path, oci_root)
    yield runtime
    runtime.clean()


def _jail_names() -> list[str]:
    from hyjail.registry import Registry
    return [r.name for r in Registry().live()]


def test_run_passes_the_exit_status_and_output(oci):
    done = oci("run", "--bundle", oci.bundle(["/bin/sh", "-c", "echo hi $(hostname); exit 3"]),
               "r1")
    assert (done.returncode, done.stdout) == (3, "hi hyjail\n"), done.stderr
    assert oci("list", "-q").stdout == ""


def test_the_lifecycle_create_start_kill_delete(oci, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    bundle = oci.bundle(["/bin/sh", "-c", "touch /marks/started; echo up; exec sleep 60"],
                        mounts=[*features.default_config()["mounts"],
                                {"destination": "/marks", "type": "bind", "source": str(marks),
                                 "options": ["rbind", "rw"]}])
    pid_file = tmp_path / "pid"
    code, err = oci.create("c1", bundle, "--pid-file", str(pid_file))
    assert code == 0, err
    state = oci.state_of("c1")
    assert state["status"] == "created" and state["pid"] == int(pid_file.read_text())
    assert state["bundle"] == bundle and state["id"] == "c1"
    assert "c1" in _jail_names()
    _check_stand_in(state["pid"], "c1")
    time.sleep(0.3)
    assert not (marks / "started").exists()  # held before its process, until start
    assert oci("start", "c1").returncode == 0
    oci.wait_for("c1", "running")
    deadline = time.monotonic() + 10
    while not (marks / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    again = oci("start", "c1")
    assert again.returncode == 1 and "running" in again.stderr
    refused = oci("delete", "c1")
    assert refused.returncode == 1 and "not stopped" in refused.stderr
    os.kill(state["pid"], signal.SIGTERM)  # an engine's signal to the state's pid
    oci.wait_for("c1", "stopped")
    assert oci("delete", "c1").returncode == 0
    gone = oci("state", "c1")
    assert gone.returncode == 1 and gone.stderr == 'container "c1" does not exist\n'
    assert "c1" not in _jail_names() and oci.output("c1") == "up\n"


def _check_stand_in(pid: int, name: str) -> None:
    """The state's pid: a process of the host's in the jail's network, IPC and UTS
    namespaces (what an engine joins through /proc/PID/ns), holding no capability."""
    from hyjail.registry import Registry
    init = next(r.init_pid for r in Registry().live() if r.name == name)
    for kind in ("net", "ipc", "uts"):
        assert os.readlink(f"/proc/{pid}/ns/{kind}") == os.readlink(f"/proc/{init}/ns/{kind}")
        assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f)
    assert {status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd")} == {"0" * 16}
    assert status["NoNewPrivs"].strip() == "1"


@pytest.mark.parametrize("backend", ["ns", "trace"])
def test_the_state_pids_mount_namespace_is_the_jails(oci, backend):
    """Engines act on a running container's files through its pid's mount namespace (podman
    cp, top): the stand-in's is the jail's (a trace jail's: one of its own, rooted at the
    jail's root), never the host's."""
    bundle = oci.bundle(["/bin/sleep", "60"], annotations={"hyjail.backend": backend})
    code, err = oci.create("mnt", bundle)
    assert code == 0, err
    pid = oci.state_of("mnt")["pid"]
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    inside = subprocess.run(["nsenter", f"--mount=/proc/{pid}/ns/mnt", "/bin/cat",
                             "/etc/hyjail-root"], capture_output=True, timeout=60)
    assert inside.returncode == 0, inside.stderr  # the busybox root's marker


def test_a_created_container_deleted_by_force_leaves_nothing(oci):
    code, err = oci.create("c2", oci.bundle(["/bin/true"]))
    assert code == 0, err
    assert oci("delete", "--force", "c2").returncode == 0
    assert "c2" not in _jail_names() and oci.containers() == []


def test_kill_takes_signal_names_and_numbers_and_all(oci):
    code, err = oci.create("k1", oci.bundle(["/bin/sh", "-c", "sleep 60 & sleep 60"]))
    assert code == 0, err
    assert oci("start", "k1").returncode == 0
    assert oci("kill", "k1", "NOSUCH").returncode == 1
    time.sleep(0.3)
    ps = json.loads(oci("ps", "--format", "json", "k1").stdout)
    assert len(ps) >= 3  # pid 1, the shell, its two sleeps
    assert oci("kill", "--all", "k1", "9").returncode == 0
    oci.wait_for("k1", "stopped")
    assert oci("kill", "k1", "KILL").stderr == "container not running\n"


def test_exec_with_a_process_file_and_with_arguments(oci, tmp_path):
    code, err = oci.create("e1", oci.bundle(["/bin/sleep", "60"]))
    assert code == 0, err
    assert oci("start", "e1").returncode == 0
    process = {"args": ["/bin/sh", "-c", "id -u; id -g; id -G; pwd; echo $GREETING; exit 5"],
               "cwd": "/tmp", "env": ["GREETING=hello", "PATH=/bin"],
               "user": {"uid": 1000, "gid": 1001, "additionalGids": [1002]}}
    (tmp_path / "process.json").write_text(json.dumps(process))
    done = oci("exec", "--process", str(tmp_path / "process.json"), "e1")
    assert done.returncode == 5, done.stderr
    assert done.stdout.split("\n")[:5] == ["1000", "1001", "1001 1002", "/tmp", "hello"]
    done = oci("exec", "--env", "A=b", "--cwd", "/etc", "e1", "/bin/sh", "-c", "echo $A; pwd")
    assert (done.returncode, done.stdout) == (0, "b\n/etc\n"), done.stderr
    # detached: --pid-file names the waiter, which ends with the process's status
    pid_file = tmp_path / "exec.pid"
    with open(tmp_path / "exec.out", "w") as out:
        done = subprocess.run([OCI, "--root", oci.state, "exec", "--detach", "--pid-file",
                               str(pid_file), "e1", "/bin/sh", "-c", "echo detached"],
                              stdout=out, stderr=subprocess.PIPE, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    waiter = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{waiter}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "exec.out").read_text() == "detached\n"


def test_exec_capabilities_stay_within_the_containers(oci, tmp_path):
    caps = ["CAP_KILL", "CAP_CHOWN"]
    code, err = oci.create("e2", oci.bundle(
        ["/bin/sleep", "60"], capabilities={k: caps for k in ("bounding", "effective",
                                                               "permitted")}))
    assert code == 0, err
    assert oci("start", "e2").returncode == 0
    done = oci("exec", "--cap", "CAP_DAC_OVERRIDE", "--cap", "CAP_KILL", "e2", "/bin/sh", "-c",
               "grep CapBnd /proc/self/status")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[1], 16) == 1 << CAP_KILL


def test_pause_and_resume(oci, tmp_path):
    code, err = oci.create("p1", oci.bundle(["/bin/sh", "-c", "while :; do date +%s%N "
                                            "> /tmp/tick; done"]))
    assert code == 0, err
    assert oci("start", "p1").returncode == 0
    assert oci("pause", "p1").returncode == 0, oci("pause", "p1").stderr
    assert oci.state_of("p1")["status"] == "paused"
    first = oci("exec", "p1", "/bin/true")
    assert first.returncode == 1 and "paused" in first.stderr
    assert oci("resume", "p1").returncode == 0
    assert oci.state_of("p1")["status"] == "running"
    assert oci("resume", "p1").returncode == 1
    assert oci("pause", "p1").returncode == 0
    started = time.monotonic()
    assert oci("delete", "--force", "p1").returncode == 0  # thawed to die, not waited out
    assert time.monotonic() - started < 5 and "p1" not in _jail_names()


def test_a_terminal_goes_to_the_console_socket(oci, tmp_path):
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    bundle = oci.bundle(["/bin/sh", "-c", "tty; read line; echo got $line"],
                        terminal=True, consoleSize={"height": 30, "width": 100})
    code, err = oci.create("t1", bundle, "--console-socket", path)
    assert code == 0, err
    connection, _ = server.accept()
    fds = array.array("i")
    _, ancillary, _, _ = connection.recvmsg(64, socket.CMSG_LEN(fds.itemsize))
    fds.frombytes(ancillary[0][2][:fds.itemsize])
    master = fds[0]
    connection.close()
    server.close()
    assert oci("start", "t1").returncode == 0
    os.write(master, b"ping\n")
    seen = b""
    deadline = time.monotonic() + 10
    while b"got ping" not in seen and time.monotonic() < deadline:
        try:
            seen += os.read(master, 1024)
        except OSError:
            break
    size = struct.unpack("HHHH", fcntl.ioctl(master, termios.TIOCGWINSZ, bytes(8)))[:2]
    os.close(master)
    assert b"/dev/pts/0" in seen and b"got ping" in seen and size == (30, 100), (seen, size)
    assert oci.create("t2", bundle)[1].strip() == (
        "process.terminal: needs --console-socket (the terminal's master goes to the caller "
        "there)")


def test_mounts_masks_read_only_paths_and_tmpfs(oci, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("from the host\n")
    mounts = [*features.default_config()["mounts"],
              {"destination": "/new/place/data", "type": "bind", "source": str(data),
               "options": ["rbind", "ro"]},
              {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
               "options": ["size=1m", "mode=700"]}]
    script = ("cat /new/place/data/f; touch /new/place/data/g 2>/dev/null || echo ro; "
              "stat -c %a /scratch; wc -c < /etc/group; ls /home | wc -l; "
              "touch /root/x 2>/dev/null || echo root-ro; "
              "touch /proc/sys/x 2>/dev/null || echo sys-ro; mount | grep -c mqueue")
    done = oci("run", "--bundle", oci.bundle(
        ["/bin/sh", "-c", script], mounts=mounts, maskedPaths=["/etc/group", "/home"],
        readonlyPaths=["/root", "/proc/sys"]), "m1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["from", "the", "host", "ro", "700", "0", "0", "root-ro",
                                   "sys-ro", "1"], done.stdout
    assert not os.path.exists(os.path.join(oci.rootfs, "new", "place", "data", "g"))


def test_namespaced_sysctls_and_a_seccomp_profile(oci):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                             "errnoRet": 13}]}
    done = oci("run", "--bundle", oci.bundle(
        ["/bin/sh", "-c", "cat /proc/sys/net/ipv4/ping_group_range; mkdir /tmp/d"],
        sysctl={"net.ipv4.ping_group_range": "0 0"}, seccomp=profile), "s1")
    assert done.stdout.split() == ["0", "0"]
    assert "Permission denied" in done.stderr and done.returncode == 1


def test_a_network_namespace_joined_by_path(oci):
    name = f"hyjail-oci-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for command in (["link", "add", "oci0", "type", "veth", "peer", "name", "oci1"],
                        ["addr", "add", "10.77.201.2/24", "dev", "oci0"],
                        ["link", "set", "oci0", "up"], ["link", "set", "oci1", "up"]):
            subprocess.run(["ip", "-n", name, *command], check=True)
        script = ("ip -4 -o addr show oci0 | grep -o '10[.0-9/]*'; "
                  "httpd -f -p 10.77.201.2:80 & sleep 0.3; kill $! && echo bound")
        bundle = oci.bundle(["/bin/sh", "-c", script], namespaces=[
            {"type": kind} for kind in ("pid", "ipc", "uts", "mount")] + [
            {"type": "network", "path": f"/var/run/netns/{name}"}])
        done = oci("run", "--bundle", bundle, "n1")
        assert done.stdout.split() == ["10.77.201.2/24", "bound"], done.stderr
        host = oci("run", "--bundle", oci.bundle(["/bin/true"], namespaces=[
            {"type": kind} for kind in ("pid", "ipc", "uts", "mount")] + [
            {"type": "network", "path": "/proc/self/ns/net"}]), "n2")
        assert host.returncode == 1
        assert host.stderr.endswith("the host's own network namespace\n"), host.stderr
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


@pytest.mark.parametrize("change,says", [
    ({"capabilities": {"bounding": ["CAP_SYS_ADMIN"]}},
     "config.json: process.capabilities.bounding: CAP_SYS_ADMIN: a jail's root never holds it"),
    ({"namespaces": [{"type": "network"}, {"type": "mount"}, {"type": "uts"},
                     {"type": "ipc"}]},
     "config.json: linux.namespaces: no pid namespace would leave the container the host's "
     "processes"),
    ({"sysctl": {"kernel.panic": "1"}},
     "config.json: linux.sysctl.kernel.panic: kernel.panic: acts on the whole host"),
    ({"mounts": [{"destination": "/x", "type": "proc", "source": "proc"}]},
     "config.json: mounts[0]: type proc on /x"),
    ({"devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 5}]},
     "config.json: linux.devices[0]: /dev/null: the jail's own /dev/null is c 1:3"),
    ({"devices": [{"path": "/dev/hyjail-none", "type": "c", "major": 4095, "minor": 4095}]},
     "config.json: linux.devices[0]: /dev/hyjail-none: this host has no device c 4095:4095"),
    ({"devices": [{"path": "/dev/null", "type": "p"}]},
     "config.json: linux.devices[0]: /dev/null: a FIFO: not supported"),
    ({"hooks": {"createContainer": [{"path": "/bin/true"}]}},
     "config.json: hooks.createContainer: not supported (a host program in the container's "
     "namespaces"),
    ({"resources": {"devices": [{"allow": True, "type": "b", "major": 8, "access": "rwm"}]}},
     "config.json: linux.resources.devices[0]: allowing b 8:*"),
])
def test_what_no_jail_holds_is_refused_in_one_line(oci, change, says):
    code, err = oci.create("bad", oci.bundle(["/bin/true"], **change))
    assert code == 1 and err.startswith(says) and err.count("\n") == 1, err
    assert oci.containers() == [] and "bad" not in _jail_names()


def test_linux_devices_are_the_hosts_nodes_and_the_rules_may_allow_them(oci):
    rdev = os.stat("/dev/null").st_rdev  # any host has it; a jail's /dev too, so: also full
    full = os.stat("/dev/full").st_rdev
    wanted = [{"path": "/dev/null", "type": "c", "major": os.major(rdev), "minor": os.minor(rdev)},
              {"path": "/dev/hj/full", "type": "c", "major": os.major(full),
               "minor": os.minor(full), "fileMode": 0o666, "uid": 0, "gid": 0}]
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": os.major(full), "minor": os.minor(full),
              "access": "rwm"}]
    done = oci("run", "--bundle", oci.bundle(
        ["/bin/sh", "-c", "ls -l /dev/hj/full | awk '{print $1, $5, $6}'; "
                          "head -c 3 /dev/hj/full | wc -c"],
        devices=wanted, resources={"devices": rules}), "dev")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["crw-rw-rw-", f"{os.major(full)},", str(os.minor(full)), "3"]


def test_cgroups_path_places_the_jails_groups_and_leaves_the_parent(oci):
    parent, leaf = "hj-oci-parent", "hj-oci-parent/ctr"
    try:
        bundle = oci.bundle(["/bin/sleep", "60"], cgroupsPath=f"/{leaf}",
                            resources={"memory": {"limit": 64 << 20}, "pids": {"limit": 20}})
        code, err = oci.create("cg", bundle)
        assert code == 0, err
        groups = cgroups.groups_at(leaf)
        assert groups, "no group at the cgroupsPath"
        held = [path for path in groups if pathlib.Path(path, "cgroup.procs").read_text()]
        assert held == groups  # the jail's first process is in each
        limits = {name: pathlib.Path(path, name).read_text().strip() for path in groups
                  for name in ("memory.max", "memory.limit_in_bytes", "pids.max")
                  if os.path.exists(os.path.join(path, name))}
        assert str(64 << 20) in limits.values() and limits.get("pids.max") == "20", limits
        assert not cgroups.groups_at(f"hyjail/{leaf}")
        assert oci("delete", "--force", "cg").returncode == 0
        # The leaf is gone, the parent (the caller's) stays.
        assert cgroups.groups_at(leaf) == [] and cgroups.groups_at(parent)
    finally:
        cgroups.remove_empty_groups(parent)


@pytest.mark.parametrize("path", ["/", "/a/../b", "/hyjail/7"])
def test_a_cgroups_path_that_is_no_place_of_its_own_is_refused(oci, path):
    code, err = oci.create("cgbad", oci.bundle(["/bin/true"], cgroupsPath=path))
    assert code == 1 and err.startswith(f"config.json: linux.cgroupsPath: {path}: "), err
    assert oci.containers() == []


def test_a_group_in_use_at_the_cgroups_path_is_refused(oci):
    first = oci.bundle(["/bin/sleep", "60"], cgroupsPath="/hj-oci-busy")
    try:
        assert oci.create("one", first)[0] == 0
        code, err = oci.create("two", oci.bundle(["/bin/true"], cgroupsPath="/hj-oci-busy"))
        assert code == 1 and "holds processes or groups already" in err, err
        # A parent of groups (as /system.slice is): its end would kill all beneath it.
        code, err = oci.create("three", oci.bundle(["/bin/true"], cgroupsPath="/"))
        assert code == 1, err
        assert oci("state", "one").returncode == 0  # untouched
        assert oci("delete", "--force", "one").returncode == 0
        for path in cgroups.groups_at(""):
            os.mkdir(os.path.join(path, "hj-oci-parent-of"))
            os.mkdir(os.path.join(path, "hj-oci-parent-of", "child"))
        code, err = oci.create("four", oci.bundle(["/bin/true"],
                                                  cgroupsPath="/hj-oci-parent-of"))
        assert code == 1 and "holds processes or groups already" in err, err
        assert cgroups.groups_at("hj-oci-parent-of/child")
    finally:
        cgroups.remove_empty_groups("hj-oci-busy")
        cgroups.remove_empty_groups("hj-oci-parent-of")


@pytest.mark.parametrize("path,asked,made", [
    ("machine.slice:libpod:c1", False, ("machine.slice", "libpod-c1.scope")),
    (":cri-containerd:c1", True, ("system.slice", "cri-containerd-c1.scope")),
    ("-:x:c1", False, ("-.slice", "x-c1.scope")),
    ("user-1000.slice::c1", False, ("user-1000.slice", "c1.scope")),
    ("", True, ("system.slice", "hyjail-ID.scope")),
    ("", False, None),
    ("/a/b", False, None),
    ("/a/b", True, "the systemd driver (--systemd-cgroup) takes SLICE:PREFIX:NAME"),
    ("a.slice:p:x.slice", True, "a slice as the container's unit is not supported"),
    ("machine.slice:p:", False, "SLICE:PREFIX:NAME without a NAME"),
    ("machine:p:x", False, "machine: not a systemd slice's name"),
    ("machine.slice:p:x y", False, "p-x y.scope: not a systemd scope's name"),
])
def test_the_systemd_drivers_cgroups_path_names_a_scope_in_a_slice(path, asked, made):
    """runc's rules for SLICE:PREFIX:NAME (`hyjail.oci.scope`)."""
    from hyjail.errors import SetupError
    from hyjail.oci import scope
    if isinstance(made, str):
        with pytest.raises(SetupError) as refused:
            scope.parse(path, "ID", asked)
        said = str(refused.value)
        assert said.startswith(f"config.json: linux.cgroupsPath: {path}: ") and made in said
        return
    found = scope.parse(path, "ID", asked)
    assert (found and (found.slice, found.unit)) == made


SYSTEMD_INIT = os.path.isdir("/run/systemd/system")
UNIFIED_ONLY = all(h.version == 2 for h in cgroups.hierarchies())


def test_the_systemd_driver_is_refused_where_it_cannot_make_a_scope(oci):
    if SYSTEMD_INIT and UNIFIED_ONLY:
        pytest.skip("systemd makes scopes here: the next test makes one")
    why = ("needs the unified cgroup hierarchy only (this host has v1 hierarchies; podman: "
           "--cgroup-manager cgroupfs)" if SYSTEMD_INIT else
           "needs systemd as the host's init (podman: --cgroup-manager cgroupfs)")
    for flags in (("--systemd-cgroup",), ()):
        code, err = oci.create("sd1", oci.bundle(["/bin/true"],
                                                 cgroupsPath="machine.slice:libpod:sd1"),
                               flags=flags)
        assert (code, err) == (1, "config.json: linux.cgroupsPath: machine.slice: "
                                  f"libpod-sd1.scope: the systemd driver {why}\n")
    assert oci.containers() == [] and "sd1" not in _jail_names()


def _systemctl_show(unit: str, prop: str) -> str:
    return subprocess.run(["systemctl", "show", "-P", prop, unit], capture_output=True,
                          text=True, timeout=60).stdout.strip()


@pytest.mark.skipif(not (SYSTEMD_INIT and UNIFIED_ONLY),
                    reason="needs systemd as init and the unified cgroup hierarchy only")
@pytest.mark.parametrize("slice_,parent", [("system.slice", "/system.slice"), ("-", "")])
def test_the_systemd_driver_puts_the_container_in_a_scope_of_its_own(oci, slice_, parent):
    """podman's and containerd's `--systemd-cgroup`: a transient scope in the slice asked
    (`-`: the root slice), the container's groups delegated in it (the state's pid counted
    there, its limits written there), gone with the container."""
    name = f"sd{os.getpid()}"
    unit = f"hyjail-test-{name}.scope"
    bundle = oci.bundle(["/bin/sh", "-c", "echo up; exec sleep 60"],
                        cgroupsPath=f"{slice_}:hyjail-test:{name}",
                        resources={"memory": {"limit": 64 << 20}, "pids": {"limit": 20}})
    try:
        code, err = oci.create(name, bundle, flags=("--systemd-cgroup",))
        assert code == 0, err
        assert _systemctl_show(unit, "ActiveState") == "active"
        assert _systemctl_show(unit, "Delegate") == "yes"
        group = _systemctl_show(unit, "ControlGroup")
        assert group == f"{parent}/{unit}"
        with open(f"/proc/{oci.state_of(name)['pid']}/cgroup") as f:
            assert f.read() == f"0::{group}/container\n"
        limits = pathlib.Path("/sys/fs/cgroup", group.lstrip("/"), "container")
        assert (limits / "memory.max").read_text() == f"{64 << 20}\n"
        assert (limits / "pids.max").read_text() == "20\n"
        assert oci("start", name).returncode == 0
        deadline = time.monotonic() + 20
        while oci.output(name) != "up\n":
            assert time.monotonic() < deadline, oci.output(name)
            time.sleep(0.05)
    finally:
        done = oci("delete", "--force", name)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 20  # systemd stops an empty scope and removes its group
    while _systemctl_show(unit, "LoadState") != "not-found" or os.path.exists(
            f"/sys/fs/cgroup{parent}/{unit}"):
        assert time.monotonic() < deadline, _systemctl_show(unit, "ActiveState")
        time.sleep(0.1)


# What every create, start, list and delete does without: each was milliseconds of every
# `podman run`, which calls hyjail-oci three times or more.
OFF_THE_CREATE_PATH = ("json", "re", "shutil", "typing", "dataclasses", "click", "_hashlib")


def test_create_start_and_delete_import_none_of_the_costly_modules(oci):
    bundle = oci.bundle(["/bin/true"], seccomp={"defaultAction": "SCMP_ACT_ALLOW"})
    # The profile's first compile loads libseccomp (pyseccomp: typing, re, shutil); every
    # later create of it reads the compiled filter from the cache, as this one then does.
    assert oci.create("warm", bundle)[0] == 0 and oci("delete", "--force", "warm").returncode == 0
    script = ("import sys\nfrom hyjail.oci.cli import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
              f"found = [m for m in {OFF_THE_CREATE_PATH!r} if m in sys.modules]\n"
              "sys.stderr.write(' '.join(found) or 'NONE')\nsys.exit(code)")
    for args in (["create", "--bundle", bundle, "lean"], ["start", "lean"],
                 ["list", "--format", "json"], ["delete", "--force", "lean"]):
        # Files, not pipes: the container keeps create's stdio (`Runtime.create`).
        err = oci.tmp / f"lean-{args[0]}.err"
        with open(err, "w") as errors:
            done = subprocess.run([sys.executable, "-c", script, "--root", oci.state, *args],
                                  stdout=subprocess.DEVNULL, stderr=errors, timeout=60,
                                  stdin=subprocess.DEVNULL)
        said = err.read_text()
        assert done.returncode == 0 and said.endswith("NONE"), (args, said)


def test_a_busy_group_in_one_hierarchy_leaves_no_group_in_the_others(oci):
    """The group at a cgroupsPath is made in every hierarchy, the limits' first and the
    others' (devices, blkio, ...) last: one of those refused must take the first ones too."""
    extra = next((h for h in cgroups.hierarchies()
                  if h.version == 1 and h.controllers & {"devices", "blkio"}), None)
    if extra is None:
        pytest.skip("no v1 devices or blkio hierarchy here (the groups made last)")
    os.makedirs(os.path.join(extra.mount, "hj-oci-half", "child"))
    try:
        code, err = oci.create("half", oci.bundle(["/bin/true"], cgroupsPath="/hj-oci-half",
                                                  resources={"pids": {"limit": 20}}))
        assert code == 1 and "holds processes or groups already" in err, err
        assert cgroups.groups_at("hj-oci-half") == [os.path.join(extra.mount, "hj-oci-half")]
    finally:
        cgroups.remove_empty_groups("hj-oci-half")


def test_ids_bundles_and_usage(oci, tmp_path):
    bundle = oci.bundle(["/bin/sleep", "60"])
    assert oci.create("dup", bundle)[0] == 0
    code, err = oci.create("dup", bundle)
    assert (code, err) == (1, "container with id exists: dup\n")
    assert oci("delete", "-f", "dup").returncode == 0
    assert oci.create("../x", bundle)[0] == 1
    code, err = oci.create("nobundle", str(tmp_path / "none"))
    assert code == 1 and "config.json" in err and err.count("\n") == 1, err
    assert oci("frobnicate").returncode == 1
    assert oci("create", "--bogus", "x").stderr == "flag provided but not defined: -bogus\n"
    assert oci("--version").stdout.startswith("hyjail-oci version ")
    assert json.loads(oci("features").stdout)["linux"]["namespaces"]
    assert oci("list", "--format", "json").stdout == "[]\n"


def test_spec_writes_a_config_that_runs(oci, tmp_path):
    where = tmp_path / "fromspec"
    where.mkdir()
    assert oci("spec", "--bundle", str(where)).returncode == 0
    config = json.loads((where / "config.json").read_text())
    config["process"].update(terminal=False, args=["/bin/echo", "ok"])
    config["root"]["path"] = oci.rootfs
    (where / "config.json").write_text(json.dumps(config))
    done = oci("run", "--bundle", str(where), "sp")
    if missing("mount_setattr"):  # runc's default root is read-only: refused in one line
        assert (done.returncode, done.stderr) == (
            1, "--read-only: needs mount_setattr (Linux 5.12) to make every mount of the "
               "root read-only\n")
        return
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr
    assert oci("spec", "--bundle", str(where)).returncode == 1  # never overwritten


@pytest.mark.parametrize("change,says", [
    ({"sysctl": {"net.ipv4.ping_group_range": "0 0"}},
     "linux.sysctl: net.ipv4.ping_group_range: needs the jail's own net namespace"),
    ({"sysctl": {"kernel.shmmax": "4096"}},
     "linux.sysctl: kernel.shmmax: needs the jail's own ipc namespace"),
    ({"hooks": {"startContainer": [{"path": "/bin/true"}]}},
     "hooks.startContainer: needs the ns or hybrid backend"),
])
def test_a_trace_jail_refuses_what_would_act_on_the_hosts_namespaces(oci, change, says):
    """Under a parent that denies namespaces the container is a chroot on the host's
    network and IPC: a sysctl there would set the host's, so it is refused in one line."""
    require_denied(kind="trace")
    bundle = oci.bundle(["/bin/true"], **change)
    done = subprocess.run([sys.executable, DENY, OCI, "--root", oci.state, "run", "--bundle",
                           bundle, "t"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and says in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and oci.containers() == []


def _hook_script(tmp_path, log) -> str:
    """A host program that appends its first argument and the state it was given."""
    script = tmp_path / "hook"
    script.write_text(f"#!/bin/sh\nprintf '%s ' \"$1\" >> {log}\ncat >> {log}\n"
                      f"echo >> {log}\n[ \"$2\" = fail ] && echo \"no good\" >&2 && exit 3\n"
                      f"exit 0\n")
    script.chmod(0o755)
    return str(script)


def test_hooks_run_where_and_when_the_runtime_spec_says(oci, tmp_path):
    log = tmp_path / "hooks.log"
    script = _hook_script(tmp_path, log)
    mark = f"/tmp/started-{os.getpid()}"
    given = {kind: [{"path": script, "args": ["hook", kind]}]
             for kind in ("prestart", "createRuntime", "poststart", "poststop")}
    given["startContainer"] = [{"path": "/bin/sh", "args": [
        "sh", "-c", f"cat > {mark}; id -u >> {mark}"], "env": ["PATH=/bin"]}]
    bundle = oci.bundle(["/bin/sleep", "60"], hooks=given,
                        capabilities={"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                                      "permitted": ["CAP_KILL"]})
    code, err = oci.create("h1", bundle)
    assert code == 0, err
    seen = [line.split(" ", 1) for line in log.read_text().splitlines()]
    assert [kind for kind, _ in seen] == ["prestart", "createRuntime"]
    states = [json.loads(state) for _, state in seen]
    assert {s["status"] for s in states} == {"creating"} and states[0]["id"] == "h1"
    init = states[0]["pid"]
    assert init > 0 and os.readlink(f"/proc/{init}/ns/pid") != os.readlink("/proc/self/ns/pid")
    assert oci("start", "h1").returncode == 0
    inside = pathlib.Path(oci.rootfs, mark.lstrip("/"))
    try:
        state, uid = inside.read_text().rsplit("}", 1)
        assert json.loads(state + "}")["status"] == "created" and uid.split() == ["0"]
    finally:
        os.unlink(inside)
    assert [line.split()[0] for line in log.read_text().splitlines()][2:] == ["poststart"]
    assert oci("delete", "--force", "h1").returncode == 0
    last = log.read_text().splitlines()[-1].split(" ", 1)
    assert last[0] == "poststop" and json.loads(last[1])["status"] == "stopped"


def test_a_failing_or_late_hook_fails_its_operation_and_leaves_nothing(oci, tmp_path):
    log = tmp_path / "hooks.log"
    script = _hook_script(tmp_path, log)
    failing = {"createRuntime": [{"path": script, "args": ["hook", "createRuntime", "fail"]}],
               "poststop": [{"path": script, "args": ["hook", "poststop"]}]}
    code, err = oci.create("h2", oci.bundle(["/bin/true"], hooks=failing))
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"hooks.createRuntime[0]: {script}: exited 3: no good"), err
    assert [line.split()[0] for line in log.read_text().splitlines()] == [
        "createRuntime", "poststop"]
    assert oci.containers() == [] and "h2" not in _jail_names()
    late = {"prestart": [{"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}]}
    code, err = oci.create("h3", oci.bundle(["/bin/true"], hooks=late))
    assert code == 1 and "hooks.prestart[0]: /bin/sleep: timed out after 1 s" in err, err
    in_jail = {"startContainer": [{"path": "/bin/false"}]}
    code, err = oci.create("h4", oci.bundle(["/bin/sleep", "60"], hooks=in_jail))
    assert code == 0, err
    started = oci("start", "h4")
    assert started.returncode == 1, started.stderr
    assert "hooks.startContainer[0]: /bin/false: exited 1" in started.stderr, started.stderr
    oci.wait_for("h4", "stopped")
    assert oci("delete", "h4").returncode == 0
    assert oci.containers() == [] and "h4" not in _jail_names()


def test_a_pods_ipc_and_uts_namespaces_are_joined_by_path(oci):
    """A pod: its infra container's IPC namespace joined by another container, as podman and
    the CRI plugin ask, and its UTS namespace's hostname given to the jail's own (which
    anchors the jail's user namespace); never the host's."""
    code, err = oci.create("infra", oci.bundle(["/bin/sleep", "60"], hostname="pod-host"))
    assert code == 0, err
    assert oci("start", "infra").returncode == 0
    from hyjail.registry import Registry
    init = next(r.init_pid for r in Registry().live() if r.name == "infra")
    pod = [{"type": "pid"}, {"type": "mount"}, {"type": "network"},
           {"type": "ipc", "path": f"/proc/{init}/ns/ipc"},
           {"type": "uts", "path": f"/proc/{init}/ns/uts"}]
    links = "readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts"
    joined = oci("run", "--bundle", oci.bundle(["/bin/sh", "-c", f"hostname; {links}"],
                                               namespaces=pod, hostname="member"), "member")
    assert joined.returncode == 0, joined.stderr
    own = oci("exec", "infra", "/bin/sh", "-c", links)
    name, ipc, uts = joined.stdout.split()
    assert (name, ipc) == ("pod-host", own.stdout.split()[0]), (joined, own)
    assert uts != own.stdout.split()[1] and uts != os.readlink("/proc/self/ns/uts")
    for path, says in ((f"/proc/{os.getpid()}/ns/ipc", "the host's own ipc namespace"),
                       (f"/proc/{init}/ns/net", "not an ipc namespace")):
        refused = oci("run", "--bundle", oci.bundle(["/bin/true"], namespaces=[
            *pod[:3], {"type": "ipc", "path": path}, {"type": "uts"}]), "bad")
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr == f"config.json: linux.namespaces: ipc: {path}: {says}\n"
    assert "bad" not in _jail_names()
    assert oci("delete", "--force", "infra").returncode == 0


def test_an_unconfined_apparmor_profile_is_no_profile(oci):
    from hyjail import apparmor
    done = oci("run", "--bundle", oci.bundle(["/bin/true"], apparmorProfile="unconfined"), "aa")
    assert done.returncode == 0, done.stderr
    named = oci("run", "--bundle", oci.bundle(["/bin/true"], apparmorProfile="some-profile"),
                "ab")
    why = ("no such profile is loaded (apparmor_parser -r FILE loads one)"
           if apparmor.enabled() else "this host has no AppArmor")
    assert (named.returncode, named.stderr) == (
        1, f"config.json: process.apparmorProfile: some-profile: {why}\n")
    assert oci.containers() == []


def test_an_apparmor_profile_confines_the_container_and_what_is_executed_in_it(
        oci, apparmor_profile):
    """runc's process.apparmorProfile: the container's process under the profile from its
    exec on (the profile's denial holds), as is an exec's (or the profile it names)."""
    shown = ("cat /proc/self/attr/current; touch /tmp/allowed && echo wrote; "
             "touch /tmp/denied 2>/dev/null || echo refused; ")
    bundle = oci.bundle(["/bin/sh", "-c", shown + "exec sleep 60"],
                        apparmorProfile=apparmor_profile)
    code, err = oci.create("aa", bundle)
    assert code == 0, err
    assert oci("start", "aa").returncode == 0
    deadline = time.monotonic() + 20
    while "refused" not in oci.output("aa"):
        assert time.monotonic() < deadline, oci.output("aa")
        time.sleep(0.05)
    assert oci.output("aa") == f"{apparmor_profile} (enforce)\nwrote\nrefused\n"
    entered = oci("exec", "aa", "/bin/sh", "-c", shown)
    assert entered.stdout == f"{apparmor_profile} (enforce)\nwrote\nrefused\n", entered.stderr
    free = oci("exec", "--apparmor", "unconfined", "aa", "/bin/sh", "-c", shown)
    assert free.stdout == "unconfined\nwrote\n", free.stderr
    missing = oci("exec", "--apparmor", "no-such-profile", "aa", "/bin/true")
    assert (missing.returncode, missing.stderr) == (
        1, "exec: process.apparmorProfile: no-such-profile: no such profile is loaded "
           "(apparmor_parser -r FILE loads one)\n")
    assert oci("delete", "--force", "aa").returncode == 0
    # The trace backend has no /proc of the jail's to ask through: refused, nothing left.
    code, err = oci.create("ab", oci.bundle(["/bin/true"], apparmorProfile=apparmor_profile,
                                            annotations={"hyjail.backend": "trace"}))
    assert (code, err) == (1, f"config.json: process.apparmorProfile: {apparmor_profile}: "
                              f"needs a mount namespace of the jail's (the profile is asked "
                              f"for through its own /proc; a chroot has none)\n")
    assert oci.containers() == []
