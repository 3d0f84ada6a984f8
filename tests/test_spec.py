"""Input validation and the mount plan: pure functions, no kernel needed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyjail.errors import SetupError
from hyjail.net.addresses import host_side_for, parse_addresses, routed
from hyjail.ns import mounts
from hyjail.spec import JailSpec, check_hostname, check_name


@pytest.mark.parametrize("name", ["ahost", "web-1", "a.b.c", "x" * 63, "a" * 30 + "." + "b" * 33])
def test_valid_hostnames(name):
    assert check_hostname(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "a..b", "a_b", "sp ace", "x" * 64,
                                  ("a" * 32 + ".") * 2, "é"])
def test_invalid_hostnames(name):
    with pytest.raises(SetupError):
        check_hostname(name)


@given(st.text(max_size=80))
def test_hostname_check_never_crashes_and_bounds_length(text):
    try:
        check_hostname(text)
    except SetupError:
        return
    assert 0 < len(text.encode()) <= 64


@pytest.mark.parametrize("name", ["7", "a.b", "", "x" * 65, "sp ace"])
def test_invalid_names(name):
    with pytest.raises(SetupError):
        check_name(name)


@pytest.mark.parametrize("text", ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255",
                                  "169.254.1.1", "fe80::5", "240.0.0.1", "::ffff:10.0.0.1",
                                  "10.0.0.300", "host", "", "10.77.0.2,10.77.0.2"])
def test_unusable_addresses(text):
    with pytest.raises(SetupError) as err:
        parse_addresses(text)
    assert str(err.value)


def test_address_list_families_and_loopback():
    addrs = parse_addresses("127.0.0.1,10.77.0.2,fd77::2")
    assert [str(a) for a in routed(addrs)] == ["10.77.0.2", "fd77::2"]
    hosts = parse_addresses("10.77.0.1,fd77::1")
    assert host_side_for(parse_addresses("10.77.0.2"), hosts) == hosts[:1]


def test_loopback_only_jail_needs_no_veth(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "dev").mkdir()
    assert not JailSpec.create(str(tmp_path), "h", "127.0.0.1", ["true"]).needs_veth
    assert JailSpec.create(str(tmp_path), "h", "10.77.0.2", ["true"]).needs_veth
    assert not JailSpec.create(str(tmp_path), "h", "10.77.0.2", ["true"], net="none").needs_veth


def test_root_without_proc_or_dev_is_a_bare_jail_but_not_a_symlink_there(tmp_path):
    """FreeBSD's jail of a bare directory: no /proc, no /dev, nothing made there; anything
    but a directory where they would be mounted is refused."""
    JailSpec.create(str(tmp_path), "h", "127.0.0.1", ["true"])
    assert [op for op in mounts.plan(str(tmp_path))
            if getattr(op, "target", "").startswith(("proc", "dev"))] == []
    (tmp_path / "dev").mkdir()
    (tmp_path / "proc").symlink_to("/proc")
    with pytest.raises(SetupError, match="not a directory"):
        JailSpec.create(str(tmp_path), "h", "127.0.0.1", ["true"])


def test_mount_plan_for_a_root(tmp_path):
    for d in ("proc", "dev", "sys"):
        (tmp_path / d).mkdir()
    plan = mounts.plan(str(tmp_path))
    assert plan[0] == mounts.BindRoot(str(tmp_path), "/run/hyjail/.root")
    assert plan[-1] == mounts.PivotRoot()
    fstypes = {op.target: op.fstype for op in plan if isinstance(op, mounts.Mount)}
    assert fstypes == {"proc": "proc", "dev": "tmpfs", "dev/pts": "devpts", "dev/shm": "tmpfs",
                       "sys": "sysfs"}
    # Whatever the recursive bind brought in is detached before our own filesystems go on.
    targets = [getattr(op, "target", None) for op in plan]
    for target in ("proc", "dev", "sys"):
        assert targets.index(target) > 0
        assert isinstance(plan[targets.index(target)], mounts.Detach)
    sysfs = next(op for op in plan if isinstance(op, mounts.Mount) and op.fstype == "sysfs")
    assert sysfs.flags & mounts.MS_RDONLY
    assert {op.device for op in plan if isinstance(op, mounts.BindDevice)} == {
        "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}


def test_mount_plan_masks_the_registry_when_it_is_inside_the_root(tmp_path):
    for d in ("proc", "dev", "run/hyjail"):
        (tmp_path / d).mkdir(parents=True)
    plan = mounts.plan(str(tmp_path), state_dir=str(tmp_path / "run/hyjail"))
    (mask,) = [op for op in plan if isinstance(op, mounts.Mount) and op.target == "run/hyjail"]
    assert mask.flags & mounts.MS_RDONLY
    assert not [op for op in mounts.plan(str(tmp_path), state_dir="/elsewhere")
                if getattr(op, "target", None) == "run/hyjail"]
