"""The bench's ground: a busybox root with what the workloads need, OCI bundles for crun and
runc, a podman of the bench's own, and each runner's command line (None where this host lacks
the tool).

Owns how every peer is invoked so that they do the same work: /bin/true or a workload script
in the same root, with the same kinds of namespace where the tool makes them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

from hyjail import cgroups
from hyjail.check.jailrun import HYJAIL  # the installed command, as users run it

BENCH = os.path.dirname(os.path.abspath(__file__))
FLOOR = os.path.join(BENCH, "floor.py")  # the least a Python jail does (issue 19)
JAIL_IP = "10.77.210.2"  # the bench's jails, behind their own veth (SPEC section 4)
HOST_IP = "10.77.209.1"
TRACE_IP = "127.77.210.2"  # a jail without a network namespace: on the host's loopback
# The OCI runtimes podman runs in the podman scenario: shown name -> (podman's name, program).
PODMAN_RUNTIMES = {"hyjail-oci": ("hyjail", os.path.join(os.path.dirname(sys.executable),
                                                         "hyjail-oci")),
                   "crun": ("crun", "/usr/bin/crun"), "runc": ("runc", "/usr/sbin/runc")}
PODMAN_IMAGE = "localhost/hyjail-bench:busybox"
# Podman asks 1048576 open files and processes for a container by default: more than a host
# without CAP_SYS_RESOURCE for the bench lets crun and runc set.
PODMAN_LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def build_root(top: str) -> str:
    """A busybox root with the stopwatch, a tree to walk and stat, and the socket loop."""
    sys.path.insert(0, os.path.dirname(BENCH))
    from hyjail.rootfs import busybox
    root = busybox.build(os.path.join(top, "root"))
    for name in ("stopwatch", "netloop"):
        subprocess.run(["gcc", "-static", "-O2", "-o", os.path.join(root, "bin", name),
                        os.path.join(BENCH, f"{name}.c")], check=True)
    tree = os.path.join(root, "data")
    for d in range(200):
        sub = os.path.join(tree, f"d{d // 20}", f"e{d}")
        os.makedirs(sub)
        for f in range(25):
            with open(os.path.join(sub, f"f{f}"), "w") as out:
                out.write("x")
    return root


def oci_bundle(top: str, root: str, name: str, argv: list[str]) -> str:
    """An OCI bundle over `root` (shared, not copied) running argv, with no cgroup resources
    and the namespaces hyjail's ns backend makes (but no user namespace)."""
    bundle = os.path.join(top, f"oci-{name}")
    os.makedirs(bundle)
    tool = shutil.which("runc") or shutil.which("crun")
    subprocess.run([tool, "spec"], cwd=bundle, check=True)
    with open(os.path.join(bundle, "config.json")) as f:
        config = json.load(f)
    config["process"].update(args=argv, terminal=False)
    config["root"].update(path=root, readonly=False)
    config["linux"].pop("resources", None)
    config["linux"]["namespaces"] = [{"type": t} for t in
                                     ("pid", "network", "ipc", "uts", "mount", "cgroup")]
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)
    return bundle


def crun_line(words: list[str]) -> list[str]:
    """crun with words, as this host lets it run. crun refuses a hybrid cgroup layout whose
    unified hierarchy has controllers; there it runs with that hierarchy unmounted in a mount
    namespace of its own (an unshare and a shell: about 3 ms, measured as `unshare -m`)."""
    plain = ["crun", "--cgroup-manager=disabled", *words]
    if _crun_runs_plain():
        return plain
    return ["unshare", "-m", "sh", "-c", "umount /sys/fs/cgroup/unified 2>/dev/null; exec "
            + shlex.join(plain)]


@functools.cache
def _crun_runs_plain() -> bool:
    """No hybrid layout's unified hierarchy with controllers (which crun refuses) here."""
    try:
        with open("/sys/fs/cgroup/unified/cgroup.controllers") as f:
            return not f.read().strip()
    except OSError:
        return True


