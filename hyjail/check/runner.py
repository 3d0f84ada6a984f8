"""Running the escape battery: each attempt in a fresh jail of its own, judged from both sides.

Owns: the battery's ground on the host (a busybox root with the probes, a secret beside it,
a stopped host process, a persistent jail whose process others must not reach, and per
attempt its listeners and leaked descriptors), the jail shapes to run on (`--backend all`:
ns, trace and auto, each as this host's plan makes it; a hybrid jail is labelled so, e.g.
"auto/hybrid"; a backend whose plan makes the same jail as one already listed is noted, not
run twice; one the host cannot run is noted with the plan's refusal and its rows skipped),
each attempt's `hyjail run` as a user would type it (over the battery's root, or over `/`),
the drivers for attempts where the host acts mid-way (the entry group's in
`hyjail.check.entry`), the order (attempts that change what every jail loads run alone, after
the rest), the verdict of each row: held, ESCAPED, skipped (with the host's reason) or error
(the jail did not run), and the outcome as a whole (`Outcome`: the shapes and the rows, which
`hyjail.check.report` judges).

Network safety (SPEC section 4): jails get 10.77.200.0/22 behind their own veths (host end
10.77.199.1, /32 routes) or, without a network namespace, 127.77.200.0/22 on the host's
loopback; the only peers are listeners this module opens for the attempt.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from hyjail import weaken
from hyjail.check import attempts, entry
from hyjail.check.attempts import Attempt
from hyjail.check.ground import Ground
from hyjail.check.jailrun import HYJAIL, scaled, slowness
from hyjail.check.jailrun import NotRun as _NotRun
from hyjail.check.jailrun import readline as _readline
from hyjail.check.jailrun import results as _results
from hyjail.check.jailrun import run as _run
from hyjail.linux import descendants, process_start_time

VETH_HOST_IP = "10.77.199.1"


@dataclass
class Row:
    rule: str
    attempt: str
    abi: str
    backend: str
    result: str  # held, ESCAPED, skipped, error
    detail: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"rule": self.rule, "attempt": self.attempt, "abi": self.abi,
                "backend": self.backend, "result": self.result, "detail": self.detail,
                "seconds": round(self.seconds, 3)}


@dataclass
class Shape:
    """One backend as this host runs it: how its jails are started and addressed."""
    backend: str  # what --backend asks for
    kind: str  # what the plan makes of it: ns, hybrid, trace
    veth: bool  # the kernel holds R3: jails get a veth
    other_pid: int | None = None  # a process of another jail of this shape

    @property
    def label(self) -> str:
        """The BACKEND column: the backend asked for, and what the plan makes of it where
        the two differ ("auto/hybrid", "auto/trace")."""
        return self.backend if self.backend == self.kind else f"{self.backend}/{self.kind}"

    def __post_init__(self) -> None:
        prefix = "10.77" if self.veth else "127.77"
        self._addresses = (f"{prefix}.{200 + n // 250}.{2 + n % 250}" for n in itertools.count())
        self._lock = threading.Lock()

    def address(self) -> str:
        with self._lock:
            return next(self._addresses)

    def run_options(self) -> list[str]:
        options = ["--backend", self.backend]
        return [*options, "--host-ip", VETH_HOST_IP] if self.veth else options

    def placeholders(self) -> dict:
        if self.veth:
            return {"peer_ip": VETH_HOST_IP, "other_ip": "10.77.199.250", "device": "eth0"}
        return {"peer_ip": "127.77.199.1", "other_ip": "127.0.0.2", "device": "lo"}


class Listeners:
    """The host-side sockets an attempt asked for, and what reached them."""

    def __init__(self, wanted: tuple[str, ...]):
        self.sockets: dict[str, socket.socket] = {}
        for name in wanted:
            made = {"local_tcp": lambda: _listener(socket.AF_INET, "127.0.0.1"),
                    "local_tcp6": lambda: _listener(socket.AF_INET6, "::1"),
                    "peer_tcp": lambda: _listener(socket.AF_INET, "0.0.0.0"),
                    "peer_udp": lambda: _listener(socket.AF_INET, "0.0.0.0", socket.SOCK_DGRAM),
                    }.get(name)
            if made:
                self.sockets[name] = made()
            elif name == "abstract_unix":  # the host's abstract names: a stream, a datagram
                for key, kind in (("abstract", socket.SOCK_STREAM),
                                  ("abstract_dgram", socket.SOCK_DGRAM)):
                    self.sockets[key] = _abstract_listener(kind)
        self.queue = _host_queue() if "host_mqueue" in wanted else None

    def ports(self) -> dict[str, int | str]:
        """Each listener's port, or for an abstract unix one its name (without the NUL);
        the host's message queue's name (without its slash, as mq_open(2) takes it)."""
        found: dict[str, int | str] = {
            name: s.getsockname()[1] if s.family != socket.AF_UNIX
            else s.getsockname()[1:].decode() for name, s in self.sockets.items()}
        if self.queue:
            found["host_mqueue"] = self.queue[0]
        return found

    def observed(self) -> dict:
        seen: dict = {"peer_saw": [], "local_reached": False, "abstract_reached": False}
        for name, s in self.sockets.items():
            while True:
                try:
                    if s.type == socket.SOCK_DGRAM:
                        _, source = s.recvfrom(64)
                    else:
                        connection, source = s.accept()
                        connection.close()
                except BlockingIOError:
                    break
                if name.startswith("abstract"):
                    seen["abstract_reached"] = True
                elif name.startswith("local"):
                    seen["local_reached"] = True
                else:
                    seen["peer_saw"].append(source[0])
        return seen

    def close(self) -> None:
        for s in self.sockets.values():
            s.close()
        if self.queue:
            name, fd = self.queue
            os.close(fd)
            _libc().mq_unlink(f"/{name}".encode())


def _libc():
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def _host_queue() -> tuple[str, int]:
    """A POSIX message queue of the host's IPC namespace, for a jail to try to open."""
    import ctypes
    name = f"hjcheck-{os.getpid()}-{next(_abstract_names)}"
    libc = _libc()
    libc.mq_open.restype = ctypes.c_int
    fd = libc.mq_open(f"/{name}".encode(), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600, None)
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"mq_open /{name}")
    return name, fd


