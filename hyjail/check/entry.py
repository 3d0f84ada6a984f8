"""The escape battery's entry group: the drivers of the attempts on the host's own way into a
jail (SPEC section 1, "The entry path"), where the host must act while the jail attacks.

Owns, for each such attempt, the host's side: a persistent jail whose root plants an NSS module
before `jexec -u root` and `jexec -l`; a /proc scanner in a persistent jail while 200 jexecs
enter it; a jail swapping a shared root's dev, proc and tmp for symlinks to a host directory
while jails start on that root, and the root itself before a jexec into a jail on it; a jail
swapping a directory of its tree, which the host binds into other jails, for a symlink to a
host directory while they start; a fake
network helper, run as nobody, holding the helper's rendezvous before a veth jail starts
(`hyjail.check.impostor`); an allow-all BPF planted under every name of the filter cache
before a jail starts (and the cache restored after). Each driver returns the answers its
attempt's judge reads (`hyjail.check.attempts`), and cleans up what it made, also when it
fails.

What the jails write is read here as data only: the NSS module's records through descriptors
opened beneath the attempt's own root, never following a symlink; hjprobe's output as text.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from hyjail.check import probes
from hyjail.check.attempts import Attempt
from hyjail.check.jailrun import (
    HYJAIL,
    NotRun,
    error_lines,
    finish,
    held,
    readline,
    results,
    run,
    scaled,
)

if TYPE_CHECKING:
    from hyjail.check.ground import Ground

JEXECS = 200  # the scanner's race, as issue 13 found it
STARTS = 20  # jails started on the root being swapped, at most (a weakened one gave way
# within the first four, every time here)
# What the hostile jail swaps, in turn (dev most often: its set-up has the most steps), and
# its pauses: up to 400,000 turns of a loop with the symlink in place, three times that without.
SPIN = 400000
SWAPPED = f"dev,dev,proc,dev,dev,tmp:{SPIN}"
AT_ONCE = 4  # of those, and of the jexecs, at once (2 CPUs: more only queue)
_IMPOSTOR = [sys.executable, "-m", "hyjail.check.impostor"]


@contextlib.contextmanager
def _persistent(name: str, root: str, hostname: str, ip: str,
                options: list[str]) -> Iterator[None]:
    """A persistent jail (no command: held until stopped), stopped at the end."""
    started = subprocess.run([*HYJAIL, "run", "--persist", "--name", name, *options, root,
                              hostname, ip], capture_output=True, text=True, timeout=scaled(60),
                             stdin=subprocess.DEVNULL)
    if started.returncode != 0:
        raise NotRun((error_lines(started.stderr) or [f"exit {started.returncode}"])[-1])
    try:
        yield
    finally:
        subprocess.run([*HYJAIL, "stop", "--timeout", "5", name], capture_output=True,
                       timeout=scaled(60))


def _exec(name: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*HYJAIL, "exec", name, *argv], capture_output=True, text=True,
                          timeout=scaled(timeout), stdin=subprocess.DEVNULL)


def _refused_in_one_line(done: subprocess.CompletedProcess) -> bool:
    return done.returncode != 0 and len(error_lines(done.stderr)) == 1


def _fresh_root(ground: Ground, name: str, with_probes: bool) -> str:
    from hyjail.rootfs import busybox
    root = busybox.build(os.path.join(ground.top, name))
    if with_probes:
        probes.install(root, ground.probes)
    return root


# ---- a planted NSS module ------------------------------------------------------------------

def _nss_records(root: str) -> list[str]:
    """The module's records in root/tmp (removed as read), read beneath root: a symlink the
    jail left there is refused, never followed."""
    from hyjail import linux
    beneath = linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tmp = linux.openat2(root_fd, "tmp", os.O_RDONLY | os.O_DIRECTORY, beneath)
    finally:
        os.close(root_fd)
    found = []
    try:
        for entry in os.listdir(tmp):
            if not entry.startswith("hjnss."):
                continue
            with contextlib.suppress(OSError):
                fd = linux.openat2(tmp, entry, os.O_RDONLY | os.O_NONBLOCK, beneath)
                try:
                    found.append(os.read(fd, 256).decode(errors="replace").strip())
                finally:
                    os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=tmp)
    finally:
        os.close(tmp)
    return found


def nss_lookup(ground: Ground, argv: list[str], ctx: dict, attempt: Attempt) -> dict:
    """jexec -u root and jexec -l into a jail whose root names its own NSS module."""
    name = f"{ctx['hostname']}n"
    root = _fresh_root(ground, f"nss-{ctx['hostname']}", with_probes=False)
    answers: dict[str, str] = {}
    try:
        probes.plant_nss(root, ground.nss_module)
        with _persistent(name, root, ctx["hostname"], ctx["jail_ip"], ctx["options"]):
            for flags in (("-u", "root"), ("-l",)):
                done = _exec(*flags, name, "/bin/true")
                if done.returncode != 0 and not _refused_in_one_line(done):
                    raise NotRun(f"jexec {' '.join(flags)}: "
                                 f"{(error_lines(done.stderr) or [done.returncode])[-1]}")
                loaded = _nss_records(root)
                answers[f"jexec {' '.join(flags)}"] = \
                    f"loaded {'; '.join(loaded)}" if loaded else "not loaded"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return answers


# ---- a /proc scanner racing jexecs ---------------------------------------------------------

def host_binaries() -> set[str]:
    """dev:ino of the host's Python (what every entering process runs until it execs)."""
    found = set()
    for path in (sys.executable, os.path.realpath(sys.executable), "/proc/self/exe"):
        with contextlib.suppress(OSError):
            st = os.stat(path)
            found.add(f"{st.st_dev}:{st.st_ino}")
    return found