def crun_command(bundle: str, container: str) -> list[str] | None:
    """crun run of the bundle (`crun_line`), or None without crun."""
    if not shutil.which("crun"):
        return None
    return crun_line(["run", "-b", bundle, container])


def start_runners(top: str, root: str) -> dict[str, list[str] | None]:
    """Scenario 1: each way to start /bin/true in root and wait for it."""
    def found(tool: str, argv: list[str]) -> list[str] | None:
        return argv if shutil.which(tool) else None
    has_oci = shutil.which("runc") or shutil.which("crun")  # peers are optional, each
    bundle = oci_bundle(top, root, "true", ["/bin/true"]) if has_oci else ""
    crun = crun_command(bundle, "hjbench-crun") if has_oci else None
    return {
        "hyjail ns --net none": [*HYJAIL, "run", "--backend", "ns", "--net", "none", root, "b",
                                 "127.0.0.1", "/bin/true"],
        "hyjail ns veth": [*HYJAIL, "run", "--backend", "ns", "--host-ip", HOST_IP, root, "b",
                           JAIL_IP, "/bin/true"],
        "hyjail trace": [*HYJAIL, "run", "--backend", "trace", root, "b", TRACE_IP,
                         "/bin/true"],
        "chroot": ["chroot", root, "/bin/true"],
        "unshare": found("unshare", ["unshare", "--user", "--map-root-user", "--mount",
                                     "--uts", "--ipc", "--net", "--pid", "--cgroup", "--fork",
                                     "chroot", root, "/bin/true"]),
        "bwrap": found("bwrap", ["bwrap", "--unshare-all", "--bind", root, "/", "--proc",
                                 "/proc", "--dev", "/dev", "/bin/true"]),
        "crun run": crun,
        "runc run": found("runc", ["runc", "run", "-b", bundle, "hjbench-runc"]),
        "python3 -S -c pass": [sys.executable, "-S", "-c", "pass"],
        "python floor": [sys.executable, "-I", "-S", FLOOR, root, "/bin/true"],
    }


