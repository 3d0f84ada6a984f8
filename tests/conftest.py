"""Shared fixtures: starting real jails, fresh test addresses, the leak check after each test,
and what this host can do (the probe and the plans), which each test declares it needs.

Network safety (SPEC section 4): every address here is in 10.77.0.0/16 or fd77::/16 and is
given to a jail the test starts, or to the host end of that jail's own veth.

What a test needs of the host, it says with a marker, and is skipped, naming what is missing,
where the host lacks it (the probe runs once per session, as `hyjail.platform.current()`):

    @needs("ns.net")                  # a check of the probe (`hyjail features` lists them)
    @needs("backend:trace")           # `--backend trace` can run a jail here (else the plan's
                                      # one-line reason)
    @needs("R3:kernel")               # `--backend auto` gives the kernel's provider of R3
                                      # (here: a network namespace and veth)
    @needs("R3:ptrace@trace")         # `--backend trace` gives ptrace's R3
    @needs("ns.user", "backend:ns")   # all of them
    @pytest.mark.parametrize("backend", backends("ns", "trace"))  # skips only the backend
                                      # this host cannot run

Tests that make a host of their own with tests/deny_namespaces.py ask `denied(...)` what the
host becomes under it. A test that needs nothing of the host declares nothing and never
skips.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import ipaddress
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from hyjail import plan as plans
from hyjail import platform
from hyjail.check.jailrun import (
    HYJAIL,  # the installed command, as users run it
    slowness,
)
from hyjail.errors import SetupError
from hyjail.linux import descendants, process_start_time

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(HERE, "probe.py")
STATE_DIR = "/run/hyjail/jails"
HOST_IP = "10.77.0.1"  # host end of every test jail's veth (each veth is its own link)
HOST_IP6 = "fd77::1"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="jails need root")
needs = pytest.mark.needs
needs_jails = [needs_root, needs("backend:auto")]  # a module of tests that start jails
DENY = os.path.join(HERE, "deny_namespaces.py")
NAMESPACE_KINDS = tuple(platform.NAMESPACE_FLAGS)  # mnt, pid, uts, ipc, net, cgroup, user


# ---- what this host can do ---------------------------------------------------------------

@functools.cache
def host_probe() -> platform.Probe:
    """This session's probe of the host, as hyjail itself gets it (for this caller: under a
    parent filter that denies namespaces, the probe sees the denial)."""
    return platform.current()


@functools.cache
def _plan(backend: str, denied_kinds: tuple[str, ...] = ()) -> plans.Plan | str:
    try:
        return plans.choose(denied(*denied_kinds) if denied_kinds else host_probe(), backend)
    except SetupError as refused:
        return str(refused)


def host_plan(backend: str = "auto") -> plans.Plan:
    """The plan `--backend backend` gets here (a test that uses it declares backend:NAME)."""
    chosen = _plan(backend)
    if isinstance(chosen, str):
        pytest.skip(f"needs --backend {backend}: {chosen}")
    return chosen


def jail_ip() -> str:
    """A fresh address for a jail of `--backend auto` that needs nothing of its network: on
    a veth where the kernel holds R3, else on the host's loopback (ptrace's R3 binds there)."""
    return fresh_ip() if host_plan("auto").uses("R3", "kernel") else fresh_loopback_ip()


def veth_args(ip: str) -> list[str]:
    """`hyjail run` options for a jail at ip: its veth's host end on HOST_IP (SPEC section 4's
    addresses) where it gets a veth, none on a loopback address."""
    return [] if ipaddress.ip_address(ip).is_loopback else ["--host-ip", HOST_IP]


def jail_has_proc() -> bool:
    """Whether a jail of `--backend auto` has a /proc: its own mount and pid namespaces (a
    chroot has none, and a jail without a pid namespace gets none: it would show the host's
    processes)."""
    chosen = host_plan("auto")
    return chosen.uses("R1", "kernel") and chosen.uses("R4", "kernel")


def auto_kind() -> str:
    """What `--backend auto` makes here: "ns", "hybrid" or "trace" (`hyjail ls`'s backend)."""
    return host_plan("auto").kind


def missing(feature: str) -> str | None:
    """Why this host lacks feature (a probe check, backend:NAME, or RULE:kernel|ptrace[@NAME]:
    the provider `--backend NAME`, auto by default, picks for a rule), or None if it has it."""
    if feature.startswith("backend:"):
        backend = feature.split(":", 1)[1]
        chosen = _plan(backend)
        return f"needs --backend {backend}: {chosen}" if isinstance(chosen, str) else None
    if feature.split(":")[0] in plans.PROVIDERS:
        rule, kind = feature.split(":")
        kind, _, backend = kind.partition("@")
        backend = backend or "auto"
        chosen = _plan(backend)
        if isinstance(chosen, str):
            return f"needs --backend {backend}: {chosen}"
        if chosen.uses(rule, kind):
            return None
        why = "; ".join(f"{p.how}: {', '.join(p.missing(chosen.probe)) or 'not picked'}"
                        for p in plans.PROVIDERS[rule] if p.kind == kind)
        return (f"needs the {kind}'s {rule} under --backend {backend} ({why}; it makes a "
                f"{chosen.kind} jail here)")
    probe = host_probe()
    if feature not in probe:
        raise ValueError(f"needs({feature!r}): no such check of the probe ({', '.join(probe)})")
    if probe.has(feature):
        return None
    return f"needs {feature}: {probe[feature].detail}"


def require(*features: str) -> None:
    """Skip the running test unless this host has every feature (as the needs marker)."""
    for feature in features:
        if (why := missing(feature)) is not None:
            pytest.skip(why)


def backends(*names: str) -> list:
    """Parameters for a test over backends: each one skipped where its backend cannot run."""
    return [pytest.param(name, marks=needs(f"backend:{name}")) for name in names]


def abis(*names: str) -> list:
    """Parameters for a test over hjprobe's ABIs: the 32-bit ones need the i386 ABI."""
    return [pytest.param(name, marks=needs("abi.i386")) if name.startswith("int80") else name
            for name in names]


def denied(*kinds: str) -> platform.Probe:
    """The probe of this host under tests/deny_namespaces.py [--only KINDS] (no kinds: all of
    them): what this caller's probe has, less the namespaces the filter refuses and what
    needs them (an unprivileged user namespace; pivot_root, tried in a mount namespace)."""
    refused = set(kinds or NAMESPACE_KINDS)
    lost = {f"ns.{kind}" for kind in refused}
    if "user" in refused:
        lost.add("userns.unprivileged")
    if "mnt" in refused:
        lost.add("pivot_root")
    return platform.Probe({
        name: platform.Check(name, False, "denied by tests/deny_namespaces.py")
        if name in lost else check for name, check in host_probe().items()})


def require_denied(*kinds: str, kind: str, ptrace: set[str] | None = None) -> plans.Plan:
    """The auto plan of this host under tests/deny_namespaces.py [--only KINDS]; the running
    test is skipped, naming why, unless it is a jail of that kind (and, given ptrace, with
    exactly those rules left to ptrace: a host that lacks more would answer otherwise)."""
    shape = f"--only {','.join(kinds)}" if kinds else "(all namespaces)"
    chosen = _plan("auto", tuple(kinds or NAMESPACE_KINDS))
    if isinstance(chosen, str):
        pytest.skip(f"under deny_namespaces {shape}: {chosen}")
    keeps = [rule for rule in plans.PROVIDERS if ptrace is not None and rule not in ptrace]
    lacking = sorted({need for rule in keeps for provider in plans.PROVIDERS[rule]
                      if provider.kind == "kernel" for need in provider.missing(denied(*kinds))})
    if lacking:
        pytest.skip(f"needs {', '.join(lacking)} (deny_namespaces {shape} must take away "
                    f"only {', '.join(kinds)})")
    if chosen.kind != kind:
        pytest.skip(f"under deny_namespaces {shape} this host makes a {chosen.kind} jail, "
                    f"not a {kind} one")
    return chosen


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs(*features): skip unless this host has each feature: a check of "
        "the probe (ns.user, abi.i386, ...) or backend:NAME (a backend that can run here)")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs"):
        require(*mark.args)