def proc_scanner(ground: Ground, argv: list[str], ctx: dict, attempt: Attempt) -> dict:
    name = f"{ctx['hostname']}p"
    ctx["host_binaries"] = host_binaries()
    scan = [*HYJAIL, "exec", name, "/bin/hjprobe", ctx["hostname"], "64",
            f"procscan:{int(attempt.timeout * 1000)}"]
    with _persistent(name, ground.root, ctx["hostname"], ctx["jail_ip"], ctx["options"]), \
            held(scan, "scanning=ready", "the scanner") as (scanner, _):
        with ThreadPoolExecutor(max_workers=AT_ONCE) as pool:
            done = list(pool.map(lambda _: _exec(name, "/bin/true"), range(JEXECS)))
        output, _ = finish(scanner, "stop")
    answers = results(output)
    failed = [d for d in done if d.returncode != 0]
    answers["jexecs"] = str(JEXECS - len(failed))
    if failed and not attempt.judge(answers, ctx):  # no escape to report, but not all ran
        raise NotRun(f"{len(failed)} of {JEXECS} jexecs failed: "
                     f"{(error_lines(failed[0].stderr) or [failed[0].returncode])[-1]}")
    return answers


# ---- a shared root swapped for symlinks ----------------------------------------------------

def swapped_root(ground: Ground, argv: list[str], ctx: dict, attempt: Attempt) -> dict:
    """A jail whose tree holds root R (as /r) swaps R's dev, proc and tmp with symlinks to a
    host directory while jails start on R: none may make anything there."""
    hostname, shape = ctx["hostname"], ctx["shape"]
    outer = _fresh_root(ground, f"swap-{hostname}", with_probes=True)
    shared = _fresh_root(ground, os.path.join(f"swap-{hostname}", "r"), with_probes=False)
    host_dir = os.path.join(ground.top, f"hostdir-{hostname}")
    os.mkdir(host_dir, 0o755)
    try:
        answers, _ = _starts_while_swapping(
            ctx, attempt, outer, f"/r:{host_dir}", SWAPPED,
            lambda n: [shared, f"{hostname}s{n}", shape.address(), "/bin/true"],
            escaped=lambda starts: bool(os.listdir(host_dir)))  # one escape will do
        answers["host_dir"] = ",".join(sorted(os.listdir(host_dir))) or "empty"
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
        shutil.rmtree(outer, ignore_errors=True)
    return answers


