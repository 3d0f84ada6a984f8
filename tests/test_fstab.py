"""The administrator's file systems in a jail: jail.conf's `mount` and `mount.fstab`
(fstab(5) lines, as FreeBSD's jail(8) takes them) and `hyjail run`'s --bind, --ro-bind and
--tmpfs, all made in the jail's own mount namespace (nothing on the host), every path
symlink-safe, every refusal one line that leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from hyjail import fstab
from hyjail.errors import SetupError
from hyjail.fstab import JailMount

from conftest import HYJAIL, hyjail, needs, needs_root, new_leaks

BIN = os.path.dirname(sys.executable)
JAIL, JEXEC = os.path.join(BIN, "jail"), os.path.join(BIN, "jexec")


# ---- parsing (no kernel) ---------------------------------------------------------------------

def lines(*text: str, root: str = "/j/root", given: str | None = None) -> list[JailMount]:
    return fstab.from_lines(text, given or root, root)


def test_fstab_lines_become_binds_and_tmpfs(tmp_path):
    source = tmp_path / "rel ease"
    source.mkdir()
    escaped = str(source).replace(" ", "\\040")
    assert lines(f"{escaped} /j/root/.bastille nullfs ro 0 0",
                 "tmpfs /j/root/tmp tmpfs rw,size=64m,mode=1777,inodes=100 0 0",
                 f"{tmp_path} /j/root/mnt none rbind,noexec",
                 "# a comment", "",
                 "devfs /j/root/dev devfs rw 0 0", "procfs /j/root/proc procfs rw") == [
        JailMount("bind", ".bastille", source=str(source), read_only=True),
        JailMount("tmpfs", "tmp", data="size=64m,mode=1777,nr_inodes=100"),
        JailMount("bind", "mnt", source=str(tmp_path), recursive=True, noexec=True),
    ]


def test_a_mount_point_is_a_host_path_within_the_jails_path(tmp_path):
    # as given (a path with a symlink on the host side, which the host resolved) or resolved
    assert lines(f"{tmp_path} /srv/web/data nullfs ro", root="/real/web",
                 given="/srv/web")[0].target == "data"
    assert lines(f"{tmp_path} /real/web/data nullfs ro", root="/real/web",
                 given="/srv/web")[0].target == "data"
    assert lines(f"{tmp_path} /mnt nullfs ro", root="/")[0].target == "mnt"  # a jail over /


@pytest.mark.parametrize("line,says", [
    ("/a /j/root/x", "/a /j/root/x: missing information"),
    ("{src} mnt nullfs ro", "mnt: not an absolute pathname"),
    ("{src} /elsewhere/x nullfs ro", "/elsewhere/x: not within the jail's path"),
    ("{src} /j/rootx nullfs ro", "/j/rootx: not within the jail's path"),
    ("{src} /j/root/../x nullfs ro", "not within the jail's path"),
    ("{src} /j/root nullfs ro", "the jail's root, /proc, /dev and /sys are hyjail's"),
    ("{src} /j/root/proc/sys nullfs ro", "hyjail's to make"),
    ("{src} /j/root/dev nullfs ro", "hyjail's to make"),
    ("/dev/sda1 /j/root/mnt ufs rw", "ufs on /j/root/mnt: a jail mounts only nullfs"),
    ("devfs /j/root/mnt devfs rw", "devfs on /j/root/mnt: the jail's own devfs is made on "
                                   "its /dev only"),
    ("{src} /j/root/mnt nullfs suid", "option suid: a jail's mounts are always nosuid"),
    ("{src} /j/root/mnt nullfs ro,sync", "option sync: not one hyjail knows"),
    ("tmpfs /j/root/mnt tmpfs size=1m;x", "tmpfs option size=1m;x: not a size or number"),
    ("relative /j/root/mnt nullfs ro", "relative: not an absolute pathname"),
    ("/nonexistent/src /j/root/mnt nullfs ro", "/nonexistent/src: No such file or directory"),
    ("/run/hyjail /j/root/mnt nullfs ro", "hyjail's own state"),
    ("/run /j/root/mnt nullfs ro", "hyjail's own state"),
    ("{src}\\9 /j/root/mnt nullfs ro", "fstab parse error"),
])
def test_bad_lines_are_one_line_naming_the_fault(tmp_path, line, says):
    with pytest.raises(SetupError) as caught:
        lines(line.format(src=tmp_path))
    assert str(caught.value).startswith("mount: ") and says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_source_with_a_symlink_on_its_path_is_refused(tmp_path):
    """A source may lie in a jail's tree, where the jail could put a symlink to any host
    directory in a component's place: no symlink is followed, even one the host made."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(SetupError, match="a symbolic link on its path .give the path it leads "
                                         f"to: {tmp_path}/real"):
        lines(f"{tmp_path}/link /j/root/mnt nullfs ro")