_next_octets = itertools.count(2)


def fresh_ip() -> str:
    """An address no other jail of this run holds: 10.77.1.2 upwards."""
    n = next(_next_octets)
    return f"10.77.{1 + n // 250}.{2 + n % 250}"


def fresh_loopback_ip() -> str:
    """A host-local address for a jail without a network namespace (the trace backend's R3):
    127.77.1.2 upwards, on the host's own loopback."""
    n = next(_next_octets)
    return f"127.77.{1 + n // 250}.{2 + n % 250}"


def python_prints(code: str) -> str:
    """What a fresh interpreter of the venv prints running code (what a start imports, how
    it leaves the collector, ...)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def hyjail(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*HYJAIL, *args], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


@contextlib.contextmanager
def running(*args: str, **kwargs):
    """A `hyjail ...` in the background; stopped with SIGTERM (as a user would) at the end."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    process = subprocess.Popen([*HYJAIL, *args], text=True, **kwargs)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()


def jail_record(ip: str, timeout: float = 20) -> dict:
    """The registry record of the running jail holding ip, once its veth is configured (the
    supervisor writes init_pid after the veth is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir(STATE_DIR) if os.path.isdir(STATE_DIR) else []:
            try:
                with open(os.path.join(STATE_DIR, entry)) as f:
                    record = json.load(f)
            except (OSError, ValueError):
                continue
            if ip in record["addresses"] and record["init_pid"]:
                return record
        time.sleep(0.02)
    raise TimeoutError(f"no running jail holds {ip}")


def connect_to_jail(ip: str, port: int, timeout: float = 20) -> socket.socket:
    """A TCP connection to a jail's address that can only travel over that jail's own veth
    (SO_BINDTODEVICE): never through the host's default route, whatever the timing. A jail
    without a veth (ptrace's R3) holds a host loopback address, reached on the loopback."""
    link = jail_record(ip, timeout)["host_link"]
    if not link:
        assert ipaddress.ip_address(ip).is_loopback, f"{ip}: a jail without a veth"
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        if link:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, link.encode())
        sock.settimeout(5)
        try:
            sock.connect((ip, port))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def guard(hostname: str, marker: bool = True) -> str:
    """A shell prefix that refuses to go on outside the jail: wrong hostname, or (in a busybox
    root) no root marker. A jail that failed to start never runs the rest on the host."""
    check = f'[ "$(hostname)" = "{hostname}" ]'
    if marker:
        check += " && [ -f /etc/hyjail-root ]"
    return f'{check} || {{ echo "refusing: not inside jail {hostname}" >&2; exit 99; }}; '


