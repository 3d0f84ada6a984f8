"""The jail's mounts on a root someone else can write (issue 13, findings 3 and 7): a symlink
where a mount target should be is refused in one line, a root swapped under a starting jail
never makes it write into the host's tree, the /proc and /sys parts other runtimes mask are
masked, and a jail over `/` can neither read nor write the host's state (registry, cache)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import pytest

from hyjail.errors import SetupError
from hyjail.linux import CLONE_NEWNS, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, unshare
from hyjail.ns import mounts
from hyjail.platform import CACHE_DIR
from hyjail.rootfs import busybox

from conftest import guard, hyjail, needs, needs_jails, running

pytestmark = needs_jails
# The kernel's R1: the jail's root bound and pivoted into in a mount namespace of its own, with
# its own /proc, /dev and /sys mounted on it (a chroot mounts nothing).
kernel_r1 = needs("R1:kernel")

# Swaps two names for ever, atomically (renameat2's RENAME_EXCHANGE), as fast as it can: the
# attacker of a shared root. It refuses to act unless it is inside the jail it was given.
SWAPPER = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct utsname names;
    if (argc != 4 || uname(&names) != 0 || strcmp(names.nodename, argv[1]) != 0
            || access("/etc/hyjail-root", F_OK) != 0) {
        fprintf(stderr, "refusing: not inside jail\n");
        return 99;
    }
    puts("swapping");
    fflush(stdout);
    for (;;)
        syscall(SYS_renameat2, AT_FDCWD, argv[2], AT_FDCWD, argv[3], 2 /* RENAME_EXCHANGE */);
}
"""


@pytest.fixture(scope="module")
def swapper(tmp_path_factory) -> str:
    where = tmp_path_factory.mktemp("swapper")
    source, binary = where / "swap.c", where / "hjswap"
    source.write_text(SWAPPER)
    built = subprocess.run(["gcc", "-static", "-O2", "-o", str(binary), str(source)],
                           capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"cannot build the swapper (needs gcc and libc6-dev): {built.stderr}")
    return str(binary)


def _host_dir(tmp_path) -> str:
    host = tmp_path / "host"
    host.mkdir()
    return str(host)


def _one_line_refusal(result: subprocess.CompletedProcess, *named: str) -> None:
    assert result.returncode == 125, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("hyjail: "), result.stderr
    for name in named:
        assert name in result.stderr


# ---- (a) a symlink where a mount target should be ---------------------------------------

@kernel_r1
@pytest.mark.parametrize("name", ["dev", "proc", "sys"])
def test_a_symlink_where_a_mount_goes_is_refused_in_one_line(tmp_path, name):
    root = busybox.build(str(tmp_path / "root"))
    host = _host_dir(tmp_path)
    target = os.path.join(root, name)
    os.rename(target, target + ".real")
    os.symlink(host, target)
    result = hyjail("run", root, "linked", "127.0.0.1", "/bin/sh", "-c", "true")
    _one_line_refusal(result, target)
    assert os.listdir(host) == []