_abstract_names = itertools.count()


def _abstract_listener(kind: int) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(f"\0hjcheck-{os.getpid()}-{next(_abstract_names)}".encode())
    if kind == socket.SOCK_STREAM:
        s.listen(64)
    s.setblocking(False)
    return s


def _listener(family: int, address: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    s = socket.socket(family, kind)
    s.bind((address, 0))
    if kind == socket.SOCK_STREAM:
        s.listen(64)
    s.setblocking(False)
    return s


def race_rounds(slow: float) -> dict[str, int]:
    """Each race's rounds on a host `slow` times slower. Not shortened for a deliberately
    weakened jail: that run is the proof that an attempt escapes, and a shortened race may
    lose every round (80 fd swaps did, even on a host of normal speed)."""
    if os.environ.get(weaken.VARIABLE):
        slow = 1.0
    return {"race_rounds": max(200, int(attempts.RACE_ROUNDS / slow)),
            "swap_rounds": max(50, int(attempts.SWAP_ROUNDS / slow))}


class Battery:
    def __init__(self, ground: Ground, slow: float = 1.0):
        self.ground = ground
        self.slow = slow

    def skip_reason(self, attempt: Attempt, abi: str, shape: Shape, host: dict) -> str | None:
        if shape.kind not in attempt.only:
            return attempt.unheld or f"not a {shape.kind} jail's concern"
        if abi in ("int80", "int80s") and not host["abi.i386"]:
            return f"the host has no i386 ABI ({host['abi.i386.detail']})"
        if abi == "32" and not self.ground.probes.get("hjprobe32"):
            return "no 32-bit libc here to build hjprobe32 (Debian: gcc-multilib)"
        if "local_tcp6" in attempt.host and not host["ipv6"]:
            return "the host has no IPv6 loopback"
        if "other_jail" in attempt.host and shape.other_pid is None:
            return "no second jail could be started"
        if attempt.key.startswith("R1 open_by_handle_at") and not self.ground.handle:
            return "the host's file system gives no file handles"
        if "veth" in attempt.host and not shape.veth:  # the helper, or raw sockets, need one
            return "no network namespace here (the kernel does not hold R3)"
        if "nss_module" in attempt.host and not self.ground.nss_module:
            return "gcc cannot build a shared library here (the planted NSS module)"
        return None

    def run(self, attempt: Attempt, abi: str, shape: Shape, host: dict) -> Row:
        row = Row(attempt.rule, attempt.name, abi, shape.label, "held")
        skip = self.skip_reason(attempt, abi, shape, host)
        if skip:
            row.result, row.detail = "skipped", skip
            return row
        started = time.monotonic()
        if self.slow != 1:
            attempt = replace(attempt, timeout=attempt.timeout * self.slow)
        try:
            verdict = self._attempt(attempt, abi, shape)
        except _NotRun as e:
            row.result, row.detail = "error", str(e)
        except subprocess.TimeoutExpired as e:  # a driver's wait: never held, nor a crash
            command = " ".join(str(word) for word in e.cmd[-3:]) if e.cmd else "a command"
            row.result, row.detail = "error", f"no answer in {e.timeout:.0f} s: ... {command}"
        except Exception as e:  # the battery's own failure (a helper gone, a pipe closed):
            # an error row, never held, and never an end to the battery. (Left to propagate,
            # an EPIPE even ended it silently: click exits 1 without a word on one.)
            row.result, row.detail = "error", f"the attempt itself failed: " \
                                              f"{type(e).__name__}: {e}"
        else:
            if verdict:
                row.result, row.detail = "ESCAPED", verdict
        row.seconds = time.monotonic() - started
        return row

    def _attempt(self, attempt: Attempt, abi: str, shape: Shape) -> str | None:
        hostname = self.ground.hostname_for_jail()
        ip = shape.address()
        listeners = Listeners(attempt.host)
        leaked: list[int] = []
        try:
            ctx = {**self.ground.placeholders(), **shape.placeholders(), **listeners.ports(),
                   "jail_ip": ip, "hostname": hostname, "other_pid": shape.other_pid,
                   "host_hostname": self.ground.hostname, "shape": shape,
                   **race_rounds(self.slow),
                   "options": [*shape.run_options(), *attempt.options]}
            if "leaked_fds" in attempt.host:
                leaked = [os.open(self.ground.top, os.O_RDONLY | os.O_DIRECTORY),
                          os.open(self.ground.secret, os.O_RDONLY)]
            probe = "/bin/hjprobe32" if abi == "32" else "/bin/hjprobe"
            if attempt.root == "/":  # over the host's tree: the probe by its host path
                probe = os.path.join(self.ground.root, probe.lstrip("/"))
            ops = [op.format(**ctx) for op in attempt.ops]
            argv = [*HYJAIL, "run", *ctx["options"], attempt.root or self.ground.root,
                    hostname, ip, probe, hostname, "64" if abi == "32" else abi, *ops]
            if attempt.driver in entry.DRIVERS:  # the entry group's, in its own module
                results = entry.DRIVERS[attempt.driver](self.ground, argv, ctx, attempt)
            elif attempt.driver:
                results = getattr(self, f"_drive_{attempt.driver}")(argv, ctx, attempt)
            else:
                results = _run(argv, attempt.timeout, leaked)
                unanswered = [op for op in ops if op not in results]
                if unanswered:  # never judged held for want of an answer
                    raise _NotRun(f"no answer to {', '.join(unanswered)}")
            ctx.update(listeners.observed())
            ctx["host_process_woken"] = self.ground.host_process_woken()
            ctx["host_hostname_now"] = os.uname().nodename
            return attempt.judge(results, ctx) if attempt.judge else results.get("escape")
        finally:
            listeners.close()
            for fd in leaked:
                os.close(fd)

    # ---- drivers: attempts where the host acts while the jail runs ------------------------

    def _drive_moved_directory(self, argv: list[str], ctx: dict, attempt: Attempt) -> dict:
        """A jailed process sits in a directory; the host moves it out of the root; the
        process climbs '..' and reaches for the secret by its host path."""
        name = f"hjmove-{ctx['hostname']}"
        inside = os.path.join(self.ground.root, "tmp", name)
        os.makedirs(os.path.join(inside, "deep"))
        moved = os.path.join(self.ground.top, name)
        argv = [*argv[:-len(attempt.ops) or None],
                f"sitin:/tmp/{name}/deep:{ctx['secret_rel']}"]
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as jail:
            try:
                line = _readline(jail.stdout, 30)
                if line.strip() != "sitting=ready":
                    jail.kill()
                    raise _NotRun(f"the jail did not get ready: {line!r} "
                                  f"{jail.stderr.read().strip()}")
                os.rename(inside, moved)
                jail.stdin.write("go\n")
                jail.stdin.flush()
                output, errors = jail.communicate(timeout=scaled(30))
            finally:
                if jail.poll() is None:
                    jail.kill()
                shutil.rmtree(moved, ignore_errors=True)
                shutil.rmtree(inside, ignore_errors=True)
        if jail.returncode != 0:
            raise _NotRun(errors.strip() or f"exit {jail.returncode}")
        return _results(output)

    def _drive_terminal(self, argv: list[str], ctx: dict, attempt: Attempt) -> dict:
        """The attempt on a terminal: hyjail gives the jail a pty of its own."""
        master, slave = os.openpty()
        try:
            jail = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                    start_new_session=True)
            os.close(slave)
            slave = -1
            output = b""
            deadline = time.monotonic() + attempt.timeout
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.2)
                if ready:
                    try:
                        chunk = os.read(master, 4096)
                    except OSError:
                        break
                    if not chunk:
                        break
                    output += chunk
                elif jail.poll() is not None:
                    break
            jail.wait(timeout=scaled(10))
        finally:
            os.close(master)
            if slave >= 0:
                os.close(slave)
        if jail.returncode != 0:
            raise _NotRun(output.decode(errors="replace").strip() or f"exit {jail.returncode}")
        return _results(output.decode(errors="replace"))

    def _jailed_shell(self, argv: list[str], script: str) -> list[str]:
        probe_at = argv.index("/bin/hjprobe") if "/bin/hjprobe" in argv else len(argv)
        return [*argv[:probe_at], "/bin/sh", "-c", script]

    def _drive_supervisor_killed(self, argv: list[str], ctx: dict, attempt: Attempt) -> dict:
        """SIGKILL the supervisor while the jail's processes run: none may survive it."""
        argv = self._jailed_shell(argv, "sleep 600 & sleep 600 & echo up; wait")
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as jail:
            if _readline(jail.stdout, 30).strip() != "up":
                jail.kill()
                raise _NotRun(jail.stderr.read().strip() or "the jail did not start")
            jailed = descendants(jail.pid)
            jail.kill()
            jail.wait()
        survivors = _survivors(jailed, 10)
        subprocess.run([*HYJAIL, "gc"], capture_output=True, timeout=scaled(60))
        if survivors:
            return {"escape": f"{len(survivors)} jailed processes outlived their supervisor"}
        return {}

    def _drive_command_exits(self, argv: list[str], ctx: dict, attempt: Attempt) -> dict:
        """The command exits, leaving a background process: the jail ends with it."""
        argv = self._jailed_shell(argv, "sleep 600 & echo up; read line")
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as jail:
            if _readline(jail.stdout, 30).strip() != "up":
                jail.kill()
                raise _NotRun(jail.stderr.read().strip() or "the jail did not start")
            jailed = descendants(jail.pid)
            jail.stdin.write("done\n")
            jail.stdin.flush()
            jail.wait(timeout=scaled(30))
        survivors = _survivors(jailed, 10)
        if survivors:
            return {"escape": f"{len(survivors)} processes outlived the jail's command"}
        return {}

    def _drive_identity(self, argv: list[str], ctx: dict, attempt: Attempt) -> dict:
        """While the jail runs, `hyjail ps` maps its processes to its JID and `jls` lists it."""
        argv = self._jailed_shell(argv, "echo up; read line")
        name_at = argv.index(ctx["hostname"])
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as jail:
            try:
                if _readline(jail.stdout, 30).strip() != "up":
                    raise _NotRun(jail.stderr.read().strip() or "the jail did not start")
                jailed = {pid for pid, _ in descendants(jail.pid)}
                listed = json.loads(subprocess.run([*HYJAIL, "ls", "--json"], capture_output=True,
                                                   text=True, timeout=scaled(30)).stdout)
                mine = [j for j in listed if j["hostname"] == argv[name_at]]
                ps = json.loads(subprocess.run([*HYJAIL, "ps", "--json"], capture_output=True,
                                               text=True, timeout=scaled(30)).stdout)
            finally:
                jail.stdin.write("done\n")
                jail.stdin.flush()
                jail.wait(timeout=scaled(30))
        if len(mine) != 1:
            return {"escape": "the jail is missing from hyjail ls"}
        mapped = {p["pid"] for p in ps if p["jid"] == mine[0]["jid"]}
        unmapped = jailed - mapped
        if unmapped:
            return {"escape": f"processes {sorted(unmapped)} are not mapped to their jail"}
        return {}


