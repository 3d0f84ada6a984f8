"""The entry path (SPEC 1, issue 13 findings 1 and 2): a process that enters a jail with host
powers reads the jail's accounts as plain data (never through NSS, so a module the jail
planted is never loaded), and is out of the jail's reach until it execs (non-dumpable, no host
descriptor). Each hole is also shown open under its weakening, so these tests can fail."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import (
    HYJAIL,
    backends,
    fresh_loopback_ip,
    guard,
    jail_has_proc,
    needs,
    needs_jails,
    running,
)

pytestmark = needs_jails

JEXEC = [sys.executable, "-c", "from hyjail.commands import jexec_main; jexec_main()"]
WEAKEN = "HYJAIL_UNSAFE_WEAKEN"

# A glibc NSS module whose constructor records the powers of the process that loads it.
# (No /proc in a trace jail: the same three lines, from the syscalls /proc would answer.)
EVIL_NSS = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/capability.h>

__attribute__((constructor)) static void evidence(void) {
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0}};
    syscall(SYS_capget, &head, data);
    unsigned long long eff = ((unsigned long long)data[1].effective << 32) | data[0].effective;
    char line[256];
    int n = snprintf(line, sizeof line, "CapEff:\t%016llx\nSeccomp:\t%d\nNoNewPrivs:\t%d\n",
                     eff, prctl(PR_GET_SECCOMP, 0, 0, 0, 0),
                     prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    int fd = open("/tmp/nss-evidence", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        write(fd, line, n);
        close(fd);
    }
}

int _nss_evil_getpwnam_r(void) { return 0; }  /* NSS_STATUS_NOTFOUND: files answers */
int _nss_evil_getpwuid_r(void) { return 0; }
int _nss_evil_initgroups_dyn(void) { return 0; }
"""

# What jailed root plants before the host admin runs jexec -u / -l.
PLANT = """
for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib /usr/lib /lib64; do
    mkdir -p $d && cp /tmp/libnss_evil.so.2 $d/
done
printf 'passwd: evil files\\ngroup: evil files\\ninitgroups: evil files\\n' > /etc/nsswitch.conf
echo 'alice:x:1234:1234:Alice:/home/alice:/bin/sh' >> /etc/passwd
printf 'staff:x:50:bob,alice\\nalice:x:1234:\\nother:x:60:bob\\n' >> /etc/group
mkdir -p /home/alice
"""

# A /proc scanner: every process of the jail's pid namespace but itself, as fast as it can,
# until the stop file appears. A hit is an open of /proc/P/{exe,environ,mem}, or a
# PTRACE_SEIZE, that succeeded on a process not yet under its filter (Seccomp: 0 read after
# the success: seccomp is never lifted) or whose exe is no file of the jail.
SCANNER = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>

static int seccomp_of(int pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *at = strstr(buf, "\nSeccomp:\t");
    return at ? atoi(at + 10) : -1;
}

static int foreign_exe(int fd, int pid) {
    char link[64], target[4096];
    struct stat opened, named;
    snprintf(link, sizeof link, "/proc/%d/exe", pid);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0 || fstat(fd, &opened) != 0) return 0;
    target[n] = 0;
    if (stat(target, &named) != 0) return 1;
    return opened.st_dev != named.st_dev || opened.st_ino != named.st_ino;
}

