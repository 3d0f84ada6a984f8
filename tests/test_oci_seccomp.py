"""An OCI container's seccomp profile, compiled by `hyjail.oci.seccomp`: what it refuses (one
line naming the field), what it ignores, the cache, and, in a forked child that loads the
program (never this process), that the calls answer as the profile says.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import errno
import json
import os
import socket
import struct
import subprocess
import sys

import pytest

from hyjail.errors import SetupError
from hyjail.ns import syscall_filter
from hyjail.oci import seccomp

PODMAN_DEFAULT = "/usr/share/containers/seccomp.json"
PR_SET_NO_NEW_PRIVS = 38
SYS_GETPID = 39  # x86_64
SYS_GETPPID = 110
SYS_IOPL = 172
NETLINK_AUDIT = 9
X86_64 = os.uname().machine == "x86_64"
needs_x86_64 = pytest.mark.skipif(not X86_64, reason="call numbers are x86_64's")

# What Python needs to run a little and exit, and a few calls the tests use.
GENEROUS = [
    "read", "write", "readv", "writev", "pread64", "pwrite64", "close", "close_range", "fstat",
    "newfstatat", "stat", "lstat", "statx", "lseek", "mmap", "mprotect", "munmap", "mremap",
    "madvise", "brk", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "ioctl",
    "access", "faccessat", "faccessat2", "pipe", "pipe2", "select", "poll", "ppoll",
    "sched_yield", "dup", "dup2", "dup3", "nanosleep", "clock_nanosleep", "clock_gettime",
    "gettimeofday", "getpid", "gettid", "getuid", "geteuid", "getgid", "getegid", "socket",
    "clone", "fork", "vfork", "execve", "exit", "exit_group", "wait4", "kill", "tgkill",
    "uname", "fcntl", "flock", "fsync", "getcwd", "chdir", "rename", "rmdir", "unlink",
    "unlinkat", "readlink", "readlinkat", "open", "openat", "getdents64", "getrandom", "futex",
    "set_robust_list", "get_robust_list", "set_tid_address", "rseq", "arch_prctl", "prlimit64",
    "getrlimit", "sysinfo", "fstatfs", "statfs", "prctl",
]


def profile(**fields) -> dict:
    """A config.json-form profile: everything allowed but what `fields` add."""
    return {"defaultAction": "SCMP_ACT_ALLOW", **fields}


def under(program: bytes, body) -> dict:
    """Run body() in a forked child that has loaded program (no_new_privs set first): its
    answer (a dict of ints) comes back through a pipe as JSON."""
    libc = ctypes.CDLL(None, use_errno=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing here returns to pytest
        try:
            os.close(r)
            if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                os._exit(3)
            syscall_filter.load(program)
            os.write(w, json.dumps(body(libc)).encode())
            os._exit(0)
        except BaseException as e:  # whatever it was, the parent shows it
            with contextlib.suppress(BaseException):
                os.write(w, repr(e).encode())
        os._exit(2)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    answer = b"".join(chunks).decode()
    assert status == 0, f"child exited {status}: {answer}"
    return json.loads(answer)


def errno_of(call) -> int:
    """0 if call() succeeds, else its errno."""
    try:
        call()
    except OSError as e:
        return e.errno
    return 0


def raw(libc, number: int, *args) -> int:
    """syscall(2)'s errno, or 0 when it succeeds."""
    ctypes.set_errno(0)
    return ctypes.get_errno() if libc.syscall(number, *args) == -1 else 0


def call_number(name: str) -> int:
    """This machine's number for a system call."""
    import pyseccomp as sc
    return sc.resolve_syscall(sc.Arch.NATIVE, name)