def probe(hostname: str, *args: str) -> list[str]:
    """argv that runs tests/probe.py inside a jail over the host tree (PATH '/'); a test
    that uses it declares @needs_probe_py."""
    return [sys.executable, PROBE, hostname, *args]


# tests/probe.py acts only where pid 1 is the jail's init, in a jail over the host's tree:
# it needs the kernel's R1 (a mount namespace hides the host's /proc) and R4 (a pid namespace
# of the jail's own, its /proc showing that init).
needs_probe_py = needs("R1:kernel", "R4:kernel")


def alive(processes: list[tuple[int, int]]) -> list[int]:
    return [pid for pid, start in processes if process_start_time(pid) == start]


def sigkill_leaves_no_jailed_process(supervisor: subprocess.Popen) -> None:
    """SIGKILL a running jail's supervisor (its command said "up" and runs at least two more
    processes): every jailed process dies with it, and gc reclaims the rest."""
    jailed = descendants(supervisor.pid)
    assert len(jailed) >= 3
    supervisor.send_signal(signal.SIGKILL)
    supervisor.wait()
    deadline = time.monotonic() + 10
    while alive(jailed) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(jailed) == []
    assert subprocess.run([*HYJAIL, "gc"], capture_output=True, timeout=30).returncode == 0


def _nested_pid_processes() -> list[int]:
    """Processes living in a pid namespace below ours: jailed processes."""
    mine = os.readlink("/proc/self/ns/pid")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                nspid = next(line for line in f if line.startswith("NSpid:"))
            if len(nspid.split()) > 2 and os.readlink(f"/proc/{entry}/ns/pid") != mine:
                found.append(int(entry))
        except (OSError, StopIteration):
            continue
    return found