int main(int argc, char **argv) {
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    if (argc != 3 || strcmp(host, argv[1]) != 0) {
        fprintf(stderr, "refusing: not inside jail %s\n", argc > 1 ? argv[1] : "?");
        return 99;
    }
    static const char *files[] = {"exe", "environ", "mem"};
    long rounds = 0, hits = 0;
    int self = getpid();
    printf("up\n");
    fflush(stdout);
    while (access(argv[2], F_OK) != 0) {
        DIR *proc = opendir("/proc");
        struct dirent *entry;
        while (proc && (entry = readdir(proc))) {
            int pid = atoi(entry->d_name);
            if (pid <= 0 || pid == self) continue;
            for (int i = 0; i < 3; i++) {
                char path[64];
                snprintf(path, sizeof path, "/proc/%d/%s", pid, files[i]);
                int fd = open(path, O_RDONLY);
                if (fd < 0) continue;
                int seccomp = seccomp_of(pid);
                if (seccomp == 0 || (i == 0 && foreign_exe(fd, pid))) {
                    printf("HIT %d %s seccomp=%d\n", pid, files[i], seccomp);
                    fflush(stdout);
                    hits++;
                }
                close(fd);
            }
            if (seccomp_of(pid) == 0 && ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) {
                int status;
                ptrace(PTRACE_INTERRUPT, pid, 0, 0);
                waitpid(pid, &status, __WALL);
                int seccomp = seccomp_of(pid);  /* it is stopped: as it was when seized */
                if (seccomp == 0) {
                    printf("HIT %d ptrace seccomp=0\n", pid);
                    fflush(stdout);
                    hits++;
                }
                ptrace(PTRACE_DETACH, pid, 0, 0);
            }
        }
        if (proc) closedir(proc);
        rounds++;
    }
    printf("rounds=%ld hits=%ld\n", rounds, hits);
    return 0;
}
"""


def _gcc(source: str, out: str, *flags: str) -> None:
    src = out + ".c"
    with open(src, "w") as f:
        f.write(source)
    subprocess.run(["gcc", "-O2", "-Wall", *flags, "-o", out, src], check=True,
                   capture_output=True)


@pytest.fixture
def fresh_root(tmp_path) -> str:
    """A busybox root of this test's own (jailed root writes to it)."""
    from hyjail.rootfs import busybox
    return busybox.build(str(tmp_path / "root"))


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _run(argv: list[str], weaken: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != WEAKEN}
    if weaken:
        env[WEAKEN] = weaken
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, **kwargs)


def _planted_jail(root: str, backend: str, name: str):
    """A running jail on root whose root planted an NSS module and accounts; yields once
    its command says so."""
    _gcc(EVIL_NSS, os.path.join(root, "tmp", "libnss_evil.so.2"), "-shared", "-fPIC")
    ip = "127.0.0.1" if backend == "ns" else fresh_loopback_ip()
    script = guard("entryj") + PLANT + "echo planted; exec sleep 100"
    return running("run", "--backend", backend, "--name", name, root, "entryj", ip,
                   "/bin/sh", "-c", script)


@pytest.mark.parametrize("backend", backends("ns", "trace"))
def test_jexec_users_come_from_the_jails_files_never_its_nss(fresh_root, backend):
    evidence = os.path.join(fresh_root, "tmp", "nss-evidence")
    with _planted_jail(fresh_root, backend, "nssj") as jail:
        assert jail.stdout.readline() == "planted\n", jail.stderr.read()
        for argv in ([*JEXEC, "-U", "root", "nssj", "true"], [*JEXEC, "-l", "nssj", "true"],
                     [*HYJAIL, "exec", "-u", "root", "nssj", "true"],
                     [*JEXEC, "-U", "0", "nssj", "true"]):
            result = _run(argv)
            assert result.returncode == 0, (argv, result.stderr)
        assert not os.path.exists(evidence), _read(evidence)
        # A normal user of the jail's passwd and group, with its login environment.
        alice = _run([*JEXEC, "-l", "-U", "alice", "nssj", "/bin/sh", "-c",
                      'id -u; id -g; id -G; echo "$HOME $SHELL $USER"; pwd'])
        assert (alice.returncode, alice.stdout.splitlines()) == (0, [
            "1234", "1234", "1234 50", "/home/alice /bin/sh alice", "/home/alice"]), \
            alice.stderr
        # A number needs no entry (its group is the same number, no others); a name does.
        numeric = _run([*JEXEC, "-U", "4321", "nssj", "/bin/sh", "-c", "id -u; id -g; id -G"])
        assert (numeric.returncode, numeric.stdout) == (0, "4321\n4321\n4321\n"), \
            numeric.stderr
        ghost = _run([*JEXEC, "-U", "ghost", "nssj", "true"])
        assert (ghost.returncode, ghost.stderr) == (1, "jexec: ghost: no such user\n")
        assert not os.path.exists(evidence), _read(evidence)
        # The old way (the weakening): the jail's module runs with the host's full powers.
        weakened = _run([*JEXEC, "-U", "root", "nssj", "true"], weaken="host-nss")
        assert weakened.returncode == 0, weakened.stderr
        with open(evidence) as f:
            lines = f.read().splitlines()
        with open("/proc/self/status") as f:  # this process's: jexec's, before it enters
            host = {line.split(":")[0]: line.rstrip("\n") for line in f}
        assert lines[:3] == [host["CapEff"], host["Seccomp"], host["NoNewPrivs"]]