def _survivors(processes: list[tuple[int, int]], wait: float) -> list[int]:
    deadline = time.monotonic() + wait
    while True:
        alive = [pid for pid, start in processes if process_start_time(pid) == start]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in alive:  # what escaped is not left running
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return alive


# ---- the battery as a whole --------------------------------------------------------------

@dataclass
class Planned:
    """One backend asked for, as this host's plan makes it: a shape to run; or the plan's
    refusal (the host cannot run it); or the label of a shape already listed that makes the
    same jail (the same kind, the same provider for every rule), which is not run twice."""
    backend: str
    shape: Shape | None = None
    refused: str = ""
    same_as: str = ""

    @property
    def label(self) -> str:
        return self.shape.label if self.shape else self.backend

    def note(self) -> str | None:
        """The line the report gives a backend that did not run as itself."""
        if self.same_as:
            return f"{self.backend}: same jail as {self.same_as} (not run twice)"
        if self.refused:
            return f"{self.backend}: this host cannot run it: {self.refused}"
        return None

    def to_dict(self) -> dict:
        return {"backend": self.backend, "label": self.label,
                "kind": self.shape.kind if self.shape else None, "ran": self.shape is not None,
                "refused": self.refused or None, "same_as": self.same_as or None}


@dataclass
class Outcome:
    """A battery's run: the backends asked for as planned here, and every row."""
    planned: list[Planned]
    rows: list[Row]
    pattern: str | None = None
    slow: float = 1.0  # HYJAIL_CHECK_SLOW