# Where a jail's mounts could leak to on this host: hyjail's own places (SPEC section 3) and
# the trees this run's jails are made on (pytest's temporary directories, the rootless tests'
# /tmp/hyjail-*), never another program's mounts that merely have "hyjail" in their path.
_MOUNT_PLACES: tuple[str, ...] = ("/run/hyjail", "/var/cache/hyjail", "/tmp/hyjail-")


@pytest.fixture(scope="session", autouse=True)
def _jail_trees(tmp_path_factory):
    global _MOUNT_PLACES
    _MOUNT_PLACES = (*_MOUNT_PLACES, str(tmp_path_factory.getbasetemp()))


def leaked_state() -> dict[str, list]:
    """SPEC section 3's names on this host: anything here after a test is a leak."""
    links = [n for n in os.listdir("/sys/class/net") if n.startswith("hj")]
    records = os.listdir(STATE_DIR) if os.path.isdir(STATE_DIR) else []
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f if line.split()[1].startswith(_MOUNT_PLACES)]
    cgroups = glob.glob("/sys/fs/cgroup/hyjail") + glob.glob("/sys/fs/cgroup/*/hyjail")
    # Any other file under /run/hyjail is state nothing owns (the stop hook's rule too).
    from hyjail.net import rendezvous
    helpers = rendezvous.listening()  # a live network helper's socket is no jail's state
    files = [os.path.join(where, name) for where, _, names in os.walk("/run/hyjail")
             for name in names
             if where != STATE_DIR and os.path.join(where, name) not in helpers]
    leaks = {"interfaces": links, "records": records, "mounts": mounts, "cgroups": cgroups,
             "state files": files,
             "jailed processes": _nested_pid_processes()}
    return {k: v for k, v in leaks.items() if v}


def _new_state(before: dict[str, list]) -> dict[str, list]:
    """What leaked_state() shows now that it did not before the test: a jail a person (or
    another test run) keeps on this host beside the tests is theirs, not this test's leak."""
    now = leaked_state()
    new = {k: [v for v in values if v not in before.get(k, [])] for k, values in now.items()}
    return {k: v for k, v in new.items() if v}


_before_test: dict[str, list] = {}


# How many times slower than this machine the host is (HYJAIL_CHECK_SLOW: a test box under
# software emulation): the kernel's own asynchronous work (a namespace's end, a link's) is
# waited for that much longer.
SLOW = slowness()


def new_leaks() -> dict[str, list]:
    """What the running test left so far of SPEC section 3's names (not what was there when
    it started: a jail kept beside the run is not its leak). A jail's host link is deleted
    by the network helper after its supervisor has let go of it (the kernel takes about
    30 ms), so links alone get two seconds to go (paced by SLOW)."""
    deadline = time.monotonic() + 2 * SLOW
    while set(leaks := _new_state(_before_test)) == {"interfaces"} and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    return leaks