def _carry_out_in_a_mount_namespace(ops: list[mounts.Operation]) -> str:
    """Carry ops out in a child of our own, in a mount namespace of its own (gone with it);
    returns "done" or the SetupError's message."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        answer = b"done"
        try:
            unshare(CLONE_NEWNS)
            mounts.carry_out(ops)
        except SetupError as e:
            answer = str(e).encode()
        except BaseException as e:  # noqa: BLE001 -- any failure is the parent's to report
            answer = f"unexpected: {type(e).__name__}: {e}".encode()
        finally:
            os.write(write, answer)
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        answer = f.read().decode()
    os.waitpid(pid, 0)
    return answer


@needs("ns.mnt")  # carried out in a mount namespace of the test's own
def test_a_symlink_where_the_host_state_mask_goes_is_refused(tmp_path):
    # A tree that holds the registry's directory (as `/` does) with a symlink in its place.
    root = busybox.build(str(tmp_path / "root"))
    host = _host_dir(tmp_path)
    os.makedirs(os.path.join(root, "run"), exist_ok=True)
    os.symlink(host, os.path.join(root, "run/hyjail"))
    staging = tmp_path / "state" / mounts.STAGING_NAME
    ops = [mounts.BindRoot(root, str(staging)),
           mounts.Mount("tmpfs", "run/hyjail", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
                        "size=4k")]
    answer = _carry_out_in_a_mount_namespace(ops)
    assert answer.startswith("jail setup: ") and "refused" in answer, answer
    assert os.path.join(root, "run/hyjail") in answer
    assert os.listdir(host) == []


@needs("ns.mnt")  # carried out in a mount namespace of the test's own
def test_a_root_whose_path_gains_a_symlink_after_admission_is_refused(tmp_path):
    real = busybox.build(str(tmp_path / "real"))
    os.symlink(real, tmp_path / "link")
    staging = tmp_path / "state" / mounts.STAGING_NAME
    answer = _carry_out_in_a_mount_namespace([mounts.BindRoot(str(tmp_path / "link"),
                                                              str(staging))])
    assert answer.startswith(f"jail setup: {tmp_path / 'link'}: ") and "refused" in answer, answer


# ---- (b) a shared root swapped while jails start on it -----------------------------------

def _starts_on_a_root_being_swapped(tmp_path, swapper: str, env: dict[str, str], starts: int
                                    ) -> tuple[str, list[subprocess.CompletedProcess]]:
    """A jail whose root holds another jail's root (`inner`) swaps inner's `dev` with a
    symlink to a host directory, atomically and without pause, while the host starts jails
    on inner. Returns the host directory and the starts' results."""
    outer = busybox.build(str(tmp_path / "outer"))
    inner = busybox.build(os.path.join(outer, "inner"))
    host = _host_dir(tmp_path)
    os.symlink(host, os.path.join(inner, "devlink"))
    shutil.copy(swapper, os.path.join(outer, "bin/hjswap"))
    script = guard("swapper") + "exec /bin/hjswap swapper /inner/dev /inner/devlink"
    results = []
    with running("run", outer, "swapper", "127.0.0.1", "/bin/sh", "-c", script) as attacker:
        assert attacker.stdout.readline() == "swapping\n", attacker.stderr.read()
        for _ in range(starts):
            results.append(hyjail("run", inner, "victim", "127.0.0.1", "/bin/sh", "-c", "true",
                                  env={**os.environ, **env}))
    return host, results


@kernel_r1
def test_jails_started_on_a_root_being_swapped_never_write_the_host(tmp_path, swapper):
    host, results = _starts_on_a_root_being_swapped(tmp_path, swapper, {}, 30)
    assert os.listdir(host) == []
    for result in results:
        if result.returncode != 0:
            _one_line_refusal(result)
    assert any(result.returncode == 125 for result in results), "the race never showed"


@kernel_r1
def test_the_race_writes_the_host_when_mounts_follow_symlinks(tmp_path, swapper):
    # The weakening keeps the behaviour before issue 13 (paths looked up by name): the same
    # race then plants the jail's device nodes in the host's directory.
    host, _ = _starts_on_a_root_being_swapped(
        tmp_path, swapper, {"HYJAIL_UNSAFE_WEAKEN": "follow-symlinks"}, 30)
    assert os.listdir(host) != []


# ---- finding 7: what /proc and /sys tell of the host ----------------------------------------

# The list, as far as this kernel has them.
LEAKY = [name for name in ("slabinfo", "vmallocinfo", "pagetypeinfo", "kpagecount",
                           "kpageflags", "kpagecgroup", "config.gz", "cmdline", "interrupts")
         if os.path.exists(f"/proc/{name}")]