def shapes_for(backend: str) -> list[Planned]:
    """Each backend asked for (`all`: ns, trace and auto) as this host's plan makes it."""
    from hyjail import platform
    from hyjail.errors import SetupError
    from hyjail.plan import Plan, choose
    probe = platform.current()
    wanted = ("ns", "trace", "auto") if backend == "all" else (backend,)
    planned: list[Planned] = []
    made: list[tuple[Plan, str]] = []  # (plan, label) of each shape listed
    for name in wanted:
        try:
            plan = choose(probe, name)
        except SetupError as e:
            planned.append(Planned(name, refused=str(e)))
            continue
        twin = next((label for other, label in made
                     if (other.kind, other.chosen) == (plan.kind, plan.chosen)), None)
        if twin:
            planned.append(Planned(name, same_as=twin))
            continue
        shape = Shape(name, plan.kind, plan.uses("R3", "kernel"))
        made.append((plan, shape.label))
        planned.append(Planned(name, shape))
    return planned


def host_facts() -> dict:
    from hyjail import platform
    probe = platform.current()
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        try:
            s.bind(("::1", 0))
            ipv6 = True
        except OSError:
            ipv6 = False
    check = probe.get("abi.i386")
    return {"abi.i386": probe.has("abi.i386"), "abi.i386.detail": check.detail if check else "",
            "ipv6": ipv6}


