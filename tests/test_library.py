"""The library as a program uses it: hyjail.run and hyjail.exec_in with subprocess.run's
stdin, stdout, stderr, input, text and check, a Completed result, on every backend; the
package's version and its typing marker."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess

import pytest

import hyjail
from hyjail import JailSpec

from conftest import backends, needs_jails, new_leaks
from conftest import hyjail as hyjail_command

pytestmark = needs_jails


@pytest.mark.parametrize("backend", backends("ns", "trace"))
def test_run_is_subprocess_run_in_a_jail(busybox_root, backend):
    spec = JailSpec.create(busybox_root, "lib", "127.0.0.1",
                           ["/bin/sh", "-c", "cat; uname -n; echo oops >&2; exit 3"],
                           backend=backend)
    done = hyjail.run(spec, input="fed\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)
    assert (done.returncode, done.stdout, done.stderr) == (3, "fed\nlib\n", "oops\n")
    assert done.args == ["/bin/sh", "-c", "cat; uname -n; echo oops >&2; exit 3"]
    with pytest.raises(subprocess.CalledProcessError) as failed:
        hyjail.run(spec, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, check=True)
    assert failed.value.returncode == 3 and failed.value.output == b"lib\noops\n"
    big = JailSpec.create(busybox_root, "lib", "127.0.0.1",
                          ["/bin/sh", "-c", "head -c 300000 /dev/zero"], backend=backend)
    assert len(hyjail.run(big, stdout=subprocess.PIPE).stdout) == 300000  # past a pipe's fill
    assert not new_leaks()


def test_files_and_descriptors_are_taken_as_given(busybox_root, tmp_path):
    spec = JailSpec.create(busybox_root, "lib", "127.0.0.1", ["/bin/sh", "-c", "echo to-file"])
    with open(tmp_path / "out", "w") as out:
        done = hyjail.run(spec, stdout=out)
    assert done.stdout is None and (tmp_path / "out").read_text() == "to-file\n"
    read_end, write_end = os.pipe()
    try:
        hyjail.run(spec, stdout=write_end)
        os.close(write_end)
        write_end = -1
        assert os.read(read_end, 100) == b"to-file\n"
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    missing = JailSpec.create(busybox_root, "lib", "127.0.0.1", ["/nonexistent"])
    with pytest.raises(hyjail.HyjailError) as refused:
        hyjail.run(missing, stdout=subprocess.PIPE)
    assert refused.value.exit_code == 127
    assert not new_leaks()


def test_exec_in_a_running_jail(busybox_root):
    assert hyjail_command("run", "--persist", "--name", "libj", busybox_root, "libj",
                          "127.0.0.1").returncode == 0
    try:
        done = hyjail.exec_in("libj", ["/bin/sh", "-c", "read x; echo got $x; id -u"],
                              input=b"it\n", stdout=subprocess.PIPE, user="nobody")
        assert (done.returncode, done.stdout) == (0, b"got it\n65534\n")
    finally:
        hyjail.stop("libj")
    assert not new_leaks()


def test_the_package_says_its_version_and_is_typed():
    version = importlib.metadata.version("hyjail")
    assert hyjail.__version__ == version
    shown = hyjail_command("--version")
    assert (shown.returncode, shown.stdout) == (0, f"hyjail {version}\n")
    assert os.path.isfile(os.path.join(os.path.dirname(hyjail.__file__), "py.typed"))