def _clean_up_leaks(leaks: dict[str, list]) -> None:
    for pid in leaks.get("jailed processes", []):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    subprocess.run([*HYJAIL, "gc"], capture_output=True, timeout=30)  # stale records only
    for name in leaks.get("interfaces", []):
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    for group in glob.glob("/sys/fs/cgroup/hyjail/*") + glob.glob("/sys/fs/cgroup/*/hyjail/*"):
        with contextlib.suppress(OSError):
            os.rmdir(group)  # only an empty group goes: a live jail's stays
    for parent in glob.glob("/sys/fs/cgroup/hyjail") + glob.glob("/sys/fs/cgroup/*/hyjail"):
        with contextlib.suppress(OSError):
            os.rmdir(parent)


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Fail any jail test that leaves state behind, and remove what it left. (On CI's fresh
    machine nothing is there before; on a workstation, jails kept beside the run are not the
    test's.)"""
    global _before_test
    before = _before_test = leaked_state() if os.geteuid() == 0 else {}
    yield
    if os.geteuid() != 0:
        return
    # A netns dies asynchronously after its last process; give the kernel a moment.
    deadline = time.monotonic() + 5 * SLOW
    while (leaks := _new_state(before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if leaks:
        _clean_up_leaks(leaks)
        pytest.fail(f"test left jail state behind: {leaks}")


@pytest.fixture(scope="session")
def busybox_root(tmp_path_factory) -> str:
    from hyjail.rootfs import busybox
    return busybox.build(str(tmp_path_factory.mktemp("roots") / "busybox"))


@pytest.fixture(scope="session")
def i386_root(tmp_path_factory) -> str:
    """A root of Debian's 32-bit busybox (script/bootstrap unpacks it)."""
    from hyjail.rootfs import build
    return build("busybox-i386", str(tmp_path_factory.mktemp("roots") / "busybox-i386"))


@pytest.fixture(scope="session")
def probe_root(tmp_path_factory) -> str:
    """A busybox root with hjprobe (hyjail/check/probe.c, built static) in its /bin."""
    from hyjail.check import probes
    from hyjail.rootfs import busybox
    root = busybox.build(str(tmp_path_factory.mktemp("roots") / "probe"))
    probes.install(root, probes.build())
    return root


@pytest.fixture(scope="session", autouse=True)
def no_network_helper_left():
    """The network helper outlives its last jail by a while, to stay warm; the test run ends
    it, so that nothing of hyjail's runs on after the tests."""
    yield
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == "hyjail-netd":
                    os.kill(int(entry), signal.SIGTERM)


@pytest.fixture(scope="session", autouse=True)
def no_jail_logs_left():
    """Persistent jails log to /var/log/hyjail (kept after they end, for `hyjail logs`); the
    logs of the run's own jails go with the run."""
    from hyjail.logs import LOG_DIR
    before = set(os.listdir(LOG_DIR)) if os.path.isdir(LOG_DIR) else set()
    yield
    for name in set(os.listdir(LOG_DIR)) - before if os.path.isdir(LOG_DIR) else ():
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(LOG_DIR, name))


APPARMOR_PARSER = shutil.which("apparmor_parser")
# Everything but writing /tmp/denied*: what the test shows the profile holds.
TEST_PROFILE = """profile {name} flags=(attach_disconnected,mediate_deleted) {{
  file,
  capability,
  network,
  signal,
  unix,
  ptrace,
  deny /tmp/denied* w,
}}
"""


@pytest.fixture
def apparmor_profile(tmp_path):
    """A profile of the test's own, loaded, and unloaded after it."""
    from hyjail import apparmor
    if not (apparmor.enabled() and APPARMOR_PARSER):
        pytest.skip("needs AppArmor enforced and apparmor_parser (the apparmor package)")
    name = f"hyjail-test-{os.getpid()}"
    source = tmp_path / "profile"
    source.write_text(TEST_PROFILE.format(name=name))
    loaded = subprocess.run([APPARMOR_PARSER, "-r", str(source)], capture_output=True,
                            text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    try:
        yield name
    finally:
        subprocess.run([APPARMOR_PARSER, "-R", str(source)], capture_output=True, timeout=120)