@contextlib.contextmanager
def other_jail(ground: Ground, shape: Shape) -> Iterator[None]:
    """A persistent jail of the same shape whose process the attempts must not reach."""
    name = f"hjvictim{os.getpid() % 100000}{shape.backend}"
    started = subprocess.run([*HYJAIL, "run", "--persist", "--name", name, *shape.run_options(),
                              ground.root, name, shape.address(), "/bin/sleep", "1000000"],
                             capture_output=True, text=True, timeout=scaled(60))
    try:
        if started.returncode == 0:
            listed = json.loads(subprocess.run([*HYJAIL, "ps", "--json", "-j", name],
                                               capture_output=True, text=True,
                                               timeout=scaled(30)).stdout)
            sleeps = [p["pid"] for p in listed if p["command"].startswith("/bin/sleep")]
            shape.other_pid = sleeps[0] if sleeps else None
        yield
    finally:
        if started.returncode == 0:
            subprocess.run([*HYJAIL, "stop", "--timeout", "5", name], capture_output=True,
                           timeout=scaled(60))


def run_battery(backend: str, pattern: str | None, jobs: int,
                progress: Callable[[int, int, Row], None] | None = None) -> Outcome:
    """Every attempt (whose "RULE name" has pattern, or whose rule is pattern) on every
    backend asked for; the rows in catalogue order, per backend (those run alone last).
    A backend the host cannot run gets its rows skipped with the plan's refusal; one that
    makes the same jail as another gets none. progress(done, total, row) after each."""
    rules = {a.rule for a in attempts.CATALOGUE}
    if pattern and pattern.upper() in rules:  # a rule's name alone: that group (-k E)
        catalogue = [a for a in attempts.CATALOGUE if a.rule == pattern.upper()]
    else:
        catalogue = [a for a in attempts.CATALOGUE
                     if not pattern or pattern.lower() in f"{a.rule} {a.name}".lower()]
    slow = slowness()
    planned = shapes_for(backend)
    outcome = Outcome(planned, [], pattern, slow)
    rows = outcome.rows
    runs = sum(len(a.abis) for a in catalogue)
    total = runs * sum(1 for p in planned if not p.same_as)
    battery: Battery | None = None
    with contextlib.ExitStack() as undo:
        for p in planned:
            if p.refused:
                rows += [Row(a.rule, a.name, abi, p.label, "skipped", p.refused)
                         for a in catalogue for abi in a.abis]
                continue
            shape = p.shape
            if shape is None or not catalogue:
                continue
            if battery is None:  # the ground only where something runs on it
                battery = Battery(Ground(undo), slow)
                host = host_facts()
            ground = battery.ground
            work = [(a, abi) for a in catalogue for abi in a.abis if not a.alone]
            victim = other_jail(ground, shape) if any("other_jail" in a.host for a in catalogue) \
                else contextlib.nullcontext()
            with victim, ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(battery.run, a, abi, shape, host) for a, abi in work]
                for future in futures:
                    row = future.result()
                    rows.append(row)
                    if progress:
                        progress(len(rows), total, row)
            # What changes every jail's start (the shared filter cache) runs with no other.
            alone = [(a, abi) for a in catalogue for abi in a.abis if a.alone]
            for attempt, abi in alone:
                rows.append(battery.run(attempt, abi, shape, host))
                if progress:
                    progress(len(rows), total, rows[-1])
    return outcome