def test_a_symlinked_or_special_passwd_is_refused_in_one_line(fresh_root):
    """Read beneath the root: a symlink resolves inside the jail (to its own file), a
    magic link or a FIFO is refused in one line, never followed or blocked on."""
    script = guard("entryj") + """
        echo 'carol:x:777:777::/:/bin/sh' > /tmp/other-passwd
        ln -sf /tmp/other-passwd /etc/passwd
        echo planted; exec sleep 100"""
    with running("run", "--name", "linkj", fresh_root, "entryj", "127.0.0.1", "/bin/sh", "-c",
                 script) as jail:
        assert jail.stdout.readline() == "planted\n", jail.stderr.read()
        carol = _run([*JEXEC, "-U", "carol", "linkj", "id", "-u"])
        assert (carol.returncode, carol.stdout) == (0, "777\n"), carol.stderr
        if jail_has_proc():  # where its magic links are
            assert _run([*JEXEC, "linkj", "/bin/sh", "-c",
                         "ln -sf /proc/self/fd/0 /etc/passwd"]).returncode == 0
            magic = _run([*JEXEC, "-U", "carol", "linkj", "true"])
            assert magic.returncode == 1 and magic.stderr.count("\n") == 1, magic.stderr
            assert "/etc/passwd" in magic.stderr
        assert _run([*JEXEC, "linkj", "/bin/sh", "-c", "rm /etc/passwd; mkfifo /etc/passwd"]
                    ).returncode == 0
        fifo = _run([*JEXEC, "-U", "carol", "linkj", "true"])
        assert (fifo.returncode, fifo.stderr) == (
            1, "jexec: the jail's /etc/passwd is not a regular file\n")


def _scan(root: str, rounds: int, weaken: str | None) -> tuple[list[str], str]:
    """The scanner as a jail's command, racing `rounds` jexecs; (its hits, its summary)."""
    stop = os.path.join(root, "tmp", "stop")
    try:
        with running("run", "--name", "scanned", root, "scanj", "127.0.0.1", "/bin/scan",
                     "scanj", "/tmp/stop") as jail:
            assert jail.stdout.readline() == "up\n", jail.stderr.read()
            for _ in range(rounds):
                result = _run([*JEXEC, "scanned", "/bin/true"], weaken=weaken)
                assert result.returncode == 0, result.stderr
            with open(stop, "w"):
                pass
            out, _ = jail.communicate(timeout=30)
    finally:
        if os.path.exists(stop):
            os.unlink(stop)
    lines = out.splitlines()
    return [line for line in lines if line.startswith("HIT")], lines[-1] if lines else ""


