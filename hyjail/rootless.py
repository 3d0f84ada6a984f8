"""Jails for a user other than root: what they may have, and the user namespace they start in.

Owns: telling root of the host from everyone else; what a rootless jail cannot have (a veth,
cgroup limits, `--userns`: each needs root of the host) and the one line that says so; where
such a user's registry lives; entering a user namespace of one's own (the caller's uid and gid
mapped to 0) with the jail's pid namespace under it; and, when the host denies user
namespaces, the one line that names the knob doing it.

A rootless jail has the same shape as root's, one user namespace higher: the user's own
namespace takes the host's place as owner of the jail's mount, pid, IPC and cgroup
namespaces, and the jail's user namespace (which owns its hostname and network) is made under
it, mapping root only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator

from hyjail import linux
from hyjail.errors import SetupError

TYPE_CHECKING = False  # typing's own costs every start 2 ms; only a checker reads these
if TYPE_CHECKING:
    from hyjail.spec import JailSpec

# Root of the initial user namespace sees every id mapped onto itself.
_FULL_IDENTITY = ["0", "0", "4294967295"]
# The jail's user namespace under a rootless one: only root is mapped there to map again.
JAIL_ID_MAP = ((0, 0, 1),)
# Sysctls that deny unprivileged user namespaces, and the value that does.
KNOBS = (("kernel.unprivileged_userns_clone", "0"),
         ("kernel.apparmor_restrict_unprivileged_userns", "1"),
         ("user.max_user_namespaces", "0"))


def host_root() -> bool:
    """Whether this process is root of the host: uid 0 in the initial user namespace (root of
    a user namespace of its own, as a rootless supervisor is, does not count)."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == _FULL_IDENTITY
    except OSError:
        return False


def refuse_what_needs_root(spec: JailSpec) -> None:
    """Refuse, in one line, what only root of the host can give a jail."""
    if spec.needs_veth:
        raise SetupError(f"{spec.veth_addresses[0]}: a jail started by a user other than root "
                         f"has loopback only (IP 127.0.0.1, or --net none): a veth needs root")
    cgroup_limits = {"--memory": spec.limits.memory, "--pids": spec.limits.pids,
                     "--cpus": spec.limits.cpus}
    for option, value in cgroup_limits.items():
        if value is not None:
            raise SetupError(f"{option}: cgroup limits need root (--rlimit works without)")
    if "chflags" in spec.allowed:
        raise SetupError("allow.chflags: needs root (immutable flags need CAP_LINUX_IMMUTABLE "
                         "in the host's user namespace)")
    if spec.userns_base is not None:
        raise SetupError(f"--userns: needs root; a jail started by uid {os.geteuid()} maps "
                         f"its root to uid {os.geteuid()} anyway")


def state_dir() -> str:
    """This user's registry directory: $XDG_RUNTIME_DIR/hyjail, else /tmp/hyjail-UID. It
    must be a directory of the user's own that nobody else can write."""
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    path = (os.path.join(runtime, "hyjail") if runtime and _private_to(runtime, uid)
            else f"/tmp/hyjail-{uid}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    if not _private_to(path, uid):
        raise SetupError(f"{path}: not a directory of uid {uid} that only it can write; "
                         f"remove it")
    return path


def _private_to(path: str, uid: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o022


def enter_user_and_pid_namespaces() -> None:
    """Become root of a new user namespace (uid and gid mapped from the caller's) and unshare
    the pid namespace the next fork will be pid 1 of, owned by it."""
    with denied_as_setup_error():
        enter_user_namespace()
        linux.unshare(linux.CLONE_NEWPID)


def enter_user_namespace() -> None:
    """Become root of a new user namespace, the caller's uid and gid mapped to 0."""
    uid, gid = os.geteuid(), os.getegid()
    with denied_as_setup_error():
        linux.unshare(linux.CLONE_NEWUSER)
        # An unprivileged process may map only its own ids, and its gid only once it has
        # given up setgroups (which could otherwise drop a group that denies it access).
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1\n"),
                           ("gid_map", f"0 {gid} 1\n")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)


@contextlib.contextmanager
def denied_as_setup_error() -> Iterator[None]:
    """Turn the host's refusal of an unprivileged user namespace into one line naming why."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EACCES, errno.ENOSPC):
            raise
        raise SetupError(f"a jail started by a user other than root needs an unprivileged user "
                         f"namespace, and this host denies it: {why_denied(e.errno)}") from None


def blocking_knobs(read: Callable[[str], str | None] | None = None) -> list[str]:
    """The sysctls (as NAME=VALUE) that deny unprivileged user namespaces on this host."""
    found = []
    for name, blocking in KNOBS:
        value = (read or _sysctl)(name)
        if value == blocking:
            found.append(f"{name}={value}")
    return found


def why_denied(error: int) -> str:
    knobs = blocking_knobs()
    if knobs:
        return "sysctl " + ", ".join(knobs)
    if error == errno.ENOSPC:
        limit = _sysctl("user.max_user_namespaces")
        return f"the limit of user namespaces is reached (sysctl user.max_user_namespaces={limit})"
    return (f"{os.strerror(error)}, and no sysctl says so: a seccomp policy or security module "
            f"of this host refuses them")


def _sysctl(name: str) -> str | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None
