"""Socket families that no namespace confines (vsock first: it reaches the hypervisor and the
host) answer EAFNOSUPPORT inside a jail, on every ABI and backend, unless allow.socket_af
(issue 13, finding 9). Each attempt is a real system call made by tests/families.c
(hjfamilies), as root inside a real jail; the host itself opens vsock here, so an answer
other than the filter's is the kernel's, and the weakening "open-families" shows it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from conftest import HERE, abis, backends, hyjail, needs, needs_jails

pytestmark = needs_jails

AF_VSOCK, AF_BLUETOOTH, AF_CAN, AF_TIPC, AF_ALG, AF_XDP, AF_KCM = 40, 31, 29, 30, 38, 44, 41
UNCONFINED = (f"socket:{AF_VSOCK}:1", f"socket:{AF_BLUETOOTH}:3", f"socket:{AF_CAN}:3",
              f"socket:{AF_TIPC}:5", f"socket:{AF_ALG}:5", f"socket:{AF_XDP}:3",
              f"socket:{AF_KCM}:5", f"socketpair:{AF_VSOCK}:1", f"socketpair:{AF_TIPC}:5",
              "socket:63:1", "socket:4096:1")
CONFINED = ("socket:1:1", "socket:2:1", "socket:2:2", "socket:16:3", "socketpair:1:1")


@pytest.fixture(scope="session")
def families_root(tmp_path_factory) -> str:
    """A busybox root with hjfamilies in its /bin."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    from hyjail.rootfs import busybox
    root = busybox.build(str(tmp_path_factory.mktemp("roots") / "families"))
    subprocess.run(["gcc", "-static", "-no-pie", "-O1", "-o",
                    os.path.join(root, "bin", "hjfamilies"), os.path.join(HERE, "families.c")],
                   check=True)
    return root


def _x32() -> bool:
    from hyjail import platform
    return platform.current().has("abi.x32")


def _host_opens_vsock() -> bool:
    try:
        socket.socket(AF_VSOCK, socket.SOCK_STREAM).close()
    except OSError:
        return False
    return True


def families(root: str, backend: str, abi: str, ops, *options: str,
             weaken: str = "") -> dict[str, str]:
    env = {**os.environ, "HYJAIL_UNSAFE_WEAKEN": weaken}
    result = hyjail("run", "--backend", backend, *options, root, "fam", "127.0.0.1",
                    "/bin/hjfamilies", "fam", abi, *ops, env=env)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


@pytest.mark.parametrize("backend", backends("ns", "trace"))
@pytest.mark.parametrize("abi", abis("64", "int80", "x32"))
def test_unconfined_families_are_refused_on_every_abi(families_root, backend, abi):
    got = families(families_root, backend, abi, (*UNCONFINED, *CONFINED))
    # x32 where the kernel has none: the filter still answers first; the kernel, ENOSYS.
    usable = "ok" if abi != "x32" or _x32() else "ENOSYS"
    assert got == {**dict.fromkeys(UNCONFINED, "EAFNOSUPPORT"),
                   **dict.fromkeys(CONFINED, usable)}


@needs("backend:ns", "abi.i386")
def test_socketcall_makes_no_socket_without_allow_socket_af(families_root):
    """No filter can read socketcall's arguments (they sit in memory): its socket creation
    is refused whatever the family, and opened by allow.socket_af."""
    ops = (f"socket:{AF_VSOCK}:1", "socket:2:1", "socketpair:1:1")
    assert families(families_root, "ns", "int80s", ops) == dict.fromkeys(ops, "ENOSYS")
    opened = families(families_root, "ns", "int80s", ops[1:], "--allow", "socket_af")
    assert opened == dict.fromkeys(ops[1:], "ok")


@needs("backend:trace", "abi.i386")
def test_the_trace_supervisor_refuses_unconfined_families_through_socketcall(families_root):
    """The trace backend judges socketcall itself (hyjail/trace/sockets.py)."""
    got = families(families_root, "trace", "int80s",
                   (f"socket:{AF_VSOCK}:1", f"socket:{AF_TIPC}:5", "socket:2:1"))
    assert got == {f"socket:{AF_VSOCK}:1": "EAFNOSUPPORT", f"socket:{AF_TIPC}:5": "EAFNOSUPPORT",
                   "socket:2:1": "ok"}


@pytest.mark.skipif(not _host_opens_vsock(), reason="this host has no vsock")
@needs("backend:ns")
@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_allow_socket_af_opens_vsock(families_root, abi):
    ops = (f"socket:{AF_VSOCK}:1", "socket:2:1")
    assert families(families_root, "ns", abi, ops, "--allow", "socket_af") == \
        dict.fromkeys(ops, "ok")


@pytest.mark.skipif(not _host_opens_vsock(), reason="this host has no vsock")
@pytest.mark.parametrize("backend", backends("ns", "trace"))
def test_the_weakened_jail_opens_vsock(families_root, backend):
    """The test can fail: without the refusal, vsock opens (and XDP meets the kernel's own
    answer, the missing CAP_NET_RAW)."""
    got = families(families_root, backend, "64", (f"socket:{AF_VSOCK}:1", f"socket:{AF_XDP}:3"),
                   weaken="open-families")
    assert got == {f"socket:{AF_VSOCK}:1": "ok", f"socket:{AF_XDP}:3": "EPERM"}


@needs("backend:trace", "R3:ptrace@trace")  # a trace jail without a network namespace
def test_allow_socket_af_needs_a_network_namespace(families_root):
    result = hyjail("run", "--backend", "trace", "--allow", "socket_af", families_root, "fam",
                    "127.0.0.1", "/bin/true")
    assert result.returncode == 125 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "allow.socket_af" in result.stderr


def test_features_lists_allow_socket_af_off_by_default():
    result = hyjail("features")
    row = next(line for line in result.stdout.splitlines() if "allow.socket_af" in line)
    assert "off by default" in row and "vsock" in row
