"""Host devices in a jail's /dev (`hyjail run --device`, OCI linux.devices): the node the
administrator named, at its path, and nothing else; bad requests refused in one line."""

from __future__ import annotations

import os
import stat

import pytest

from hyjail import devices
from hyjail.errors import SetupError

from conftest import hyjail, needs, needs_jails

pytestmark = needs_jails

# Character devices a host has that a jail's /dev does not hold by default.
CANDIDATES = ("/dev/fuse", "/dev/net/tun", "/dev/loop-control", "/dev/kmsg")


def host_device() -> str:
    for path in CANDIDATES:
        if os.path.exists(path) and stat.S_ISCHR(os.stat(path).st_mode):
            return path
    pytest.skip(f"this host has none of {', '.join(CANDIDATES)}")


def _number(path: str) -> str:
    rdev = os.stat(path).st_rdev
    return f"{os.major(rdev)}, {os.minor(rdev)}"


@needs("backend:ns")
def test_the_device_asked_for_is_there_with_its_number_and_opens(busybox_root):
    path = host_device()
    script = (f"ls -l {path} | awk '{{print $1, $5, $6}}'; exec 3<>{path} && echo opened; "
              f"ls /dev/sda /dev/kvm 2>/dev/null; echo listed")
    done = hyjail("run", "--net", "none", "--device", path, "--device", path, "--device",
                  "/dev/null", busybox_root, "dev", "127.0.0.1", "/bin/sh", "-c", script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1:] == ["opened", "listed"]
    mode, number = lines[0].split(" ", 1)
    assert mode.startswith("c") and number == _number(path)
    without = hyjail("run", "--net", "none", busybox_root, "dev", "127.0.0.1", "/bin/sh", "-c",
                     f"ls {path}")
    assert without.returncode != 0  # only where asked for


@needs("backend:ns")
@pytest.mark.parametrize(("path", "says"), [
    ("/etc/passwd", "a device is an absolute path under /dev"),
    ("/dev/../etc/passwd", "a device is an absolute path under /dev"),
    ("/dev/pts/ptmx", "/dev/pts is the jail's own"),
    ("/dev/shm", "/dev/shm is the jail's own"),
    ("/dev/hyjail-none", "no such file or directory"),
])
def test_what_is_no_device_of_the_hosts_is_refused_in_one_line(busybox_root, path, says):
    done = hyjail("run", "--net", "none", "--device", path, busybox_root, "dev", "127.0.0.1",
                  "/bin/true")
    assert done.returncode == 125
    assert done.stderr.startswith(f"hyjail: --device {path}: {says}"), done.stderr
    assert done.stderr.count("\n") == 1


@needs("backend:trace")
def test_a_chroot_cannot_hold_an_added_device_and_says_so(busybox_root):
    path = host_device()
    done = hyjail("run", "--backend", "trace", "--net", "none", "--device", path,
                  busybox_root, "dev", "127.0.0.1", "/bin/true")
    assert done.returncode == 125
    assert done.stderr == (f"hyjail: --device {path}: needs a mount namespace of the jail's "
                           f"for a /dev of its own; a chroot has the root's own /dev\n")


def test_a_bound_node_is_checked_against_the_one_asked_for():
    null = devices.check("/dev/null")
    assert (null.path, null.block, null.describe()) == ("dev/null", False, "c 1:3")
    assert devices.same_node(os.stat("/dev/null"), null)
    assert not devices.same_node(os.stat("/dev/zero"), null)
    assert not devices.same_node(os.stat("/etc/passwd"), null)
    with pytest.raises(SetupError, match="^--device /dev/: a device is"):
        devices.check("/dev/")