def _sizes_inside(root: str, env: dict[str, str] | None = None) -> dict[str, int]:
    script = guard("peek") + "".join(f'echo "{name} $(cat /proc/{name} | wc -c)"; '
                                     for name in LEAKY)
    result = hyjail("run", root, "peek", "127.0.0.1", "/bin/sh", "-c", script,
                    env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return {name: int(size) for name, size in (line.split() for line in result.stdout.split("\n")
                                                if line)}


@needs("R1:kernel", "R4:kernel")  # the jail's own /proc
def test_proc_files_other_runtimes_mask_read_empty(busybox_root):
    assert LEAKY, "this kernel has none of the files"
    assert _sizes_inside(busybox_root) == dict.fromkeys(LEAKY, 0)


@needs("R1:kernel", "R4:kernel")  # the jail's own /proc
def test_unmasked_proc_weakening_shows_them(busybox_root):
    sizes = _sizes_inside(busybox_root, {"HYJAIL_UNSAFE_WEAKEN": "unmasked-proc"})
    assert sizes["slabinfo"] > 0 and sizes["cmdline"] > 0


def test_masked_lists_cover_runc_and_podman():
    # runc's libcontainer/specconv example and podman's containers-common defaults.
    runc_masked = {"acpi", "asound", "kcore", "keys", "latency_stats", "timer_list",
                   "timer_stats", "sched_debug", "scsi"}
    podman_masked = {"acpi", "kcore", "keys", "latency_stats", "sched_debug", "scsi",
                     "timer_list", "timer_stats", "interrupts"}
    read_only = {"bus", "fs", "irq", "sys", "sysrq-trigger"}  # both; podman adds asound
    assert runc_masked | podman_masked <= set(mounts.PROC_MASKED)
    assert read_only <= set(mounts.PROC_READ_ONLY)
    assert {"firmware", "devices/virtual/powercap", "devices/virtual/tpm",
            "fs/selinux"} <= set(mounts.SYS_MASKED)


@kernel_r1
def test_sys_firmware_is_masked(busybox_root):
    if not os.path.isdir("/sys/firmware"):
        pytest.skip("this host has no /sys/firmware")
    result = hyjail("run", busybox_root, "peek", "127.0.0.1", "/bin/sh", "-c",
                    guard("peek") + "ls -A /sys/firmware | wc -l")
    assert (result.returncode, result.stdout) == (0, "0\n"), result.stderr


# ---- host state in a jail over / ---------------------------------------------------------

def _cache_inside(env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    script = guard("cachejail", marker=False) + f"ls -A {CACHE_DIR}; echo end; "
    if not env:  # never try to write the real cache from a jail weakened to reach it
        script += f"touch {CACHE_DIR}/planted 2>/dev/null && echo WROTE; exit 0"
    return hyjail("run", "/", "cachejail", "127.0.0.1", "/bin/sh", "-c", script,
                  env={**os.environ, **(env or {})})


@kernel_r1
def test_a_jail_over_the_host_cannot_see_or_write_the_cache():
    assert os.listdir(CACHE_DIR), "the probe's cache should exist by now"
    planted = os.path.join(CACHE_DIR, "planted")
    try:
        result = _cache_inside()
        assert not os.path.exists(planted)
    finally:
        with contextlib.suppress(FileNotFoundError):  # a jail that could write it did
            os.unlink(planted)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "end\n"


@kernel_r1
def test_unchecked_cache_weakening_leaves_it_visible():
    result = _cache_inside({"HYJAIL_UNSAFE_WEAKEN": "unchecked-cache"})
    assert result.returncode == 0, result.stderr
    assert result.stdout != "end\n"


@kernel_r1
def test_a_jail_over_the_host_cannot_see_the_registry():
    result = hyjail("run", "/", "regjail", "127.0.0.1", "/bin/sh", "-c",
                    guard("regjail", marker=False) + "ls -A /run/hyjail; echo end")
    assert (result.returncode, result.stdout) == (0, "end\n"), result.stderr


@needs("backend:trace")
def test_a_chroot_over_hyjails_own_state_is_refused():
    """A trace jail has no mount namespace to mask /var/cache/hyjail (or /run/hyjail) where its
    root holds it: the start is refused, naming it (R1), rather than leave the cache to root
    inside. Under the unchecked-cache weakening the same root is let through."""
    made = [d for d in ("/var/cache/proc", "/var/cache/dev") if not os.path.lexists(d)]
    try:
        for d in made:
            os.mkdir(d)
        refused = hyjail("run", "--backend", "trace", "/var/cache", "tj", "127.0.0.1", "/bin/true")
        assert refused.returncode == 125
        assert refused.stderr == ("hyjail: R1 (root): /var/cache/hyjail is hyjail's own state, "
                                  "inside the jail's root, and a chroot cannot hide it\n")
        weakened = hyjail("run", "--backend", "trace", "/var/cache", "tj", "127.0.0.1",
                          "/bin/true",
                          env={**os.environ, "HYJAIL_UNSAFE_WEAKEN": "unchecked-cache"})
        assert "hyjail's own state" not in weakened.stderr
        assert weakened.returncode == 127  # let in, and the cache holds no /bin/true
    finally:
        for d in made:
            os.rmdir(d)