@needs("R1:kernel", "R4:kernel")  # the scanner reads the jail's own /proc
def test_no_jailed_process_reaches_an_entering_process_before_exec(fresh_root):
    _gcc(SCANNER, os.path.join(fresh_root, "bin", "scan"), "-static")
    hits, summary = _scan(fresh_root, 60, weaken=None)
    assert hits == [] and summary.startswith("rounds="), (hits, summary)
    # Dumpable, as it was: the same scanner gets in (an open of the host's python, of its
    # memory or environment, or a ptrace of it, before its filter).
    hits, summary = _scan(fresh_root, 60, weaken="dumpable-entry")
    assert hits, summary


# What both wrappers below print of a process: its descriptors, on stderr, as a dict.
SHOW_FDS = textwrap.dedent("""
    import os, sys

    def show_fds(pid):
        fds = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                fds[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                pass
        print(repr(fds), file=sys.stderr)
""")

HELD_BEFORE_GO = SHOW_FDS + textwrap.dedent("""
    import hyjail.foreground as foreground
    from hyjail.jails import exec_in
    original = foreground.run_in_foreground

    def listed(child, *args):  # the entered process, all joined, waiting for GO
        show_fds(child.pid)
        return original(child, *args)

    foreground.run_in_foreground = listed
    extra = os.open("/dev/null", os.O_RDONLY)  # a descriptor of the caller's, inheritable
    os.set_inheritable(extra, True)
    print(f"extra={extra}", file=sys.stderr)
    sys.exit(exec_in(sys.argv[1], ["/bin/true"]))
""")


@pytest.mark.parametrize("backend", backends("ns", "trace"))
def test_the_entering_process_holds_no_host_descriptor(fresh_root, backend):
    ip = "127.0.0.1" if backend == "ns" else fresh_loopback_ip()
    host_pidns = os.readlink("/proc/self/ns/pid")
    with running("run", "--backend", backend, "--name", "fdsj", fresh_root, "entryj", ip,
                 "/bin/sh", "-c", "echo up; exec sleep 100") as jail:
        assert jail.stdout.readline() == "up\n", jail.stderr.read()

        def held(weaken: str | None) -> tuple[dict[int, str], int]:
            result = _run([sys.executable, "-c", HELD_BEFORE_GO, "fdsj"], weaken=weaken)
            assert result.returncode == 0, result.stderr
            lines = result.stderr.splitlines()
            extra = int(next(line for line in lines if line.startswith("extra="))[6:])
            fds = eval(next(line for line in lines if line.startswith("{")))  # noqa: S307
            return {fd: target for fd, target in fds.items() if fd > 2}, extra

        fds, extra = held(None)
        assert "/dev/null" not in fds.values() and host_pidns not in fds.values(), fds
        # Only the channel and what it joins: namespaces (and, chrooted, the root).
        assert all(t.startswith(("socket:", "cgroup:", "ipc:", "uts:", "net:", "mnt:",
                                 "user:", "/")) for t in fds.values()), fds
        assert sum(t.startswith("socket:") for t in fds.values()) == 1, fds
        fds, extra = held("dumpable-entry")  # as it was: the caller's and the host's kept
        assert fds.get(extra) == "/dev/null", fds
        # Into a pid namespace, entering kept the host's; a trace jail's is the host's own.
        assert (host_pidns in fds.values()) == (backend == "ns"), fds