def _starts_while_swapping(ctx: dict, attempt: Attempt, outer: str, where: str, names: str,
                           argv: Callable[[int], list[str]],
                           escaped: Callable[[list[subprocess.CompletedProcess]], bool]
                           ) -> tuple[dict[str, str], list[subprocess.CompletedProcess]]:
    """A jail on `outer` runs hjprobe's swap (`where` = DIR:TARGET, `names` = NAMES[:SPIN])
    while up to STARTS jails (`hyjail run` with argv(n)) start, AT_ONCE at a time, until
    escaped(starts). Returns the swapper's answers with "starts" counted, and the starts;
    NotRun if a start neither ran nor was refused in one line, with no escape to show."""
    hostname = ctx["hostname"]
    directory, _, target = where.partition(":")
    with held([*HYJAIL, "run", *ctx["options"], outer, hostname, ctx["jail_ip"],
               "/bin/hjprobe", hostname, "64",
               f"swap:{directory}:{target}:{int(attempt.timeout * 1000)}:{names}"],
              "swapping=ready", "the swapping jail") as (swapper, _):

        def start(n: int) -> subprocess.CompletedProcess:
            return subprocess.run([*HYJAIL, "run", *ctx["options"], *argv(n)],
                                  capture_output=True, text=True, timeout=scaled(60),
                                  stdin=subprocess.DEVNULL)
        starts: list[subprocess.CompletedProcess] = []
        with ThreadPoolExecutor(max_workers=AT_ONCE) as pool:
            while len(starts) < STARTS and not escaped(starts):
                starts += pool.map(start, range(len(starts), len(starts) + AT_ONCE))
        output, _ = finish(swapper, "stop")
    answers = results(output)
    ran = sum(s.returncode == 0 for s in starts)
    refused = sum(_refused_in_one_line(s) for s in starts)
    answers["starts"] = f"{ran} ran, {refused} refused in one line"
    odd = [s for s in starts if s.returncode != 0 and not _refused_in_one_line(s)]
    if odd and not escaped(starts):
        raise NotRun(f"{len(odd)} of {len(starts)} jails neither ran nor were refused in one "
                     f"line: {(error_lines(odd[0].stderr) or [odd[0].returncode])[-1]}")
    return answers, starts


