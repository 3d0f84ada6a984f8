"""jexec as FreeBSD's jexec(8): its command line (getopt, usage, exit 1), -u (a host user),
-U (a jail user), -l (a login's environment and home), -d (a directory inside), the user's
shell when no command is given, its messages word for word; and exec_in's timeout."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import sys
import time

import pytest

from conftest import backends, fresh_loopback_ip, hyjail, needs_root

JEXEC = [os.path.join(os.path.dirname(sys.executable), "jexec")]  # the installed drop-in
USAGE = ("usage: jexec [-l] [-d working-directory] [[-u username] | [-U username]] jail "
         "[command ...]\n")
LOGIN_PATH = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"
NO_SUCH_USER = "hyjail-no-such-user"  # on neither the host nor in the jail
EXTRA_PASSWD = ("alice:x:1234:1234:Alice:/home/alice:/bin/sh\n"
                "noshell:x:2000:2000::/:\n"  # no shell: jexec runs /bin/sh
                "badshell:x:2001:2001::/:/bin/nosh\n")
EXTRA_GROUP = "staff:x:50:alice\n"


def jexec(*args: str, input: str | None = None, env: dict | None = None
          ) -> subprocess.CompletedProcess:
    return subprocess.run([*JEXEC, *args], capture_output=True, text=True, timeout=60,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL,
                          env=env)


def status(result: subprocess.CompletedProcess) -> tuple[int, str]:
    return result.returncode, result.stderr


# ---- the command line: no jail needed -------------------------------------------------------

@pytest.mark.parametrize("argv, reason", [
    ([], ""),  # no jail
    (["-l"], ""),
    (["-u", "root", "-U", "root", "j", "true"], ""),  # -u and -U together
    (["-U", "root", "-u", "root", "j"], ""),
    (["-h", "j"], "jexec: illegal option -- h\n"),  # no -h in jexec
    (["-x"], "jexec: illegal option -- x\n"),
    (["--version"], "jexec: illegal option -- -\n"),  # getopt(3) knows no long options
    (["-l", "--help"], "jexec: illegal option -- -\n"),  # only alone is --help the help
    (["-d"], "jexec: option requires an argument -- d\n"),
    (["-l", "-u"], "jexec: option requires an argument -- u\n"),
])
def test_usage_errors_print_freebsds_usage_and_exit_1(argv, reason):
    result = jexec(*argv)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", reason + USAGE)


def test_help_prints_the_usage_and_exits_0():
    result = jexec("--help")
    assert (result.returncode, result.stdout, result.stderr) == (0, USAGE, "")


@needs_root
def test_a_missing_jail_or_host_user_is_one_line_and_exit_1():
    assert status(jexec("hyjail-no-such-jail", "true")) == (
        1, 'jexec: jail "hyjail-no-such-jail" not found\n')
    assert status(jexec("-l", "987654", "true")) == (1, "jexec: jail 987654 not found\n")
    # -u looks the user up on the host first, as FreeBSD's does before it finds the jail.
    assert status(jexec("-u", NO_SUCH_USER, "hyjail-no-such-jail", "true")) == (
        1, f"jexec: {NO_SUCH_USER}: no such user\n")
    # A jail name full of control characters is still one printable line.
    weird = jexec("a\nb\x1b[2J", "true")
    assert (weird.returncode, weird.stderr.count("\n"), "\x1b" in weird.stderr) == (1, 1, False)


def test_exec_ins_refusals_are_worded_as_freebsds():
    from hyjail.errors import HyjailError, SetupError
    from hyjail.jexec8 import freebsd_words, parse

    def words(argv, message, code=125):
        return freebsd_words(HyjailError(message, code), parse(argv))

    assert words(["j", "nosuch"], "nosuch: command not found in the jail", 127) == \
        "execvp: nosuch: No such file or directory"
    assert words(["j"], "/bin/nosh: command not found in the jail", 127) == \
        "execlp: /bin/nosh: No such file or directory"
    assert words(["j", "/etc/passwd"], "/etc/passwd: cannot execute: Permission denied",
                 126) == "execvp: /etc/passwd: Permission denied"
    assert words(["-U", "bob", "j"], "bob: no such user in the jail") == "bob: no such user"
    assert words(["-u", "bob", "j"], "bob: no such user on the host") == "bob: no such user"
    assert words(["007"], 'jail "007" not found', 1) == "jail 7 not found"
    assert words(["j"], 'jail "j" not found', 1) == 'jail "j" not found'
    assert freebsd_words(SetupError("chdir: /x: No such file or directory"), parse(["j"])) \
        == "chdir: /x: No such file or directory"


# ---- inside a jail ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def accounts_root(tmp_path_factory) -> str:
    """A busybox root with users of its own: alice (groups 1234 and staff 50, home
    /home/alice), noshell (an empty shell field) and badshell (a shell the root lacks); and a
    symlink that points far above the root."""
    from hyjail.rootfs import busybox
    root = busybox.build(str(tmp_path_factory.mktemp("jexec8") / "root"))
    with open(os.path.join(root, "etc", "passwd"), "a") as f:
        f.write(EXTRA_PASSWD)
    with open(os.path.join(root, "etc", "group"), "a") as f:
        f.write(EXTRA_GROUP)
    os.makedirs(os.path.join(root, "home", "alice"), exist_ok=True)
    os.symlink("../../../../../../../../etc", os.path.join(root, "up"))
    return root


@contextlib.contextmanager
def persistent(root: str, backend: str, name: str):
    """A persistent jail on root, stopped at the end however the test went; yields its JID."""
    ip = "127.0.0.1" if backend == "ns" else fresh_loopback_ip()
    started = hyjail("run", "--backend", backend, "--persist", "--name", name, root, name, ip,
                     stdin=subprocess.DEVNULL)
    try:
        assert started.returncode == 0, started.stderr
        yield started.stdout.strip()
    finally:
        hyjail("stop", name)


def host_account(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"this host has no user {name}")


@needs_root
@pytest.mark.parametrize("backend", backends("ns", "trace"))
def test_users_of_the_host_and_of_the_jail(accounts_root, backend):
    daemon = host_account("daemon")  # not in the jail's passwd: only the host knows it
    show = 'id -u; id -g; id -G; echo "$USER $HOME $SHELL $PATH"; pwd'
    with persistent(accounts_root, backend, "j8users") as jid:
        # -u: the host's uid, gid and groups, run inside the jail.
        host = jexec("-u", "daemon", "j8users", "/bin/sh", "-c", show)
        assert host.returncode == 0, host.stderr
        uid, gid, groups, environment, cwd = host.stdout.splitlines()
        assert (int(uid), int(gid)) == (daemon.pw_uid, daemon.pw_gid)
        assert {int(g) for g in groups.split()} == set(
            os.getgrouplist("daemon", daemon.pw_gid))
        assert environment == f"daemon {daemon.pw_dir} {daemon.pw_shell} {LOGIN_PATH}"
        assert cwd == "/"
        by_uid = jexec("-u", str(daemon.pw_uid), jid, "id", "-u")  # a number, and a JID
        assert (by_uid.returncode, by_uid.stdout) == (0, f"{daemon.pw_uid}\n"), by_uid.stderr
        # -U: the jail's alice, with her groups from the jail's /etc/group.
        alice = jexec("-U", "alice", "j8users", "/bin/sh", "-c", show)
        assert (alice.returncode, alice.stdout.splitlines()) == (0, [
            "1234", "1234", "1234 50", f"alice /home/alice /bin/sh {LOGIN_PATH}", "/"]), \
            alice.stderr
        # Who is known where: the jail's alice is not the host's; the host's daemon is not
        # the jail's. (An unknown name: FreeBSD's errx, one line, exit 1.)
        if "alice" not in {p.pw_name for p in pwd.getpwall()}:
            assert status(jexec("-u", "alice", "j8users", "true")) == (
                1, "jexec: alice: no such user\n")
        assert status(jexec("-U", "daemon", "j8users", "true")) == (
            1, "jexec: daemon: no such user\n")
        assert status(jexec("-U", NO_SUCH_USER, "j8users", "true")) == (
            1, f"jexec: {NO_SUCH_USER}: no such user\n")
        # No user: root of the jail, the environment as it was (-n: an old flag, ignored).
        plain = jexec("-n", "j8users", "/bin/sh", "-c", 'id -u; echo "$MARK"',
                      env={**os.environ, "MARK": "kept"})
        assert (plain.returncode, plain.stdout) == (0, "0\nkept\n"), plain.stderr


@needs_root
@pytest.mark.parametrize("backend", backends("ns", "trace"))
def test_login_environment_and_working_directory(accounts_root, backend):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "vt100", "MARK": "gone"}
    show = 'env | sort; echo "cwd=$(pwd)"'
    with persistent(accounts_root, backend, "j8login"):
        def login(*args: str) -> list[str]:
            result = jexec(*args, "j8login", "/bin/sh", "-c", show, env=env)
            assert result.returncode == 0, result.stderr
            return [line for line in result.stdout.splitlines()
                    if not line.startswith(("PWD=", "SHLVL=", "_="))]  # the shell's own

        # -l: only TERM kept; HOME, SHELL, USER, LOGNAME and the login class's PATH set;
        # in the user's home (the jail's root user by default).
        assert login("-l") == [
            "HOME=/root", "LOGNAME=root", f"PATH={LOGIN_PATH}", "SHELL=/bin/sh",
            "TERM=vt100", "USER=root", "container=hyjail", "cwd=/root"]
        assert login("-l", "-U", "alice") == [
            "HOME=/home/alice", "LOGNAME=alice", f"PATH={LOGIN_PATH}", "SHELL=/bin/sh",
            "TERM=vt100", "USER=alice", "container=hyjail", "cwd=/home/alice"]
        # -d wins over the home; it is the jail's path (relative to its root, a symlink
        # clamped at the root), never the host's.
        assert login("-l", "-U", "alice", "-d", "/tmp")[-1] == "cwd=/tmp"
        assert login("-d", "/tmp")[-1] == "cwd=/tmp"
        assert login("-d", "etc")[-1] == "cwd=/etc"
        marker = jexec("-d", "/up", "j8login", "cat", "hyjail-root")  # the jail's /etc
        assert (marker.returncode, marker.stdout) == (0, "busybox\n"), marker.stderr
        assert login()[-1] == "cwd=/"  # no -d, no -l: the jail's root
        # A directory the jail has not: chdir(2)'s words, one line, exit 1.
        assert status(jexec("-d", "/nonexistent", "j8login", "true")) == (
            1, "jexec: chdir: /nonexistent: No such file or directory\n")
        assert status(jexec("-d", "/etc/passwd", "j8login", "true")) == (
            1, "jexec: chdir: /etc/passwd: Not a directory\n")
        host_only = next(p for p in ("/usr/lib", "/var/lib", "/lib")
                         if os.path.isdir(p) and not os.path.exists(accounts_root + p))
        assert status(jexec("-d", host_only, "j8login", "true")) == (
            1, f"jexec: chdir: {host_only}: No such file or directory\n")


@needs_root
@pytest.mark.parametrize("backend", backends("ns", "trace"))
def test_no_command_runs_the_users_shell_and_exec_failures(accounts_root, backend):
    with persistent(accounts_root, backend, "j8shell"):
        shell = jexec("j8shell", input='echo hi; echo "zero=$0 flags=$-"; exit 3\n')
        assert shell.returncode == 3, shell.stderr
        # argv[0] the shell's path, run with -i (interactive: $- holds i), as jexec.c does.
        assert "hi\n" in shell.stdout, shell.stdout
        zero, flags = next(line for line in shell.stdout.splitlines()
                           if line.startswith("zero=")).split()
        assert zero == "zero=/bin/sh" and "i" in flags.removeprefix("flags="), shell.stdout
        # An empty shell field: /bin/sh.
        fallback = jexec("-U", "noshell", "j8shell", input="id -u; exit 5\n")
        assert (fallback.returncode, "2000" in fallback.stdout) == (5, True), fallback.stderr
        # A shell the jail lacks, a command it lacks, one that cannot run: err(3)'s words.
        assert status(jexec("-U", "badshell", "j8shell")) == (
            1, "jexec: execlp: /bin/nosh: No such file or directory\n")
        assert status(jexec("j8shell", "nosuch")) == (
            1, "jexec: execvp: nosuch: No such file or directory\n")
        assert status(jexec("j8shell", "/etc/passwd")) == (
            1, "jexec: execvp: /etc/passwd: Permission denied\n")
        # Otherwise the command's own status.
        assert jexec("j8shell", "/bin/sh", "-c", "exit 7").returncode == 7


EXEC_WITH_TIMEOUT = """
import sys, time
from hyjail.errors import SetupError
from hyjail.jails import exec_in
began = time.monotonic()
try:
    exec_in(sys.argv[1], ["/bin/sh", "-c", "sleep 100 & sleep 100; echo not killed"],
            timeout=1)
except SetupError as e:
    print(f"{e} after={time.monotonic() - began:.1f}")
print(exec_in(sys.argv[1], ["/bin/sh", "-c", "exit 4"], timeout=30))
"""


@needs_root
@pytest.mark.parametrize("backend", backends("ns", "trace"))
def test_exec_in_kills_the_command_at_its_timeout(accounts_root, backend):
    from hyjail.jails import get
    with persistent(accounts_root, backend, "j8time"):
        result = subprocess.run([sys.executable, "-c", EXEC_WITH_TIMEOUT, "j8time"],
                                capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        timed_out, code = result.stdout.splitlines()
        message, after = timed_out.rsplit(" after=", 1)
        assert message == ("jail j8time: /bin/sh -c 'sleep 100 & sleep 100; echo not killed'"
                           ": timed out after 1 s")
        assert 1 <= float(after) < 10
        assert code == "4"  # a command that ends in time: its status
        # The whole process group went: the background sleep too.
        deadline = time.monotonic() + 5
        while any("sleep" in p.command for p in get("j8time").processes) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any("sleep" in p.command for p in get("j8time").processes)

