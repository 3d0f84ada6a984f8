"""Shared fixtures: starting real jails, fresh test addresses, and the leak check after each test.

Network safety (SPEC section 4): every address here is in 10.77.0.0/16 or fd77::/16 and is
given to a jail the test starts, or to the host end of that jail's own veth.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from hyjail.linux import descendants, process_start_time

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(HERE, "probe.py")
HYJAIL = [sys.executable, "-m", "hyjail"]
STATE_DIR = "/run/hyjail/jails"
HOST_IP = "10.77.0.1"  # host end of every test jail's veth (each veth is its own link)
HOST_IP6 = "fd77::1"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="jails need root")

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
    (SO_BINDTODEVICE): never through the host's default route, whatever the timing."""
    link = jail_record(ip, timeout)["host_link"]
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
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
    """argv that runs tests/probe.py inside a jail over the host tree (PATH '/')."""
    return [sys.executable, PROBE, hostname, *args]


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


def leaked_state() -> dict[str, list]:
    """SPEC section 3's names on this host: anything here after a test is a leak."""
    links = [n for n in os.listdir("/sys/class/net") if n.startswith("hj")]
    records = os.listdir(STATE_DIR) if os.path.isdir(STATE_DIR) else []
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f if "hyjail" in line.split()[1]]
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
    before = leaked_state() if os.geteuid() == 0 else {}
    yield
    if os.geteuid() != 0:
        return
    # A netns dies asynchronously after its last process; give the kernel a moment.
    deadline = time.monotonic() + 5
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
