"""What `hyjail run`'s command gets besides its jail: a clean environment (TERM, and the
user's HOME, SHELL, USER, LOGNAME and a login's PATH, from the jail's own passwd, plus
container=hyjail), --env, --env-file and --preserve-env over it; --user USER[:GROUP] of the
jail's own passwd and group; --chdir DIR inside. On every backend; the library alike."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hyjail import environment
from hyjail.errors import SetupError
from hyjail.spec import JailSpec

from conftest import backends, hyjail, needs_jails, new_leaks

pytestmark = needs_jails

SECRET = "HYJAIL_TEST_TOKEN"


def _root(tmp_path, busybox_root: str) -> str:
    """A copy of the busybox root with a user and group of its own (never the host's)."""
    root = str(tmp_path / "root")
    subprocess.run(["cp", "-a", busybox_root, root], check=True)
    with open(os.path.join(root, "etc", "passwd"), "a") as f:
        f.write("web:x:4242:4242:the web user:/srv/web:/bin/sh\n")
    with open(os.path.join(root, "etc", "group"), "a") as f:
        f.write("web:x:4242:\nlogs:x:4343:web\n")
    os.makedirs(os.path.join(root, "srv", "web"))
    return root


def _env(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


@pytest.mark.parametrize("backend", backends("ns", "trace"))
def test_the_environment_is_clean_unless_asked(tmp_path, busybox_root, backend):
    root = _root(tmp_path, busybox_root)
    host = {**os.environ, SECRET: "s3cret", "TERM": "xterm-test"}
    clean = hyjail("run", "--backend", backend, root, "h", "127.0.0.1", "/usr/bin/env", env=host)
    assert clean.returncode == 0, clean.stderr
    assert _env(clean.stdout) == {
        "HOME": "/root", "SHELL": "/bin/sh", "USER": "root", "LOGNAME": "root",
        "PATH": "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin",
        "TERM": "xterm-test", "container": "hyjail"}
    given = tmp_path / "app.env"
    given.write_text(f"# the app's\nMODE=prod\n\n{SECRET}\nPATH=/opt/bin\n")
    asked = hyjail("run", "--backend", backend, "--env-file", str(given), "--env", "MODE=dev",
                   "--env", "EMPTY=", root, "h", "127.0.0.1", "/usr/bin/env", env=host)
    shown = _env(asked.stdout)
    assert (shown["MODE"], shown[SECRET], shown["PATH"], shown["EMPTY"]) == (
        "dev", "s3cret", "/opt/bin", ""), asked.stderr
    preserved = hyjail("run", "--backend", backend, "--preserve-env", "--env", "MODE=x", root,
                       "h", "127.0.0.1", "/usr/bin/env", env=host)
    shown = _env(preserved.stdout)
    assert (shown[SECRET], shown["MODE"], shown["HOME"]) == ("s3cret", "x", host["HOME"])
    assert not new_leaks()


@pytest.mark.parametrize("backend", backends("ns", "trace"))
def test_user_group_and_directory_come_from_the_jail(tmp_path, busybox_root, backend):
    root = _root(tmp_path, busybox_root)
    as_web = hyjail("run", "--backend", backend, "--user", "web", "--chdir", "/srv/web", root,
                    "h", "127.0.0.1", "/bin/sh", "-c", 'id -u; id -g; id -G; pwd; echo "$HOME '
                    '$USER $SHELL"')
    assert as_web.stdout.splitlines() == [
        "4242", "4242", "4242 4343", "/srv/web", "/srv/web web /bin/sh"], as_web.stderr
    grouped = hyjail("run", "--backend", backend, "--user", "web:logs", root, "h", "127.0.0.1",
                     "/bin/sh", "-c", "id -u; id -G")
    assert grouped.stdout.splitlines() == ["4242", "4343"], grouped.stderr
    numeric = hyjail("run", "--backend", backend, "--user", "5000:5001", root, "h",
                     "127.0.0.1", "/bin/sh", "-c", "id -u; id -G; echo $HOME")
    assert numeric.stdout.splitlines() == ["5000", "5001", "/"], numeric.stderr
    assert not new_leaks()


@pytest.mark.parametrize("options,says", [
    (["--user", "ghost"], "ghost: no such user in the jail"),
    (["--user", "web:ghosts"], "ghosts: no such group in the jail"),
    (["--user", "web:"], "--user web:: USER or USER:GROUP"),
    (["--chdir", "/nonexistent"], "chdir: /nonexistent: No such file or directory"),
    (["--chdir", "/etc/passwd"], "chdir: /etc/passwd: Not a directory"),
    (["--chdir", "srv"], "--chdir srv: an absolute path inside the jail"),
    (["--env", "=x"], "--env: =x: NAME=VALUE"),
    (["--env-file", "/nonexistent/env"], "--env-file /nonexistent/env: No such file"),
])
def test_bad_user_directory_or_environment_is_one_line_and_125(tmp_path, busybox_root,
                                                               options, says):
    root = _root(tmp_path, busybox_root)
    done = hyjail("run", *options, root, "h", "127.0.0.1", "/bin/true")
    assert done.returncode == 125 and done.stderr.count("\n") == 1, done.stderr
    assert says in done.stderr, done.stderr
    assert not new_leaks()


def test_a_directory_outside_the_root_is_never_reached(tmp_path, busybox_root):
    """--chdir resolves inside the jail: `..` stops at its root, a symlink stays inside."""
    root = _root(tmp_path, busybox_root)
    os.symlink("/", os.path.join(root, "srv", "up"))
    for where in ("/../../..", "/srv/up", "/srv/up/.."):
        done = hyjail("run", "--chdir", where, root, "h", "127.0.0.1", "/bin/sh", "-c",
                      "ls -d /srv/web && pwd")
        assert done.returncode == 0 and done.stdout.startswith("/srv/web\n"), done.stderr
    assert not new_leaks()


def test_env_files_are_read_as_podman_reads_them(tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_HOST", "yes")
    monkeypatch.delenv("NOT_SET", raising=False)
    given = tmp_path / "e"
    given.write_text("A=1\n  # comment\nB=two=2\nFROM_HOST\nNOT_SET\n")
    assert environment.from_options(["A=3"], [str(given)]) == {
        "A": "3", "B": "two=2", "FROM_HOST": "yes"}
    given.write_text("A=1\n bad=1\n")
    with pytest.raises(SetupError, match=f"--env-file {given}:2:  bad=1: NAME=VALUE"):
        environment.from_options([], [str(given)])


def test_the_library_defaults_to_a_clean_environment(monkeypatch):
    monkeypatch.setenv(SECRET, "s3cret")
    monkeypatch.setenv("TERM", "vt100")
    spec = JailSpec.create("/", "h", "127.0.0.1", ["true"])
    assert dict(spec.environ) == {"TERM": "vt100"}
    kept = JailSpec.create("/", "h", "127.0.0.1", ["true"], preserve_env=True,
                           environ={"X": "1"})
    assert dict(kept.environ)[SECRET] == "s3cret" and dict(kept.environ)["X"] == "1"


def test_hyjail_exec_is_clean_too_and_jexec_keeps_freebsds(tmp_path, busybox_root):
    """hyjail exec gives the entered command the same clean set as hyjail run (podman exec's
    way); jexec(8) passes its own environment on, as FreeBSD's does."""
    root = _root(tmp_path, busybox_root)
    host = {**os.environ, SECRET: "s3cret"}
    assert hyjail("run", "--persist", "--name", "envj", root, "envj", "127.0.0.1").returncode == 0
    try:
        clean = _env(hyjail("exec", "--env", "A=1", "-u", "web", "envj", "/usr/bin/env",
                            env=host).stdout)
        assert SECRET not in clean and (clean["A"], clean["HOME"], clean["USER"]) == (
            "1", "/srv/web", "web")
        kept = _env(hyjail("exec", "--preserve-env", "envj", "/usr/bin/env", env=host).stdout)
        assert kept[SECRET] == "s3cret"
        jexec = os.path.join(os.path.dirname(sys.executable), "jexec")
        freebsd = subprocess.run([jexec, "envj", "/usr/bin/env"], capture_output=True,
                                 text=True, env=host)
        assert _env(freebsd.stdout)[SECRET] == "s3cret", freebsd.stderr
    finally:
        hyjail("stop", "envj")
    assert not new_leaks()