def test_a_fstab_file_inside_the_jails_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "fstab").write_text(f"{tmp_path} {root}/mnt nullfs ro\n")
    with pytest.raises(SetupError, match="within the jail's root"):
        fstab.from_file(str(root / "fstab"), str(root), str(root))
    (tmp_path / "outside").symlink_to(root / "fstab")  # nor through a symlink to it
    with pytest.raises(SetupError, match="within the jail's root"):
        fstab.from_file(str(tmp_path / "outside"), str(root), str(root))
    with pytest.raises(SetupError, match="nofile: No such file"):
        fstab.from_file(str(tmp_path / "nofile"), str(root), str(root))


def test_run_options_are_paths_inside_the_jail(tmp_path):
    assert fstab.from_options([f"{tmp_path}:/srv/a"], [f"{tmp_path}:/srv/b/"],
                              ["/scratch:size=8m,mode=1777"]) == [
        JailMount("bind", "srv/a", source=str(tmp_path)),
        JailMount("bind", "srv/b", source=str(tmp_path), read_only=True),
        JailMount("tmpfs", "scratch", data="size=8m,mode=1777")]
    for bad, says in ((["x"], "SRC:DST"), ([f"{tmp_path}:srv"], "not an absolute"),
                      ([f"{tmp_path}:/proc"], "hyjail's to make"),
                      ([f"{tmp_path}:/"], "hyjail's to make")):
        with pytest.raises(SetupError, match=says):
            fstab.from_options(bad, [], [])


# ---- real jails ------------------------------------------------------------------------------

def _tree(tmp_path, busybox_root: str) -> tuple[str, str]:
    """A copy of the busybox root with /mnt/data and /mnt/scratch, and a host directory to
    share (a file in it)."""
    root = str(tmp_path / "root")
    subprocess.run(["cp", "-a", busybox_root, root], check=True)
    # An empty /tmp: trace jails of other tests write into the shared root's own.
    shutil.rmtree(os.path.join(root, "tmp"))
    os.mkdir(os.path.join(root, "tmp"), 0o1777)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    for name in ("data", "scratch"):
        os.makedirs(os.path.join(root, "mnt", name))
    open(os.path.join(root, "etc", "motd"), "w").close()
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello").write_text("from the host\n")
    return root, str(share)


def _host_mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if f" {path}" in line]