def root_swapped_before_jexec(ground: Ground, argv: list[str], ctx: dict,
                              attempt: Attempt) -> dict:
    """A jail whose tree holds root R (as /r) puts a symlink to a host directory (a busybox
    root of the host's) in R's place; then the host enters a persistent jail on R. The
    entered command must land in the jail's root, or be refused."""
    hostname, shape = ctx["hostname"], ctx["shape"]
    outer = _fresh_root(ground, f"swapr-{hostname}", with_probes=False)
    shared = _fresh_root(ground, os.path.join(f"swapr-{hostname}", "r"), with_probes=False)
    decoy = _fresh_root(ground, f"decoy-{hostname}", with_probes=False)
    name = f"{hostname}r"
    script = (f'[ "$(hostname)" = "{hostname}" ] && [ -f /etc/hyjail-root ] || exit 99; '
              f"mv /r /r.hjswap && ln -s {decoy} /r && echo swapped && read line; "
              f"rm -f /r; mv /r.hjswap /r")
    answers: dict[str, str] = {}
    try:
        with _persistent(name, shared, name, shape.address(), ctx["options"]):
            swapper = subprocess.Popen([*HYJAIL, "run", *ctx["options"], outer, hostname,
                                        ctx["jail_ip"], "/bin/sh", "-c", script],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            try:
                if readline(swapper.stdout, 30).strip() != "swapped":
                    swapper.kill()
                    raise NotRun(f"the swapping jail did not start: "
                                 f"{(error_lines(swapper.stderr.read()) or ['?'])[-1]}")
                done = _exec(name, "/bin/sh", "-c", "echo entered > /hjentered")
                swapper.stdin.write("done\n")
                swapper.stdin.flush()
                swapper.communicate(timeout=scaled(30))
            finally:
                if swapper.poll() is None:
                    swapper.kill()
                    swapper.wait()
        entered = os.path.lexists(os.path.join(decoy, "hjentered"))
        answers["decoy"] = "entered" if entered else "untouched"
        if done.returncode == 0:
            answers["jexec"] = "ran"
        elif _refused_in_one_line(done):
            answers["jexec"] = f"refused: {error_lines(done.stderr)[0]}"
        elif not entered:
            raise NotRun(f"jexec: {(error_lines(done.stderr) or [done.returncode])[-1]}")
    finally:
        for made in (outer, decoy):
            shutil.rmtree(made, ignore_errors=True)
    return answers


# ---- a bind's source swapped for a symlink -------------------------------------------------

def swapped_bind_source(ground: Ground, argv: list[str], ctx: dict, attempt: Attempt) -> dict:
    """A jail whose tree holds a directory the host binds into other jails (its /share, as
    --ro-bind's source) swaps it with a symlink to a host directory while those jails start:
    none may see the host directory."""
    hostname, shape = ctx["hostname"], ctx["shape"]
    outer = _fresh_root(ground, f"bind-{hostname}", with_probes=True)
    share = os.path.join(outer, "share")
    os.mkdir(share, 0o755)
    inner = _fresh_root(ground, os.path.join(f"bind-{hostname}", "r"), with_probes=False)
    os.mkdir(os.path.join(inner, "mnt"), 0o755)
    host_dir = os.path.join(ground.top, f"bindhost-{hostname}")
    os.mkdir(host_dir, 0o755)
    for where, marker in ((share, "hjshare"), (host_dir, "hjhostdir")):
        open(os.path.join(where, marker), "w").close()
    try:
        answers, starts = _starts_while_swapping(
            ctx, attempt, outer, f"/:{host_dir}", f"share:{SPIN}",
            lambda n: ["--ro-bind", f"{share}:/mnt", inner, f"{hostname}b{n}",
                       shape.address(), "/bin/ls", "/mnt"],
            escaped=lambda starts: any("hjhostdir" in s.stdout for s in starts))
        saw = {word for s in starts if s.returncode == 0 for word in s.stdout.split()}
        answers["bound"] = "the host's directory" if "hjhostdir" in saw else \
            "the share" if "hjshare" in saw else "nothing"
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
        shutil.rmtree(outer, ignore_errors=True)
    return answers


# ---- one jail's bind over a shared root ------------------------------------------------------

MS_SHARED = 1 << 20  # mount(2): the mount joins a peer group (what systemd makes of every one)


def binds_across_a_shared_root(ground: Ground, argv: list[str], ctx: dict,
                               attempt: Attempt) -> dict:
    """The host binds a directory of its own into one jail whose root lies on a shared mount
    (as systemd makes every mount): another jail over the same root, and the host at the
    root's place, must not see it, while that jail lives or after."""
    from hyjail import linux
    hostname, shape = ctx["hostname"], ctx["shape"]
    root = _fresh_root(ground, f"sharedroot-{hostname}", with_probes=False)
    os.makedirs(os.path.join(root, "mnt", "data"))
    host_dir = os.path.join(ground.top, f"sharedhost-{hostname}")
    os.mkdir(host_dir, 0o755)
    open(os.path.join(host_dir, "hjboundhere"), "w").close()
    answers: dict[str, str] = {}
    linux.mount(root, root, None, linux.MS_BIND)
    try:
        linux.mount(None, root, None, MS_SHARED)
        script = "echo ready $(ls /mnt/data); read x"
        with held([*HYJAIL, "run", *ctx["options"], "--ro-bind", f"{host_dir}:/mnt/data",
                   root, hostname, ctx["jail_ip"], "/bin/sh", "-c", script],
                  "ready", "the jail with the bind") as (jail, line):
            if line[1:] != ["hjboundhere"]:
                raise NotRun(f"the jail did not get its bind: it listed {line[1:]}")
            other = subprocess.run([*HYJAIL, "run", *ctx["options"], root, f"{hostname}o",
                                    shape.address(), "/bin/ls", "/mnt/data"],
                                   capture_output=True, text=True, timeout=scaled(60),
                                   stdin=subprocess.DEVNULL)
            if other.returncode != 0:
                raise NotRun((error_lines(other.stderr) or [f"exit {other.returncode}"])[-1])
            answers["other jail"] = " ".join(other.stdout.split()) or "nothing"
            answers["host"] = " ".join(os.listdir(os.path.join(root, "mnt", "data"))) or \
                "nothing"
            finish(jail, "stop")
        with open("/proc/self/mountinfo") as f:
            left = [line.split()[4] for line in f if line.split()[4].startswith(root + "/")]
        answers["after"] = " ".join(left) or "nothing"
    finally:
        linux.umount2(root, linux.MNT_DETACH)  # with anything a weakened jail left on it
        shutil.rmtree(host_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    return answers


# ---- an impersonated network helper --------------------------------------------------------

def fake_netd(ground: Ground, argv: list[str], ctx: dict, attempt: Attempt) -> dict:
    """nobody holds the helper's rendezvous first; then a veth jail starts."""
    with held([*_IMPOSTOR, "listen"], "ready", "the fake helper") as (fake, ready):
        try:
            done = subprocess.run([*_IMPOSTOR, "exec", ready[1], *argv], capture_output=True,
                                  text=True, timeout=attempt.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise NotRun(f"no answer in {attempt.timeout:.0f} s") from None
        output, _ = finish(fake, "stop", timeout=30)
    received = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    answers = results(done.stdout)
    answers["fake"] = " ".join(ready[2:])
    answers["received"] = "0" if not received else \
        f"{len(received)} connections, {sum(r['fds'] for r in received)} fds: " \
        f"{received[0]['request'][:80]}"
    if done.returncode == 0:
        answers["jail"] = "ran"
    elif _refused_in_one_line(done):
        answers["jail"] = f"refused: {error_lines(done.stderr)[0]}"
    elif not received:
        raise NotRun((error_lines(done.stderr) or [f"exit {done.returncode}"])[-1])
    return answers


# ---- a tampered filter cache ---------------------------------------------------------------

# One instruction, BPF_RET|BPF_K SECCOMP_RET_ALLOW (struct sock_filter {u16 code; u8 jt, jf;
# u32 k}): a valid program that allows every call.
ALLOW_ALL = (0x06).to_bytes(2, "little") + b"\0\0" + (0x7FFF0000).to_bytes(4, "little")


def tampered_cache(ground: Ground, argv: list[str], ctx: dict, attempt: Attempt) -> dict:
    """The same jail twice: once to have its filter cached, then with an allow-all program
    under every name in the cache. The tampered files are removed after (they are rebuilt)."""
    from hyjail import platform
    first = run(argv, attempt.timeout, [])
    cache = os.path.join(platform.cache_dir(), "filters")
    tampered = []
    try:
        for entry in os.listdir(cache) if os.path.isdir(cache) else []:
            path = os.path.join(cache, entry)
            try:  # in place (owner and mode stay root's), never through a symlink
                fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
                             | os.O_CLOEXEC)
            except OSError:
                continue  # a directory, a symlink, ...: not a cached program
            try:
                tampered.append(path)
                os.write(fd, ALLOW_ALL)
            finally:
                os.close(fd)
        if not tampered:
            raise NotRun(f"nothing in {cache} to tamper with")
        try:
            second = run(argv, attempt.timeout, [])
        except NotRun as e:
            if "refusing to run outside the jail" not in str(e):
                raise
            # The probe's own guard: a trace jail's hostname is the prefilter's to stop for,
            # so under an allow-all program the jail answered with the host's name.
            second = {"the jail": "escaped: it ran under the planted filter (its uname gave "
                                  "the host's name: hjprobe refused to act)"}
    finally:
        for path in tampered:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return {**{f"{op} (cache as built)": got for op, got in first.items()}, **second}


DRIVERS: dict[str, Callable[[Ground, list[str], dict, Attempt], dict]] = {
    "nss_lookup": nss_lookup, "proc_scanner": proc_scanner, "swapped_root": swapped_root,
    "root_swapped_before_jexec": root_swapped_before_jexec,
    "swapped_bind_source": swapped_bind_source, "fake_netd": fake_netd,
    "binds_across_a_shared_root": binds_across_a_shared_root,
    "tampered_cache": tampered_cache,
}