@contextlib.contextmanager
def enter_runners(top: str, root: str) -> Iterator[dict[str, list[str]]]:
    """Scenario: each way to run /bin/true in a jail or container already running in root
    (a persistent jail; detached containers running sleep), all stopped and removed after."""
    jexec = os.path.join(os.path.dirname(sys.executable), "jexec")
    jid = subprocess.run([*HYJAIL, "run", "--persist", "--backend", "ns", "--net", "none",
                          root, "benter", "127.0.0.1"], capture_output=True, text=True,
                         check=True).stdout.strip()
    runtimes = {"crun": lambda *words: crun_line(list(words)),
                "runc": lambda *words: ["runc", *words]}
    running = []
    try:
        runners = {"hyjail jexec": [jexec, jid, "/bin/true"],
                   "hyjail exec": [*HYJAIL, "exec", jid, "/bin/true"]}
        for tool, line in runtimes.items():
            if not shutil.which(tool):
                continue
            bundle = oci_bundle(top, root, f"{tool}-enter", ["/bin/sleep", "1000"])
            name = f"hjbench-{tool}-enter"
            # Detached: the container keeps our stdio, so none of it may be a pipe we read.
            if subprocess.run(line("run", "-d", "-b", bundle, name), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0:
                running.append((line, name))
                runners[f"{tool} exec"] = line("exec", name, "/bin/true")
        yield runners
    finally:
        for line, name in running:
            subprocess.run(line("delete", "-f", name), capture_output=True)
        subprocess.run([*HYJAIL, "stop", jid], capture_output=True)


def inside_runners(root: str) -> dict[str, list[str] | None]:
    """Scenario 2: each way to run `/bin/sh -c SCRIPT` in root (SCRIPT appended)."""
    def found(tool: str, argv: list[str]) -> list[str] | None:
        return argv if shutil.which(tool) else None
    return {
        "native": ["chroot", root],
        "hyjail ns": [*HYJAIL, "run", "--backend", "ns", "--net", "none", root, "b",
                      "127.0.0.1"],
        "hyjail trace": [*HYJAIL, "run", "--backend", "trace", root, "b", TRACE_IP],
        "strace -f": found("strace", ["strace", "-f", "-qq", "-o", "/dev/null", "chroot",
                                      root]),
        "strace -f --seccomp-bpf": found("strace", [
            "strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=kill,bind,connect,uname",
            "-o", "/dev/null", "chroot", root]),
        "proot": found("proot", ["proot", "-w", "/", "-r", root]),
        # Where the tracer runs relative to its tracees: all on one CPU (against native
        # there), where every stop is a switch on that CPU rather than a wake-up on another.
        "native, 1 CPU": found("taskset", ["taskset", "-c", "0", "chroot", root]),
        "hyjail trace, 1 CPU": found("taskset", ["taskset", "-c", "0", *HYJAIL, "run",
                                                 "--backend", "trace", root, "b", TRACE_IP]),
    }


@contextlib.contextmanager
def podman(root: str) -> Iterator[tuple[list[str], dict[str, str]]]:
    """A podman of the bench's own, with root imported as PODMAN_IMAGE: its command line and
    environment. Its storage, run state, configuration, events and locks are in a temporary
    directory, removed afterwards with its containers and mounts: nothing of the host's podman
    is read or left (as tests/test_podman.py does)."""
    # Under /tmp and short: podman refuses a --runroot longer than 50 characters.
    top = tempfile.mkdtemp(prefix="hj-bench-", dir="/tmp")
    # Its cgroupfs manager makes /libpod_parent (conmon's group and the containers'): made
    # for the bench, it goes with it.
    made_parent = not cgroups.groups_at("libpod_parent")
    base = ["podman", "--root", os.path.join(top, "storage"),
            "--runroot", os.path.join(top, "run")]
    env = {**os.environ, "CONTAINERS_CONF": _podman_conf(top)}
    try:
        _podman_import(base, env, root)
        yield base, env
    finally:
        _podman_remove(top, base, env)
        if made_parent:
            cgroups.remove_empty_groups("libpod_parent")


def podman_runners(base: list[str], limits: list[str]) -> dict[str, list[str]]:
    """Scenario podman: `podman run --rm IMAGE true` by each runtime, with the same limits."""
    return {name: [*base, "--runtime", runtime, "run", "--rm", *limits, PODMAN_IMAGE, "true"]
            for name, (runtime, _) in PODMAN_RUNTIMES.items()}


def _podman_conf(top: str) -> str:
    """containers.conf. netns "none": podman never makes its network in the host's namespace
    (netavark would add firewall rules and turn on forwarding on the real host). File locks:
    in the directory, not in the host's shared memory."""
    conf = os.path.join(top, "containers.conf")
    runtimes = "\n".join(f'{runtime} = ["{program}"]'
                         for runtime, program in PODMAN_RUNTIMES.values())
    with open(conf, "w") as f:
        f.write(f"""[containers]
netns = "none"
[engine]
cgroup_manager = "cgroupfs"
lock_type = "file"
events_logger = "file"
events_logfile_path = "{top}/events.log"
tmp_dir = "{top}/tmp"
[engine.runtimes]
{runtimes}
[network]
network_config_dir = "{top}/networks"
""")
    return conf


def _podman_import(base: list[str], env: dict[str, str], root: str) -> None:
    """root as PODMAN_IMAGE (no registry)."""
    tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
    done = subprocess.run([*base, "import", "-", PODMAN_IMAGE], stdin=tar.stdout, env=env,
                          capture_output=True, text=True, timeout=300)
    tar.stdout.close()  # tar sees a closed pipe should podman stop reading early
    tar.wait()
    if done.returncode:
        raise RuntimeError(f"podman import: {done.stderr.strip()}")


def _podman_remove(top: str, base: list[str], env: dict[str, str]) -> None:
    for args in (["rm", "--all", "--force", "--time", "0"], ["system", "reset", "--force"]):
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([*base, *args], env=env, capture_output=True, timeout=120)
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in reversed(points):
        if point == top or point.startswith(top + "/"):
            subprocess.run(["umount", "-l", point], check=False)
    shutil.rmtree(top, ignore_errors=True)