@needs("backend:auto", "R1:kernel")
@needs_root
def test_jail_conf_mount_and_fstab_in_the_jails_namespace_only(tmp_path, busybox_root):
    root, share = _tree(tmp_path, busybox_root)
    table = tmp_path / "fstab"
    table.write_text(f"# the jail's fstab\ntmpfs {root}/mnt/scratch tmpfs rw,size=1m 0 0\n"
                     f"devfs {root}/dev devfs rw 0 0\n")
    conf = tmp_path / "jail.conf"
    conf.write_text(f'mnt {{ path = "{root}"; persist;\n'
                    f'  mount += "{share} {root}/mnt/data nullfs ro 0 0";\n'
                    f'  mount.fstab = "{table}"; }}\n')
    made = subprocess.run([JAIL, "-f", str(conf), "-c", "mnt"], capture_output=True, text=True)
    try:
        assert made.returncode == 0, made.stderr
        seen = subprocess.run([JEXEC, "mnt", "/bin/sh", "-c",
                               "cat /mnt/data/hello; touch /mnt/data/x; echo w > "
                               "/mnt/scratch/y && cat /mnt/scratch/y; grep /mnt /proc/mounts"],
                              capture_output=True, text=True)
        out = seen.stdout.splitlines()
        assert out[:2] == ["from the host", "w"], (seen.stdout, seen.stderr)
        assert "Read-only file system" in seen.stderr
        assert any(" /mnt/data " in line and "ro,nosuid,nodev" in line for line in out), out
        assert any(line.startswith("tmpfs /mnt/scratch tmpfs rw,nosuid,nodev") and
                   "size=1024k" in line for line in out), out
        assert _host_mounts_under(root) == []  # nothing on the host's side
        assert not os.path.exists(os.path.join(share, "x"))
    finally:
        subprocess.run([JAIL, "-r", "mnt"], capture_output=True)
    assert not os.listdir(os.path.join(root, "mnt", "scratch"))
    assert not new_leaks()


@needs("backend:auto", "R1:kernel")
@needs_root
def test_run_bind_ro_bind_and_tmpfs(tmp_path, busybox_root):
    root, share = _tree(tmp_path, busybox_root)
    done = hyjail("run", "--bind", f"{share}:/mnt/data", "--ro-bind",
                  f"{share}/hello:/etc/motd", "--tmpfs", "/mnt/scratch:size=2m,mode=1777",
                  root, "h", "127.0.0.1", "/bin/sh", "-c",
                  "echo jail > /mnt/data/from-jail; cat /etc/motd; echo x > /etc/motd; "
                  "stat -c %a /mnt/scratch")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from the host\n1777\n", done.stdout
    assert "Read-only file system" in done.stderr
    assert (tmp_path / "share" / "from-jail").read_text() == "jail\n"  # a read-write bind
    assert (tmp_path / "root" / "etc" / "motd").read_text() == ""  # under the bind: untouched
    assert not new_leaks()


@pytest.mark.parametrize("options,says", [
    (["--bind", "{share}:/mnt/none"], "mount {share} on /mnt/none: No such file or directory"),
    (["--bind", "{share}/hello:/mnt/data"], "a directory and a file"),
    (["--bind", "{root}/mnt/link:/mnt/data"], "a symbolic link on its path"),
    (["--bind", "{share}:/mnt/link"], "a symbolic link where the jail's /mnt/link is set up"),
    (["--bind", "{share}:/mnt/link/x"], "a symbolic link where the jail's /mnt/link/x"),
    (["--bind", "/run/hyjail:/mnt/data"], "hyjail's own state"),
    (["--tmpfs", "/dev/shm"], "hyjail's to make"),
])
@needs("backend:auto", "R1:kernel")
@needs_root
def test_bad_mounts_are_one_line_125_and_leave_nothing(tmp_path, busybox_root, options, says):
    root, share = _tree(tmp_path, busybox_root)
    os.symlink("/", os.path.join(root, "mnt", "link"))  # the jail's: it points at the host's /
    options = [o.format(share=share, root=root) for o in options]
    done = hyjail("run", *options, root, "h", "127.0.0.1", "/bin/true")
    assert done.returncode == 125, done.stderr
    assert done.stderr.count("\n") == 1 and says.format(share=share) in done.stderr, done.stderr
    assert os.readlink(os.path.join(root, "mnt", "link")) == "/"
    assert not new_leaks()


