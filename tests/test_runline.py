"""`hyjail run`'s shortcut past click (`hyjail.runline`): whatever it reads, it reads exactly
as click does; what it cannot, it leaves to click; and a jail's start imports no click."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest

from hyjail import cli, runline

from conftest import python_prints

ROOT_LINE = ["/srv/root", "web", "10.77.0.2"]

# Command lines after `run`: each either read by the shortcut (then as click reads it) or
# left to click (then click reads it or names the error).
LINES = [
    [*ROOT_LINE, "/bin/true"],
    ["--net", "none", *ROOT_LINE, "/bin/sh", "-c", "echo --net veth"],
    ["--net=none", "--backend=trace", *ROOT_LINE, "true"],
    ["--name", "w1", "--persist", *ROOT_LINE],
    ["--allow", "raw_sockets", "--allow", "nomount", "--allow=sysvipc=1", *ROOT_LINE, "id"],
    ["--userns", "--userns-base", "200000", *ROOT_LINE, "id"],
    ["--userns", "--userns-base=+7", *ROOT_LINE, "id"],
    ["-p", "8080:80", "-p8443:443/tcp", "--publish", "53:53/udp", *ROOT_LINE, "httpd"],
    ["--bind", "/a:/b", "--ro-bind", "/c:/d", "--tmpfs", "/t:size=1m", *ROOT_LINE, "ls"],
    ["--env", "A=1", "--env-file", "/e", "--preserve-env", *ROOT_LINE, "env"],
    ["--memory", "64M", "--pids", "10", "--cpus", "0.5", "--rlimit", "nofile=8:9",
     *ROOT_LINE, "true"],
    ["--read-only", "--user", "www:www", "--chdir", "/var", "--dns", "10.77.0.1",
     *ROOT_LINE, "true"],
    ["--interface", "eth0", "--gateway", "10.77.0.1", "--nat", "eth1", "--host-ip",
     "10.77.0.1", *ROOT_LINE, "true"],
    ["--", *ROOT_LINE, "true"],
    [*ROOT_LINE, "--", "true"],
    [*ROOT_LINE, "/bin/ls", "--net", "-l"],
    ["-", "web", "10.77.0.2", "true"],
    # Left to click: help, errors, and what click might read otherwise.
    ["--help"], ["-h", *ROOT_LINE, "true"], ["--bogus", *ROOT_LINE, "true"],
    ["--net", "bad", *ROOT_LINE, "true"], ["--net"], ["--userns-base", "x", *ROOT_LINE, "t"],
    ["--userns-base", "5", *ROOT_LINE, "true"], [*ROOT_LINE], ["/srv/root", "web"],
    ["--userns", "--userns-base", "+-5", *ROOT_LINE, "t"],
    ["--name", "-x", *ROOT_LINE, "true"], ["--persist=1", *ROOT_LINE], ["--nam", *ROOT_LINE],
    ["-p", *ROOT_LINE, "true"], ["--net", "--backend", "ns", *ROOT_LINE, "true"],
]


def _click_reads(line: list[str]) -> dict | None:
    """The keywords click passes to `run` for line, or None where it stops with a message."""
    try:
        context = cli.run.make_context("run", list(line))
    except (click.exceptions.Exit, click.UsageError):
        return None
    values = dict(context.params)
    return None if runline.usage_error(values) else values


@pytest.mark.parametrize("line", LINES, ids=" ".join)
def test_the_shortcut_reads_a_line_as_click_does_or_not_at_all(line):
    ours = runline.parse(line)
    if ours is not None:
        assert ours == _click_reads(line)


def test_every_ordinary_line_is_read_by_the_shortcut():
    ordinary = LINES[:LINES.index(["--help"])]
    assert [line for line in ordinary if runline.parse(line) is None] == []


def test_click_and_the_shortcut_fill_the_same_keywords():
    assert set(runline.parse([*ROOT_LINE, "true"])) == \
        {param.name for param in cli.run.params}


# Modules a jail's start does without: each was milliseconds of every start (`_hashlib` is
# OpenSSL's libcrypto, loaded by `hashlib` and `hmac`).
OFF_THE_START_PATH = ("click", "dataclasses", "_hashlib", "json", "re")


def test_a_jail_starts_without_importing_click_dataclasses_or_openssl(busybox_root):
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom hyjail.commands import hyjail_main\n"
         "try:\n    hyjail_main(sys.argv[1:])\nfinally:\n"
         f"    found = [m for m in {OFF_THE_START_PATH!r} if m in sys.modules]\n"
         "    sys.stderr.write(' '.join(found) or 'NEITHER')",
         "run", "--net", "none", busybox_root, "h", "127.0.0.1", "/bin/echo", "up"],
        capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == "up\n" and loaded.stderr.endswith("NEITHER")


@pytest.mark.parametrize(("line", "message"), [
    (["--bogus"], "No such option '--bogus'"),
    (["--net", "bad"], "Invalid value for '--net'"),
    (["--userns-base", "5"], "--userns-base needs --userns"),
])
def test_what_the_shortcut_leaves_gets_clicks_message_and_exit_2(busybox_root, line, message):
    done = subprocess.run([sys.executable, "-m", "hyjail", "run", *line, busybox_root, "h",
                           "127.0.0.1", "/bin/true"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("hyjail: ") and message in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("name", ["hyjail", "jail", "jls", "jexec", "hyjail-oci"])
def test_the_installed_commands_are_bins_launchers(name):
    """pip's own wrapper (from [project.scripts]) imports re on every start."""
    installed = os.path.join(os.path.dirname(sys.executable), name)
    ours = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin", name)
    with open(installed) as a, open(ours) as b:
        assert a.read().split("\n", 1)[1] == b.read().split("\n", 1)[1]


# What the drop-ins' starts do without besides (their parsers are getopt(3)'s, without
# getopt's gettext, re and locale; their hooks import subprocess only when there are some).
OFF_THE_DROP_INS = (*OFF_THE_START_PATH, "typing", "subprocess", "getopt", "shlex")


def _drop_in(main: str, *argv: str) -> subprocess.CompletedProcess:
    script = (f"import sys\nfrom hyjail.commands import {main}\n"
              f"try:\n    {main}(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
              f"found = [m for m in {OFF_THE_DROP_INS!r} if m in sys.modules]\n"
              "sys.stderr.write(' '.join(found) or 'NONE')\nsys.exit(code)")
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_jail_jexec_and_jls_start_without_the_costly_modules(busybox_root):
    name = "hjlean"
    made = _drop_in("jail_main", "-c", f"name={name}", f"path={busybox_root}",
                    f"host.hostname={name}", "ip4.addr=127.0.0.1", "persist")
    try:
        assert made.returncode == 0 and made.stderr.endswith("NONE"), made.stderr
        for main, argv in (("jexec_main", (name, "/bin/true")), ("jls_main", ())):
            done = _drop_in(main, *argv)
            assert done.returncode == 0 and done.stderr.endswith("NONE"), (main, done.stderr)
    finally:
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "jail"), "-r", name],
                       capture_output=True, timeout=60)


def test_a_starts_imports_leave_the_collector_running_and_their_objects_frozen():
    """A supervisor may run for days: the collector it pauses for its imports runs again."""
    assert python_prints("import gc\nfrom hyjail import commands\n"
                         "commands._import_uncollected('hyjail.supervisor')\n"
                         "print(gc.isenabled(), gc.get_freeze_count() > 1000)") == "True True\n"
