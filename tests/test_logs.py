"""A persistent jail's output in its log (`hyjail logs [-f]`), capped and rotated once, read
and written by descriptor only; the kernel's OOM kills said where the jail's output goes."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import time

import pytest

from hyjail import cgroups, logs
from hyjail.errors import SetupError

from conftest import HYJAIL, hyjail, needs_jails, new_leaks

pytestmark = needs_jails


def _persist(name: str, root: str, script: str, *options: str) -> None:
    started = hyjail("run", "--persist", "--name", name, *options, root, name, "127.0.0.1",
                     "/bin/sh", "-c", script)
    assert started.returncode == 0, started.stderr


def test_a_persistent_jails_output_is_its_log(busybox_root):
    _persist("logj", busybox_root, "echo out; echo err >&2; sleep 60")
    try:
        deadline = time.monotonic() + 10
        while "err" not in hyjail("logs", "logj").stdout and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hyjail("logs", "logj").stdout == "out\nerr\n"
        assert open_text(os.path.join(logs.LOG_DIR, "logj.log")) == "out\nerr\n"
        shown = hyjail("run", "/", "over", "127.0.0.1", "/bin/ls", "-A", logs.LOG_DIR)
        assert (shown.returncode, shown.stdout) == (0, "")  # masked in a jail over /
    finally:
        hyjail("stop", "logj")
    assert hyjail("logs", "logj").stdout == "out\nerr\n"  # kept after the jail
    missing = hyjail("logs", "nosuchjail")
    assert (missing.returncode, missing.stderr.count("\n")) == (1, 1)
    assert "nor a log of one" in missing.stderr
    assert not new_leaks()


def test_follow_prints_until_the_jail_ends(busybox_root):
    _persist("followj", busybox_root, "echo line1; sleep 1; echo line2; sleep 60")
    follower = subprocess.Popen([*HYJAIL, "logs", "-f", "followj"], stdout=subprocess.PIPE,
                                text=True)
    try:
        assert follower.stdout.readline() == "line1\n"  # while the jail runs
        log = os.path.join(logs.LOG_DIR, "followj.log")
        deadline = time.monotonic() + 10
        while "line2" not in open_text(log) and time.monotonic() < deadline:
            time.sleep(0.05)
        hyjail("stop", "--timeout", "1", "followj")
        rest, _ = follower.communicate(timeout=20)  # it ends with the jail
        assert rest == "line2\n" and follower.returncode == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        hyjail("stop", "followj")
    assert not new_leaks()


def open_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_the_log_is_capped_and_rotated_once(tmp_path):
    log = logs.Log(str(tmp_path / "j.log"), limit=10).open()
    for chunk in (b"aaaa\n", b"bbbb\n", b"cccc\n", b"dddd\n", b"eeee\n"):
        log.write(chunk)
    log.close()
    assert (tmp_path / "j.log.1").read_bytes() == b"cccc\ndddd\n"
    assert (tmp_path / "j.log").read_bytes() == b"eeee\n"
    read = []
    logs.read(str(tmp_path / "j.log"), read.append)
    assert b"".join(read) == b"cccc\ndddd\neeee\n"


def test_a_symlink_in_the_logs_place_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "j.log").symlink_to(target)
    with pytest.raises(SetupError, match="j.log"):
        logs.Log(str(tmp_path / "j.log")).open()
    (tmp_path / "dir").symlink_to(tmp_path)
    with pytest.raises(SetupError, match="dir"):
        logs.Log(str(tmp_path / "dir" / "k.log")).open()
    assert target.read_text() == ""


def test_on_a_terminal_the_jails_control_bytes_are_shown_as_question_marks(busybox_root):
    _persist("ttyj", busybox_root, "printf 'a\\033]0;title\\007b\\n'; sleep 60")
    try:
        deadline = time.monotonic() + 10
        while "b" not in hyjail("logs", "ttyj").stdout and time.monotonic() < deadline:
            time.sleep(0.05)
        main, side = pty.openpty()
        try:
            done = subprocess.run([*HYJAIL, "logs", "ttyj"], stdout=side, timeout=30)
            assert done.returncode == 0
            shown = os.read(main, 4096)
        finally:
            os.close(main)
            os.close(side)
        assert shown.replace(b"\r\n", b"\n") == b"a?]0;title?b\n"
        assert hyjail("logs", "ttyj").stdout == "a\033]0;title\007b\n"  # piped: as written
    finally:
        hyjail("stop", "ttyj")
    assert not new_leaks()


def _memory_counted() -> bool:
    return cgroups.home("memory", cgroups.hierarchies()) is not None


@pytest.mark.skipif(not _memory_counted(), reason="no memory cgroup controller on this host")
def test_an_oom_kill_is_said_on_stderr_and_in_the_log(busybox_root):
    hog = "x=0123456789; while true; do x=$x$x; done"
    ran = hyjail("run", "--memory", "24M", busybox_root, "oomj", "127.0.0.1", "/bin/sh", "-c",
                 hog)
    assert ran.returncode == 137, ran.stderr
    assert ran.stderr.startswith("hyjail: jail ") and ran.stderr.endswith(
        ": the kernel's OOM killer killed 1 process (memory limit reached)\n"), ran.stderr
    _persist("oomp", busybox_root, hog, "--memory", "24M")
    try:
        deadline = time.monotonic() + 20
        kills = 0
        while not kills and time.monotonic() < deadline:
            listed = [j for j in json.loads(hyjail("ls", "--json").stdout)
                      if j["name"] == "oomp"]
            kills = listed[0]["usage"]["oom_kills"] if listed else 0
            time.sleep(0.1)
        assert kills >= 1  # hyjail ls --json counts them while the jail runs
        assert " OOM " in hyjail("ls").stdout.splitlines()[0]
    finally:
        hyjail("stop", "oomp")
    assert "OOM killer killed" in hyjail("logs", "oomp").stdout
    assert not new_leaks()