@needs("backend:auto", "R1:kernel")
@needs_root
def test_a_source_swapped_for_a_symlink_after_admission_is_refused(tmp_path, busybox_root):
    """The source is checked when the jail is asked for and opened again, without symlinks,
    by pid 1: a directory swapped for a symlink in between (by a jail whose tree holds it)
    is refused there, never followed into the host's tree."""
    from hyjail.spec import JailSpec
    from hyjail.supervisor import run
    root, share = _tree(tmp_path, busybox_root)
    spec = JailSpec.create(root, "h", "127.0.0.1", ["/bin/ls", "/mnt/data"],
                           mounts=fstab.from_options([f"{share}:/mnt/data"], [], []))
    os.rename(share, share + ".aside")
    os.symlink("/", share)
    with pytest.raises(SetupError, match=f"{share}: a symbolic link on its path now"):
        run(spec)
    assert not new_leaks()


REGISTRY_ROOTS = "/run/hyjail/roots"  # trace jails' copies of their roots (ns/mounts.py)


def _mounted_under(path: str) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(path + "/")]


@needs("backend:trace")
@needs_root
@pytest.mark.parametrize("shared", [False, True], ids=["private", "shared"])
def test_a_trace_jails_mounts_are_on_a_copy_of_its_root_of_its_own(tmp_path, busybox_root,
                                                                   shared):
    """A chroot has no mount namespace: its root is bound at a directory of the registry's,
    its mounts made beneath that copy (nothing where the root lies, nothing another jail
    over it sees), and the copy detached at its end; jailed root cannot unmount them.
    shared: the root on a shared mount, as systemd makes every mount (the copy was in its
    peer group, so the jail's mounts showed, and stayed, where the root lies)."""
    root, share = _tree(tmp_path, busybox_root)
    if shared:
        subprocess.run(["mount", "--bind", root, root], check=True)
        subprocess.run(["mount", "--make-shared", root], check=True)
    try:
        _a_trace_jails_mounts_on_its_copy(root, share)
    finally:
        if shared:
            subprocess.run(["umount", "-l", root], check=True)
    assert not new_leaks()