def new_socket(family: int, kind: int) -> None:
    socket.socket(family, kind).close()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test with a cache of its own (the host's stays as it was), and no programs kept
    in this process from another test."""
    monkeypatch.setattr(seccomp, "cache_path", lambda: str(tmp_path / "oci-filters"))
    monkeypatch.setattr(seccomp, "_programs", {})


# The default action, errnos, and the rules' calls, in a child.


@needs_x86_64
def test_a_default_errno_profile_answers_each_call_as_listed(tmp_path):
    program = seccomp.compile_profile({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOSYS,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": GENEROUS, "action": "SCMP_ACT_ALLOW"},
                     {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": errno.EPERM}],
    })
    assert syscall_filter.plausible(program)
    target = str(tmp_path / "made")

    def body(libc):
        return {"mkdir": errno_of(lambda: os.mkdir(target)),
                "getppid": raw(libc, SYS_GETPPID),  # listed nowhere: the default
                "getpid": raw(libc, SYS_GETPID),
                "pipe": errno_of(lambda: [os.close(fd) for fd in os.pipe()])}

    assert under(program, body) == {"mkdir": errno.EPERM, "getppid": errno.ENOSYS,
                                    "getpid": 0, "pipe": 0}
    assert not os.path.exists(target)


@needs_x86_64
def test_an_errno_rule_without_errnoret_answers_eperm():
    program = seccomp.compile_profile(profile(syscalls=[
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]))
    assert under(program, lambda libc: {"getppid": raw(libc, SYS_GETPPID)}) == {
        "getppid": errno.EPERM}


def test_argument_comparisons_and_within_a_rule_and_or_on_one_argument():
    """EQ and MASKED_EQ (value the mask, valueTwo the datum); two comparisons of one argument
    become two rules (libseccomp cannot hold both in one), as runc makes them."""
    program = seccomp.compile_profile(profile(syscalls=[
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
         "args": [{"index": 0, "value": socket.AF_INET6, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": socket.AF_UNIX, "op": "SCMP_CMP_EQ"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPROTONOSUPPORT,
         "args": [{"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 0xF, "valueTwo": socket.SOCK_DGRAM,
                   "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["umask"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 0o007, "valueTwo": 0o007,
                   "op": "SCMP_CMP_MASKED_EQ"}]},
    ]))
    sys_umask = call_number("umask")

    def body(libc):
        return {
            "inet6": errno_of(lambda: new_socket(socket.AF_INET6, socket.SOCK_STREAM)),
            "unix": errno_of(lambda: new_socket(socket.AF_UNIX, socket.SOCK_STREAM)),
            "inet stream": errno_of(lambda: new_socket(socket.AF_INET, socket.SOCK_STREAM)),
            "inet dgram": errno_of(lambda: new_socket(socket.AF_INET, socket.SOCK_DGRAM)),
            "umask 022": raw(libc, sys_umask, 0o022),  # umask(3) keeps no errno
            "umask 027": raw(libc, sys_umask, 0o027),
        }

    assert under(program, body) == {
        "inet6": errno.EACCES, "unix": errno.EACCES, "inet stream": 0,
        "inet dgram": errno.EPROTONOSUPPORT, "umask 022": 0, "umask 027": errno.EPERM}


def podman_default_resolved() -> dict:
    """/usr/share/containers/seccomp.json as podman writes it into config.json for a root
    container on x86_64 with podman's default capabilities: docker's includes and excludes
    resolved, archMap become architectures."""
    if not os.path.exists(PODMAN_DEFAULT):
        pytest.skip(f"{PODMAN_DEFAULT}: missing (podman's default profile)")
    with open(PODMAN_DEFAULT) as f:
        docker = json.load(f)
    caps = {f"CAP_{c}" for c in ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                                 "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP",
                                 "SETUID", "SYS_CHROOT")}
    arches = {"amd64", "x86", "x32"}

    def kept(rule: dict) -> bool:
        includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
        return ((not includes.get("arches") or bool(arches & set(includes["arches"])))
                and set(includes.get("caps") or ()) <= caps
                and not arches & set(excludes.get("arches") or ())
                and not caps & set(excludes.get("caps") or ()))

    return {
        "defaultAction": docker["defaultAction"],
        "defaultErrnoRet": docker.get("defaultErrnoRet"),
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{k: v for k, v in rule.items() if k in ("names", "action", "errnoRet",
                                                               "args")}
                     for rule in docker["syscalls"] if kept(rule)],
    }


@needs_x86_64
def test_podmans_default_profile_compiles_and_holds(tmp_path):
    resolved = podman_default_resolved()
    program = seccomp.compile_profile(resolved)
    assert syscall_filter.plausible(program)
    target = str(tmp_path / "made")

    def body(libc):
        return {"mkdir": errno_of(lambda: os.mkdir(target)),
                "iopl": raw(libc, SYS_IOPL, 0),  # CAP_SYS_RAWIO's: refused with EPERM
                # socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT) without CAP_AUDIT_WRITE
                "audit": errno_of(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                                        NETLINK_AUDIT).close()),
                "inet": errno_of(lambda: new_socket(socket.AF_INET, socket.SOCK_STREAM))}

    assert under(program, body) == {"mkdir": 0, "iopl": errno.EPERM, "audit": errno.EINVAL,
                                    "inet": 0}


def test_podmans_own_file_is_refused_until_its_includes_are_resolved():
    if not os.path.exists(PODMAN_DEFAULT):
        pytest.skip(f"{PODMAN_DEFAULT}: missing (podman's default profile)")
    with open(PODMAN_DEFAULT) as f:
        docker = json.load(f)
    first = next(i for i, rule in enumerate(docker["syscalls"]) if rule.get("includes"))
    with pytest.raises(SetupError, match=rf"^config\.json: linux\.seccomp\.syscalls\[{first}\]"
                                         r"\.includes: .*the engine's to resolve"):
        seccomp.check_profile(docker)


# Refusals: one line, naming the field.


def _base() -> dict:
    return profile(architectures=["SCMP_ARCH_X86_64"], syscalls=[
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}])


def _edit(path: str, value) -> dict:
    """The base profile with the value at a dotted path (list items by number) set, or
    removed when value is REMOVE."""
    edited = _base()
    *parents, last = path.split(".")
    node = edited
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key = int(last) if isinstance(node, list) else last
    if value is REMOVE:
        del node[key]
    else:
        node[key] = value
    return edited


REMOVE = object()
REFUSED = [
    ("syscalls.0.action", "SCMP_ACT_NOTIFY",
     r"syscalls\[0\]\.action: SCMP_ACT_NOTIFY: a seccomp user-notification listener is not "
     r"supported \(no listenerPath agent here\)$"),
    ("syscalls.0.action", "SCMP_ACT_TRACE", r"syscalls\[0\]\.action: SCMP_ACT_TRACE: .*tracer"),
    ("defaultAction", "SCMP_ACT_TRACE", r"defaultAction: SCMP_ACT_TRACE: .*tracer"),
    ("defaultAction", "SCMP_ACT_NOTIFY", r"defaultAction: SCMP_ACT_NOTIFY: "),
    ("syscalls.0.action", "SCMP_ACT_MAYBE",
     r"syscalls\[0\]\.action: SCMP_ACT_MAYBE: not a seccomp action"),
    ("syscalls.0.action", ["SCMP_ACT_ALLOW"], r"syscalls\[0\]\.action: \[\"SCMP_ACT_ALLOW\"\]"),
    ("defaultAction", REMOVE, r"defaultAction: required"),
    ("architectures", ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"],
     r"architectures\[1\]: SCMP_ARCH_VAX: not a seccomp architecture"),
    ("architectures", "SCMP_ARCH_X86_64", r"architectures: SCMP_ARCH_X86_64: must be a list"),
    ("syscalls.0.args.0.index", 6,
     r"syscalls\[0\]\.args\[0\]\.index: 6: a system call has 6 arguments \(0-5\)"),
    ("syscalls.0.args.0.index", REMOVE, r"syscalls\[0\]\.args\[0\]\.index: required"),
    ("syscalls.0.args.0.value", -1, r"syscalls\[0\]\.args\[0\]\.value: -1: not a 64-bit"),
    ("syscalls.0.args.0.valueTwo", 1 << 64, r"syscalls\[0\]\.args\[0\]\.valueTwo: "),
    ("syscalls.0.args.0.op", "SCMP_CMP_APPROX",
     r"syscalls\[0\]\.args\[0\]\.op: SCMP_CMP_APPROX: not a seccomp comparison"),
    ("flags", ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
     r"flags\[0\]: SECCOMP_FILTER_FLAG_SPEC_ALLOW: .*speculative store bypass"),
    ("flags", ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SOMEDAY"],
     r"flags\[1\]: SECCOMP_FILTER_FLAG_SOMEDAY: not a seccomp filter flag"),
    ("syscalls.0.errnoRet", 5000, r"syscalls\[0\]\.errnoRet: 5000: not an errno \(0-4095\)"),
    ("syscalls.0.errnoRet", True, r"syscalls\[0\]\.errnoRet: true: not an errno"),
    ("syscalls.0.action", "SCMP_ACT_ALLOW",
     r"syscalls\[0\]\.errnoRet: 1: SCMP_ACT_ALLOW takes no errno"),
    ("defaultErrnoRet", errno.ENOSYS, r"defaultErrnoRet: 38: SCMP_ACT_ALLOW takes no errno"),
    ("syscalls.0.names", [], r"syscalls\[0\]\.names: must name at least one system call"),
    ("syscalls.0.names", REMOVE, r"syscalls\[0\]\.names: must name at least one"),
    ("syscalls.0.names", ["getppid", ""], r"syscalls\[0\]\.names\[1\]: : not a system call"),
    ("syscalls.0.includes", {"caps": ["CAP_SYS_ADMIN"]},
     r"syscalls\[0\]\.includes: \{\"caps\": \[\"CAP_SYS_ADMIN\"\]\}: docker's conditions"),
    ("syscalls.0.excludes", {"arches": ["amd64"]}, r"syscalls\[0\]\.excludes: "),
    ("syscalls", {"names": ["read"]}, r"syscalls: \{\"names\": \[\"read\"\]\}: must be a list"),
    ("syscalls.0", "read", r"syscalls\[0\]: read: must be an object"),
]


@pytest.mark.parametrize(("path", "value", "message"), REFUSED,
                         ids=[f"{p}={v!r}"[:60] for p, v, _ in REFUSED])
def test_what_cannot_be_honoured_is_refused_naming_the_field(path, value, message):
    edited = _edit(path, value)
    pattern = r"^config\.json: linux\.seccomp\." + message
    with pytest.raises(SetupError, match=pattern) as checked:
        seccomp.check_profile(edited)
    assert "\n" not in str(checked.value)
    with pytest.raises(SetupError, match=pattern):
        seccomp.compile_profile(edited)


def test_the_message_names_the_callers_place():
    with pytest.raises(SetupError, match=r"^process\.json: seccomp\.defaultAction: required$"):
        seccomp.check_profile({}, "process.json: seccomp")


def test_a_rule_libseccomp_cannot_add_is_one_line_naming_it():
    """On i386, libseccomp also applies socket's rules to socketcall, where a comparison of
    argument 0 collides with socketcall's own (its operation): a conflict it refuses."""
    conflicting = profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"], syscalls=[
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EINVAL,
         "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"},
                  {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
         "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_NE"}]}])
    seccomp.check_profile(conflicting)  # nothing wrong with its shape
    try:
        seccomp.compile_profile(conflicting)
    except SetupError as e:
        assert str(e).startswith("config.json: linux.seccomp.syscalls[1]: socket: "
                                 "libseccomp refused the rule: ")
        assert "\n" not in str(e)


