"""What this host lets hyjail do, found by trying, never by reading version numbers.

Owns: the probe, one check per capability a provider needs (each namespace kind, pivot_root,
unprivileged user namespaces, seccomp filters and their RET_TRACE action, Landlock's scopes
(signals and abstract unix sockets kept inside the jail), ptrace's EXITKILL,
TRACESECCOMP and GET_SYSCALL_INFO, pidfd_open and pidfd_getfd, thread pidfds, kcmp,
mount_setattr (a read-only root: --read-only), the i386 and x32 ABIs), and its cache, and
HYJAIL_PROBE_WITHOUT, which withholds checks as an older kernel would (a test's way to make
this host pick an older host's providers). Every check
runs in a throwaway child, so a refusal, a crash or a half-made namespace never touches the
caller; the answer crosses back as one JSON line.

The answer depends on the boot and on who asks (root or not, under which seccomp filter, in
which user namespace), so the cache (`/var/cache/hyjail/probe.json` for root) is keyed by all
of that: a process under a parent filter
that denies namespaces gets its own probe, never root's cached one.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import signal
from collections.abc import Callable

from hyjail import digest, jsontext, linux
from hyjail.frozen import frozen

NAMESPACE_FLAGS = {"mnt": linux.CLONE_NEWNS, "pid": linux.CLONE_NEWPID,
                   "uts": linux.CLONE_NEWUTS, "ipc": linux.CLONE_NEWIPC,
                   "net": linux.CLONE_NEWNET, "cgroup": linux.CLONE_NEWCGROUP,
                   "user": linux.CLONE_NEWUSER}
_SYS_GETPID_I386 = 20
_SYS_GETPID_X32 = 0x40000000 + 39
_SYS_GETPPID_X86_64 = 110
_SYS_KCMP = 312
_KCMP_FILES = 2
CACHE_DIR = "/var/cache/hyjail"
_CACHE_NAME = "probe.json"
_CACHE_ENTRIES = 32
_VERSION = "5"  # of the checks: a cached probe from other checks is never reused
_libc = ctypes.CDLL(None, use_errno=True)


@frozen
class Check:
    """One probed feature of the host: its name, whether it works, and why."""

    name: str
    ok: bool
    detail: str


class Probe(dict):
    """name -> Check, for every check this module knows."""

    def has(self, name: str) -> bool:
        check = self.get(name)
        return bool(check and check.ok)


# ---- the checks: each runs in a child and returns (ok, detail) or raises OSError ----------

def _namespace(flag: int) -> Callable[[], tuple[bool, str]]:
    def check() -> tuple[bool, str]:
        _enter_own_userns_unless_root()
        linux.unshare(flag)
        if flag == linux.CLONE_NEWPID:  # the first child must be able to live there
            pid = os.fork()
            if pid == 0:
                os._exit(0 if os.getpid() == 1 else 1)
            if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
                return False, "the new pid namespace has no pid 1"
        return True, "unshared"
    return check


def _enter_own_userns_unless_root() -> None:
    """A rootless caller makes the other namespaces inside a user namespace of its own, as a
    rootless jail does."""
    from hyjail import rootless
    if not rootless.host_root():
        rootless.enter_user_namespace()


def _pivot_root() -> tuple[bool, str]:
    _enter_own_userns_unless_root()
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("tmpfs", "/tmp", "tmpfs", 0, "size=16k")  # in our private namespace only
    os.chdir("/tmp")
    linux.pivot_root(".", ".")
    return True, "into a tmpfs"


def _mount_setattr() -> tuple[bool, str]:
    """mount_setattr(2) (Linux 5.12), which makes every mount of a root read-only: asked of
    no descriptor, a kernel that has it says EBADF."""
    from hyjail.ns import newmount
    try:
        newmount.restrict(-1, linux.MS_RDONLY)
    except OSError as e:
        if e.errno == errno.ENOSYS:
            return False, "no such system call (Linux 5.12 has it)"
        return True, "changes a mount's attributes"
    return True, "changes a mount's attributes"


def _unprivileged_userns() -> tuple[bool, str]:
    import prctl

    from hyjail import rootless
    from hyjail.errors import HyjailError
    if os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        prctl.set_dumpable(True)  # changing uid made /proc/self root's
    try:
        rootless.enter_user_and_pid_namespaces()
        # AppArmor's restriction lets the namespace be made, then takes its capabilities.
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount("tmpfs", "/tmp", "tmpfs", 0, "size=16k")
    except OSError as e:
        return False, rootless.why_denied(e.errno or errno.EPERM)
    except HyjailError as e:
        return False, str(e).rpartition("denies it: ")[2]
    return True, "made one as uid 65534 and mounted in it"


def _seccomp_filter() -> tuple[bool, str]:
    import pyseccomp as sc
    f = sc.SyscallFilter(sc.ALLOW)
    f.add_rule(sc.ERRNO(errno.EPERM), "getppid")
    f.load()
    result = _libc.syscall(_SYS_GETPPID_X86_64)
    return result == -1 and ctypes.get_errno() == errno.EPERM, "loaded; ERRNO acts"


def _ptrace_checks() -> dict[str, tuple[bool, str]]:
    """Trace a child through a RET_TRACE filter: EXITKILL, TRACESECCOMP, GET_SYSCALL_INFO,
    pidfd_open and pidfd_getfd, in one go (each needs the one before)."""
    from hyjail.trace import ptrace
    results: dict[str, tuple[bool, str]] = {}
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_r)
        import pyseccomp as sc
        f = sc.SyscallFilter(sc.ALLOW)
        f.add_rule(sc.TRACE(7), "getppid")
        os.write(ready_w, b"r")
        os.kill(os.getpid(), signal.SIGSTOP)  # until the parent has seized us
        f.load()
        _libc.syscall(_SYS_GETPPID_X86_64)
        os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    try:
        options = ptrace.PTRACE_O_TRACESECCOMP | ptrace.PTRACE_O_EXITKILL
        try:
            ptrace.seize(child, options)
            results["ptrace.exitkill"] = (True, "PTRACE_SEIZE with PTRACE_O_EXITKILL")
        except OSError as e:
            results["ptrace.exitkill"] = (False, e.strerror)
            ptrace.seize(child, ptrace.PTRACE_O_TRACESECCOMP)
        try:
            pidfd = os.pidfd_open(child)
            results["pidfd_open"] = (True, "opened")
            try:
                os.close(ptrace.pidfd_getfd(pidfd, 0))
                results["pidfd_getfd"] = (True, "took a tracee's fd")
            except OSError as e:
                results["pidfd_getfd"] = (False, e.strerror)
            os.close(pidfd)
            # kcmp: whether two tasks share a descriptor table, or two fds name one file
            if _libc.syscall(_SYS_KCMP, os.getpid(), child, _KCMP_FILES, 0, 0) >= 0:
                results["kcmp"] = (True, "compares descriptor tables")
            else:
                results["kcmp"] = (False, os.strerror(ctypes.get_errno()))
            try:  # a pidfd per thread, and signals sent through it to the thread group
                thread = os.pidfd_open(child, os.O_EXCL)  # PIDFD_THREAD
                signal.pidfd_send_signal(thread, 0, None, 2)  # PIDFD_SIGNAL_THREAD_GROUP
                os.close(thread)
                results["pidfd.thread"] = (True, "PIDFD_THREAD and its signal scopes")
            except OSError as e:
                results["pidfd.thread"] = (False, e.strerror)
        except OSError as e:
            results["pidfd_open"] = (False, e.strerror)
        os.kill(child, signal.SIGCONT)
        results["ptrace.traceseccomp"] = (False, "no seccomp stop came")
        while True:
            _, status = os.waitpid(child, 0)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                break
            event = status >> 16
            if event == ptrace.PTRACE_EVENT_SECCOMP:
                results["ptrace.traceseccomp"] = (True, "RET_TRACE stops the tracee")
                try:
                    stop = ptrace.seccomp_stop(child)
                    good = stop.nr == _SYS_GETPPID_X86_64 and stop.tag == 7
                    results["ptrace.syscall_info"] = (good, f"{stop.abi} call {stop.nr}")
                except OSError as e:
                    results["ptrace.syscall_info"] = (False, e.strerror)
            signum = os.WSTOPSIG(status) if event == 0 else 0
            if signum == signal.SIGSTOP:  # group-stop of a seized tracee: no signal to pass
                signum = 0
            ptrace.request(ptrace.PTRACE_CONT, child, 0, signum)
    finally:
        try:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    results.setdefault("ptrace.syscall_info", (False, "no seccomp stop to read"))
    return results


def _i386_abi() -> tuple[bool, str]:
    # mov eax, 20 (getpid); int 0x80; ret. Without the i386 ABI this faults (the child dies).
    code = bytes([0xB8, _SYS_GETPID_I386, 0, 0, 0, 0xCD, 0x80, 0xC3])
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    result = ctypes.CFUNCTYPE(ctypes.c_int)(address)()
    return result == os.getpid(), "int 0x80 answers" if result == os.getpid() else str(result)


def _x32_abi() -> tuple[bool, str]:
    result = _libc.syscall(_SYS_GETPID_X32)
    if result == os.getpid():
        return True, "x32 calls answer"
    return False, os.strerror(ctypes.get_errno()) if result == -1 else str(result)


def _landlock_scope() -> tuple[bool, str]:
    import prctl
    abi = linux.landlock_abi()
    if abi < 6:
        return False, f"Landlock ABI {abi}; scopes need 6"
    parent = os.getppid()
    prctl.set_no_new_privs(True)
    linux.landlock_scope(linux.LANDLOCK_SCOPE_SIGNAL | linux.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET)
    try:
        os.kill(parent, 0)
    except PermissionError:
        return True, f"Landlock ABI {abi}: signals and abstract sockets scoped"
    return False, "scoped, yet the signal went out"


def _seccomp_trace_action() -> tuple[bool, str]:
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as f:
            actions = f.read().split()
    except OSError as e:
        return False, e.strerror
    return "trace" in actions, " ".join(actions)


def _in_child(check: Callable[[], object]) -> object:
    """Run check() in a throwaway child; its result (JSON), or (False, why it died)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            answer = check()
        except OSError as e:
            answer = (False, e.strerror or str(e))
        except Exception as e:  # a probe never takes the caller down
            answer = (False, f"{type(e).__name__}: {e}")
        os.write(write_end, jsontext.dumps(answer).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        code = os.waitstatus_to_exitcode(status)
        why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
        return (False, f"the check died ({why})")
    return jsontext.loads(data)


def run() -> Probe:
    """Probe this host now (about 30 ms)."""
    checks: dict[str, Callable[[], object]] = {
        **{f"ns.{name}": _namespace(flag) for name, flag in NAMESPACE_FLAGS.items()},
        "pivot_root": _pivot_root,
        "mount_setattr": _mount_setattr,
        "userns.unprivileged": _unprivileged_userns,
        "seccomp.filter": _seccomp_filter,
        "landlock.scope": _landlock_scope,
        "abi.i386": _i386_abi,
        "abi.x32": _x32_abi,
    }
    probe = Probe()
    for name, check in checks.items():
        ok, detail = _in_child(check)
        probe[name] = Check(name, ok, detail)
    ok, detail = _seccomp_trace_action()
    probe["seccomp.trace"] = Check("seccomp.trace", ok, detail)
    if probe.has("seccomp.filter"):
        for name, (ok, detail) in _in_child(_ptrace_checks).items():
            probe[name] = Check(name, ok, detail)
    for name in ("ptrace.exitkill", "ptrace.traceseccomp", "ptrace.syscall_info", "pidfd_open",
                 "pidfd_getfd", "pidfd.thread", "kcmp"):
        probe.setdefault(name, Check(name, False, "not tried: no seccomp filters"))
    return probe


# ---- the cache ---------------------------------------------------------------------------

def fingerprint() -> str:
    """What the probe's answer depends on: the boot, the kernel, and who asks (ids, user
    namespace, capabilities, seccomp state)."""
    parts = [_VERSION, _read("/proc/sys/kernel/random/boot_id"), os.uname().release,
             _read("/proc/self/uid_map"), os.readlink("/proc/self/ns/user")]
    status = _read("/proc/self/status")
    parts += [line for line in status.splitlines()
              if line.split(":")[0] in ("Uid", "Gid", "CapEff", "CapBnd", "NoNewPrivs",
                                        "Seccomp")]
    parts.append(_filters_installed_by())
    return digest.hexdigest("\n".join(parts).encode())


def _filters_installed_by() -> str:
    """Which seccomp filters we run under, as far as /proc tells: their number, and the
    process that installed the newest (the oldest ancestor under as many), by pid and start
    time. Two parent filters of the same number are then told apart, so a command under one
    never gets the probe made under another."""
    def filters(pid: int | str) -> tuple[int, int] | None:  # (count, parent)
        fields = dict(line.split(":", 1) for line in _read(f"/proc/{pid}/status").splitlines()
                      if line.startswith(("Seccomp_filters:", "PPid:")))
        if "PPid" not in fields:
            return None
        return int(fields.get("Seccomp_filters", "0")), int(fields["PPid"])

    mine = filters("self")
    if mine is None:
        return "unknown"
    count, parent = mine
    installer = os.getpid()
    while parent > 0 and (above := filters(parent)) is not None and above[0] == count:
        installer, parent = parent, above[1]
    return f"filters {count} from {installer}@{linux.process_start_time(installer)}"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cache_dir() -> str:
    """Root's caches are kept in /var/cache/hyjail (the key holds the boot, so a stale entry
    is never used); another user's in their own state directory. `hyjail.cache` reaches it
    (and makes it) without following symlinks, and trusts only what it sealed there."""
    from hyjail import rootless
    if not rootless.host_root():
        return rootless.state_dir()
    return CACHE_DIR


def current(fresh: bool = False) -> Probe:
    """The probe for this boot and this caller: from the cache, else run and cached; less
    what HYJAIL_PROBE_WITHOUT withholds."""
    from hyjail import weaken
    key = fingerprint()
    unchecked = "unchecked-cache" in weaken.weakened()
    cached = {} if fresh else (_load_unchecked() if unchecked else _load())
    entry = cached.get(key)
    if _well_formed(entry):
        return withheld(Probe({name: Check(name, bool(ok), detail)
                               for name, (ok, detail) in entry.items()}))
    probe = run()
    cached[key] = {name: [c.ok, c.detail] for name, c in probe.items()}
    for stale in list(cached)[:-_CACHE_ENTRIES]:  # the oldest callers (or boots) go first
        del cached[stale]
    _store(cached)
    return withheld(probe)


WITHOUT_VARIABLE = "HYJAIL_PROBE_WITHOUT"


def withheld(probe: Probe) -> Probe:
    """The probe with the checks HYJAIL_PROBE_WITHOUT names (comma-separated) failed, as on
    a kernel that lacks them: the plan then picks the providers an older host gets. It can
    only take a feature away, never grant one, so it is honoured for every caller."""
    names = [n.strip() for n in os.environ.get(WITHOUT_VARIABLE, "").split(",") if n.strip()]
    for name in names:
        if name in probe:
            probe[name] = Check(name, False, f"withheld by {WITHOUT_VARIABLE}")
    return probe


def _well_formed(entry: object) -> bool:
    """A cached probe of this version: every check, each (bool, str)."""
    return isinstance(entry, dict) and all(
        isinstance(v, list) and len(v) == 2 and isinstance(v[0], bool)
        and isinstance(v[1], str) for v in entry.values())


def _load() -> dict:
    """The cached probes, if `hyjail.cache` vouches for them; else none."""
    from hyjail import cache
    directory = cache.open_directory(cache_dir())
    if directory is None:
        return {}
    with directory:
        data = directory.read(_CACHE_NAME)
    return _parsed(data) if data is not None else {}


def _load_unchecked() -> dict:
    """The weakening "unchecked-cache": the file as it is, by name."""
    from hyjail import cache
    try:
        with open(os.path.join(cache_dir(), _CACHE_NAME), "rb") as f:
            return _parsed(cache.content_unchecked(f.read()))
    except OSError:
        return {}


def _parsed(data: bytes) -> dict:
    try:
        cached = jsontext.loads(data)
    except ValueError:
        return {}
    return cached if isinstance(cached, dict) else {}


def _store(cached: dict) -> None:
    from hyjail import cache
    directory = cache.open_directory(cache_dir())
    if directory is not None:  # else: probe again next time
        with directory:
            directory.write(_CACHE_NAME, jsontext.dumps(cached).encode())