def _a_trace_jails_mounts_on_its_copy(root: str, share: str) -> None:
    script = ("cat /mnt/data/hello; touch /mnt/data/x 2>/dev/null || echo ro; "
              "echo s > /mnt/scratch/s && echo scratch; umount /mnt/data 2>/dev/null || "
              "echo kept; read go")
    first = subprocess.Popen([*HYJAIL, "run", "--backend", "trace", "--ro-bind",
                              f"{share}:/mnt/data", "--tmpfs", "/mnt/scratch", root, "h",
                              "127.0.0.1", "/bin/sh", "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = [first.stdout.readline() for _ in range(4)]  # its mounts are made
        assert said == ["from the host\n", "ro\n", "scratch\n", "kept\n"], said
        # A second jail over the same root meanwhile: without the first one's mounts.
        other = hyjail("run", "--backend", "trace", root, "h2", "127.0.0.1", "/bin/ls",
                       "/mnt/data")
        assert other.returncode == 0 and other.stdout == "", other
        assert _mounted_under(root) == []
        out, err = first.communicate("go\n", timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert (first.returncode, out) == (0, ""), err
    assert _mounted_under(REGISTRY_ROOTS) == []
    assert _mounted_under(root) == []
    assert os.listdir(os.path.join(root, "mnt", "scratch")) == []


@needs("backend:trace")
@needs_root
def test_gc_detaches_what_a_killed_trace_supervisor_left(tmp_path, busybox_root):
    root, share = _tree(tmp_path, busybox_root)
    jail = subprocess.Popen([*HYJAIL, "run", "--backend", "trace", "--bind",
                             f"{share}:/mnt/data", root, "h", "127.0.0.1", "/bin/sleep", "60"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while len(_mounted_under(REGISTRY_ROOTS)) < 2:  # the copy, its bind
            assert time.monotonic() < deadline and jail.poll() is None
            time.sleep(0.05)
        jail.kill()  # the supervisor: nothing undoes its mounts now
        jail.wait()
        assert _mounted_under(REGISTRY_ROOTS)
        assert hyjail("gc").returncode == 0
        assert _mounted_under(REGISTRY_ROOTS) == []
    finally:
        jail.kill()
        jail.wait()
    assert not new_leaks()


@needs("backend:auto", "R1:kernel", "mount_setattr")
@needs_root
def test_read_only_root_keeps_tmp_writable_and_binds_as_asked(tmp_path, busybox_root):
    root, share = _tree(tmp_path, busybox_root)
    os.makedirs(os.path.join(root, "run"))
    done = hyjail("run", "--read-only", "--bind", f"{share}:/mnt/data", "--tmpfs",
                  "/var/tmp:size=1m", root, "h", "127.0.0.1", "/bin/sh", "-c",
                  "touch /etc/x || echo etc-ro; touch /tmp/y /run/y && echo tmp-run-rw; "
                  "echo w > /mnt/data/w && echo bind-rw; grep ' /var/tmp ' /proc/mounts")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["etc-ro", "tmp-run-rw", "bind-rw"], (done.stdout, done.stderr)
    assert "size=1024k" in lines[3]  # the administrator's own tmpfs, not ours
    assert not os.path.exists(os.path.join(root, "etc", "x"))
    assert not os.listdir(os.path.join(root, "tmp")) and (tmp_path / "share" / "w").exists()
    assert not new_leaks()


@needs("backend:trace", "mount_setattr")
@needs_root
def test_a_trace_jails_read_only_root_is_a_read_only_copy_on_the_host(tmp_path, busybox_root):
    """A chroot's read-only root: a read-only copy of its tree (under the registry's
    directory), with fresh tmpfs on /tmp and /run; the root itself stays writable for the
    host; all gone after."""
    root, share = _tree(tmp_path, busybox_root)
    os.makedirs(os.path.join(root, "run"))
    done = hyjail("run", "--backend", "trace", "--read-only", "--bind", f"{share}:/mnt/data",
                  root, "h", "127.0.0.1", "/bin/sh", "-c",
                  "touch /etc/x 2>/dev/null || echo etc-ro; touch /tmp/y /run/y && "
                  "echo tmp-run-rw; echo w > /mnt/data/w && echo bind-rw")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["etc-ro", "tmp-run-rw", "bind-rw"], done.stdout
    assert _mounted_under(root) == [] and not os.listdir(os.path.join(root, "tmp"))
    assert not os.path.exists(os.path.join(root, "etc", "x"))
    assert (tmp_path / "share" / "w").exists()
    assert not new_leaks()


@needs("backend:auto", "R1:kernel", "R3:kernel")
@needs_root
def test_dns_gives_the_jail_its_own_resolv_conf_and_a_far_one_is_told(tmp_path, busybox_root):
    root, _ = _tree(tmp_path, busybox_root)
    resolv = os.path.join(root, "etc", "resolv.conf")
    with open(resolv, "w") as f:
        f.write("# the host's\nnameserver 10.255.0.53\nnameserver 127.0.0.53\n")
    told = hyjail("run", root, "h", "127.0.0.1", "/bin/true")
    assert told.returncode == 0
    assert told.stderr.endswith("its /etc/resolv.conf names 10.255.0.53, 127.0.0.53, which it "
                                "cannot reach from its own network (--dns ADDR gives it "
                                "another)\n"), told.stderr
    own = hyjail("run", "--dns", "169.254.77.1", "--dns", "fd77::53", root, "h", "127.0.0.1",
                 "/bin/sh", "-c", "cat /etc/resolv.conf; echo x > /etc/resolv.conf")
    assert own.stdout == "nameserver 169.254.77.1\nnameserver fd77::53\n", own.stderr
    assert "Read-only file system" in own.stderr and "cannot reach" not in own.stderr
    with open(resolv) as f:
        assert f.read().startswith("# the host's")  # the root's own is never changed
    os.unlink(resolv)
    missing = hyjail("run", "--dns", "169.254.77.1", root, "h", "127.0.0.1", "/bin/true")
    assert missing.returncode == 125 and "not a file to put the jail's own" in missing.stderr
    assert not new_leaks()