def test_accounts_are_parsed_beneath_the_root_and_bounded(tmp_path):
    """The parser on plain files (no jail needed): glibc files-module rules, ".." and
    absolute symlinks clamped at the root, a size bound."""
    from hyjail import accounts
    from hyjail.errors import SetupError
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "passwd").write_text(
        "# comment\n+nis\ndave:x:501:502:Dave D:/home/dave:/bin/ash\n"
        "dave:x:9:9::/:/bin/sh\nbad:x:-1:0::/:/bin/sh\nshort:x:1\n\n")
    (root / "etc" / "passwd").symlink_to("../../../../../../../data/passwd")
    (root / "etc" / "group").write_text("wheel:x:10:eve,dave\nd:x:502:\nx:x:11:eve\n")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        table = accounts.JailAccounts(fd)
        dave = table.user("dave")
        assert dave == accounts.User("dave", 501, 502, "Dave D", "/home/dave", "/bin/ash")
        assert table.user("501") == dave and table.group_ids(dave) == (502, 10)
        assert [u.name for u in table.users()] == ["dave", "dave"]  # the malformed skipped
        assert table.user("7") == accounts.User("7", 7, 7, "", "/", "/bin/sh")
        assert table.user(None) == accounts.ROOT  # no root entry: -l still works
        with pytest.raises(SetupError, match="^bad: no such user in the jail$"):
            table.user("bad")
        (root / "etc" / "group").write_bytes(b"g:x:1:\n" * (accounts.MAX_BYTES // 7 + 1))
        with pytest.raises(SetupError, match="/etc/group is larger than 4 MiB"):
            accounts.JailAccounts(fd).groups()
    finally:
        os.close(fd)


def _on_a_terminal(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """argv run with a pty as its terminal (as a user at a console would); (status, screen)."""
    import fcntl
    import select
    import termios
    master, slave = os.openpty()
    try:
        process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                   start_new_session=True, env=env,
                                   preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        slave = -1
        screen = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    data = os.read(master, 4096)
                except OSError:  # every slave closed: done
                    break
                if not data:
                    break
                screen += data
            elif process.poll() is not None:
                break
        try:
            status = process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        return status, screen.decode(errors="replace")
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


@needs("R1:kernel")  # the jail's own devpts
def test_jexec_on_a_terminal_takes_the_jails_devpts_by_descriptor(fresh_root):
    """Jailed root points /dev/ptmx at a file of its own: jexec on a terminal still gets a
    pty of the jail's devpts (never opening what /dev/ptmx names with host powers)."""
    script = guard("entryj") + """
        rm -f /dev/ptmx && : > /tmp/not-a-ptmx && ln -s /tmp/not-a-ptmx /dev/ptmx
        echo planted; exec sleep 100"""
    with running("run", "--name", "ptyj", fresh_root, "entryj", "127.0.0.1", "/bin/sh", "-c",
                 script) as jail:
        assert jail.stdout.readline() == "planted\n", jail.stderr.read()
        status, screen = _on_a_terminal([*JEXEC, "ptyj", "/bin/sh", "-c", "tty; echo done"])
        assert status == 0 and "/dev/pts/" in screen and "done" in screen, screen


FIRST_BEFORE_GO = SHOW_FDS + textwrap.dedent("""
    import hyjail.trace.supervisor as supervisor
    from hyjail.cli import main
    original = supervisor.Tracing.__init__

    def listed(self, spec, plan, registry, record, first, *args, **kwargs):
        show_fds(first)  # the trace jail's first process, chrooted, waiting for GO
        original(self, spec, plan, registry, record, first, *args, **kwargs)

    supervisor.Tracing.__init__ = listed
    extra = os.open("/dev/null", os.O_RDONLY)  # a descriptor of the caller's, inheritable
    os.set_inheritable(extra, True)
    main(["run", "--backend", "trace", *sys.argv[1:]])
""")


@needs("backend:trace")
def test_a_trace_jails_first_process_holds_nothing_of_the_supervisors(fresh_root):
    def held(weaken: str | None) -> dict[int, str]:
        result = _run([sys.executable, "-c", FIRST_BEFORE_GO, fresh_root, "tj", "127.0.0.1",
                       "/bin/true"], weaken=weaken)
        assert result.returncode == 0, result.stderr
        line = next(line for line in result.stderr.splitlines() if line.startswith("{"))
        return {fd: t for fd, t in eval(line).items() if fd > 2}  # noqa: S307

    fds = held(None)
    assert len(fds) == 1 and next(iter(fds.values())).startswith("socket:"), fds  # the channel
    assert "/dev/null" in held("dumpable-entry").values()
