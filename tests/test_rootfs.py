"""`hyjail rootfs build busybox`: a complete root from the installed busybox-static, offline,
and idempotent."""

from __future__ import annotations

import os

import pytest

from hyjail.errors import SetupError
from hyjail.rootfs import busybox

from conftest import hyjail


def _snapshot(root: str) -> dict[str, tuple]:
    state = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            state[os.path.relpath(path, root)] = (st.st_mode, st.st_ino, st.st_mtime_ns)
    return state


def test_build_makes_a_root_with_every_applet(tmp_path):
    root = busybox.build(str(tmp_path / "root"))
    assert os.readlink(os.path.join(root, "bin/sh")) == "/bin/busybox"
    assert os.path.isfile(os.path.join(root, "bin/busybox"))
    for directory in ("proc", "dev", "sys", "tmp", "etc"):
        assert os.path.isdir(os.path.join(root, directory))
    assert oct(os.stat(os.path.join(root, "tmp")).st_mode & 0o7777) == "0o1777"
    with open(os.path.join(root, busybox.MARKER)) as f:
        assert f.read() == "busybox\n"


def test_second_build_changes_nothing(tmp_path):
    root = busybox.build(str(tmp_path / "root"))
    before = _snapshot(root)
    busybox.build(root)
    assert _snapshot(root) == before


def test_build_repairs_a_damaged_root(tmp_path):
    root = busybox.build(str(tmp_path / "root"))
    os.unlink(os.path.join(root, "bin/ls"))
    os.unlink(os.path.join(root, "bin/cat"))  # links are absolute: never write through one
    with open(os.path.join(root, "bin/cat"), "x") as f:
        f.write("not busybox")
    busybox.build(root)
    assert os.readlink(os.path.join(root, "bin/ls")) == "/bin/busybox"
    assert os.readlink(os.path.join(root, "bin/cat")) == "/bin/busybox"


def test_dynamic_busybox_is_refused(tmp_path):
    with pytest.raises(SetupError, match="not statically linked"):
        busybox.build(str(tmp_path / "root"), busybox="/bin/ls")


def test_cli_build_prints_the_root(tmp_path):
    result = hyjail("rootfs", "build", "busybox", str(tmp_path / "cli"))
    assert (result.returncode, result.stdout) == (0, f"{tmp_path / 'cli'}\n")
    assert hyjail("rootfs", "build", "alpine", str(tmp_path / "x")).returncode == 2


def test_build_never_writes_through_symlinks_in_dest(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("precious\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").symlink_to(outside / "passwd")
    busybox.build(str(root))
    assert (outside / "passwd").read_text() == "precious\n"
    assert not (root / "etc/passwd").is_symlink()

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "etc").symlink_to(outside)
    with pytest.raises(SetupError, match="symlink"):
        busybox.build(str(evil))
    assert sorted(os.listdir(outside)) == ["passwd"]


def test_the_i386_root_is_32_bit_and_static(i386_root):
    from hyjail.rootfs.busybox import _is_static
    binary = os.path.join(i386_root, "bin", "busybox")
    with open(binary, "rb") as f:
        assert f.read(5) == b"\x7fELF\x01"
    assert _is_static(binary)
    with open(os.path.join(i386_root, "etc", "hyjail-root")) as f:
        assert f.read() == "busybox-i386\n"
    assert os.readlink(os.path.join(i386_root, "bin", "sh")) == "/bin/busybox"