def test_checking_needs_no_libseccomp():
    """`create` checks the profile before the jail starts, without the slow bindings."""
    script = ("import sys; from hyjail.oci import seccomp; "
              f"seccomp.check_profile({_base()!r}); "
              "assert 'pyseccomp' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", script], check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# What is accepted and ignored, or skipped.


def test_flags_that_change_nothing_and_unknown_properties_are_ignored():
    plain = seccomp.compile_profile(_base())
    decorated = _base()
    decorated.update(flags=["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                     listenerPath="/run/agent.sock", listenerMetadata="x", someday={"a": 1})
    decorated["syscalls"][0].update(comment="why", includes={}, excludes={"caps": []},
                                    errno="EPERM")
    decorated["syscalls"][0]["args"][0]["comment"] = "ignored too"
    assert seccomp.compile_profile(decorated) == plain


def test_unknown_call_names_and_rules_that_change_nothing_are_skipped():
    plain = seccomp.compile_profile(_base())
    padded = _base()
    padded["syscalls"][0]["names"] = ["no_such_call_in_any_kernel", "getppid"]
    padded["syscalls"].insert(0, {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"})
    padded["syscalls"].append({"names": ["no_such_call_either"], "action": "SCMP_ACT_KILL"})
    assert seccomp.compile_profile(padded) == plain


def test_an_architecture_this_libseccomp_does_not_know_is_skipped():
    """Known to the spec, maybe not to this libseccomp (LoongArch came in 2.6): then it is
    not this host's, and nothing can call from it."""
    plain = seccomp.compile_profile(_base())
    listed = _base()
    listed["architectures"] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_LOONGARCH64"]
    program = seccomp.compile_profile(listed)
    assert syscall_filter.plausible(program)
    if X86_64 and not _libseccomp_knows("loongarch64"):
        assert program == plain


def _libseccomp_knows(arch: str) -> bool:
    import pyseccomp as sc
    resolve = sc._libseccomp.seccomp_arch_resolve_name
    resolve.argtypes, resolve.restype = (ctypes.c_char_p,), ctypes.c_uint32
    return resolve(arch.encode()) != 0


# The cache.

# Loads the architecture (as every program of libseccomp's does first), then allows all.
ALLOW_ALL = struct.pack("<HBBI", 0x20, 0, 0, 4) + struct.pack("<HBBI", 0x06, 0, 0, 0x7FFF0000)


def test_programs_are_kept_in_this_process_and_in_the_verified_cache():
    from hyjail import cache
    first = seccomp.compile_profile(_base())
    key = seccomp.entry_key(_base())
    assert seccomp._programs[key] == first
    assert seccomp.compile_profile(copy.deepcopy(_base())) is first  # this process's
    name = f"{key}.bpf"
    with cache.open_directory(seccomp.cache_path()) as directory:
        assert directory.read(name) == first  # sealed in the cache directory
        directory.write(name, ALLOW_ALL)  # a sealed entry is trusted...
    seccomp._programs.clear()
    assert seccomp.compile_profile(_base()) == ALLOW_ALL
    with cache.open_directory(seccomp.cache_path()) as directory:
        directory.write(name, b"not a program")  # ...if it looks like a program
    seccomp._programs.clear()
    assert seccomp.compile_profile(_base()) == first
    with open(os.path.join(seccomp.cache_path(), name), "r+b") as f:  # unsealed: rebuilt
        f.seek(-8, os.SEEK_END)
        f.write(ALLOW_ALL[8:])
    seccomp._programs.clear()
    assert seccomp.compile_profile(_base()) == first


def test_the_key_is_the_profiles_content_not_its_spelling():
    base = _base()
    reordered = dict(reversed(list(base.items())))
    assert seccomp.entry_key(reordered) == seccomp.entry_key(base)
    other = _base()
    other["syscalls"][0]["errnoRet"] = errno.EACCES
    assert seccomp.entry_key(other) != seccomp.entry_key(base)
