"""The process a container engine knows as the container's: `--pid-file`'s, the state's pid.

Owns the stand-in between an engine and a jail. Engines take a container's pid for two
things: the process their subreaper (conmon, containerd's shim) reaps for the exit status,
and the namespaces they join through /proc/PID/ns (a pod's members join its infra
container's network and IPC; a sandbox's are found this way). runc's answer is the
container's own first process; a jail's first process is its supervisor's child, which no
subreaper can reap. So `create` forks this stand-in, which forks the supervisor. Once the
jail is held before its process, the stand-in joins the jail's network, IPC and UTS
namespaces (where the jail has its own), and its mount namespace last: engines act on a running
container's files through it (`podman cp` joins /proc/PID/ns/mnt and copies to its /, and
`podman top` reads the /proc it finds there), so in the host's they wrote and read the host's
tree. A jail without a mount namespace of its own (the trace backend's) gets the stand-in a
private one whose root is the jail's, where the host allows it; where the host denies
namespaces it cannot, and those engine commands act on the host's tree (README). It is in the
jail's cgroups (the supervisor takes
it in, and out again before it empties them: engines read a container's groups from its
pid, `podman stats`), drops every capability and lets no new privilege in, forwards the
signals an engine sends to the container's process to the jail's first process, and exits
after the supervisor with its status (the container's). Its parent is `create`, and when
`create` exits the engine's subreaper inherits it. If the stand-in is killed, the supervisor
and with it the jail die too (parent-death signals).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable

from hyjail import linux

TYPE_CHECKING = False  # typing's own import costs every create 2-3 ms; only a checker reads it
if TYPE_CHECKING:
    from typing import NoReturn

# The namespaces an engine looks for at /proc/PID/ns, each joined if the jail has its own;
# the mount namespace last (its root is the jail's: nothing of the host's is reached after).
JOINED = (("net", linux.CLONE_NEWNET), ("ipc", linux.CLONE_NEWIPC), ("uts", linux.CLONE_NEWUTS),
          ("mnt", linux.CLONE_NEWNS))
# What an engine sends to the container's process (podman stop, kill): the jail's first
# process gets it, as a runc container's own first process would.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH)


def run(supervise: Callable[[int], None], ready_write: int) -> NoReturn:
    """In the stand-in (just forked by `create`): fork the supervisor, which runs
    `supervise(told)` and writes to `told` "ready PID" (the jail's first process, held before
    it runs) or "CODE MESSAGE"; pass that on to `create` on `ready_write` ("ready" once the
    jail's namespaces are joined, so that an engine finds them at once), then stand in for
    the container until the supervisor ends."""
    os.setsid()  # no terminal, no job control of the caller's
    told_read, told_write = os.pipe()
    supervisor = os.fork()
    if supervisor == 0:
        os.close(told_read)
        os.close(ready_write)
        import prctl
        prctl.set_pdeathsig(signal.SIGKILL)  # the stand-in killed: the jail goes too
        supervise(told_write)
        os._exit(1)  # supervise does not return
    os.close(told_write)
    code = 1
    try:
        _quiet()
        with os.fdopen(told_read) as told:
            line = told.readline().strip()
        head, _, rest = line.partition(" ")
        init = int(rest) if head == "ready" and rest.isdigit() else 0
        import prctl  # before the jail's mount namespace, where no module of ours is
        if init:
            _join_jail(init)
            line = "ready"
        _forward_signals_to(init)
        with contextlib.suppress(OSError):  # create may be gone (killed): nobody to tell
            os.write(ready_write, f"{line}\n".encode())
        os.close(ready_write)
        _drop_privileges()
        code = _wait(supervisor)
    finally:
        os._exit(code)


def _quiet() -> None:
    """None of the engine's descriptors (its pipes stay the container's alone)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _join_jail(init: int) -> None:
    for name, flag in JOINED:
        with contextlib.suppress(OSError):  # gone already: the supervisor tells the rest
            if os.stat(f"/proc/{init}/ns/{name}").st_ino == os.stat(
                    f"/proc/self/ns/{name}").st_ino:
                if name == "mnt":
                    _own_mount_namespace_on(init)
                continue  # the jail has none of its own of this kind (a trace jail's)
            fd = os.open(f"/proc/{init}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                linux.setns(fd, flag)
            finally:
                os.close(fd)
            os.chdir("/")


def _own_mount_namespace_on(init: int) -> None:
    """A chroot jail's stand-in: a mount namespace of its own whose root is the jail's (its
    first process's root, by the kernel's link), so that an engine joining it finds the
    jail's tree at /. OSError where the host denies it (then it stays in the host's)."""
    from hyjail.ns import newmount
    root = os.open(f"/proc/{init}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:  # cloned while its mounts are in our namespace; attached in the new one
        tree = newmount.clone(root, recursive=True)
    finally:
        os.close(root)
    try:
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        # A place to attach it, in this namespace only: /proc is there whatever the host's
        # tree holds, and nothing of the host's is needed here any more.
        linux.mount("tmpfs", "/proc", "tmpfs", 0, "size=16k,mode=700")
        os.mkdir("/proc/jail", 0o700)
        point = os.open("/proc/jail", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            newmount.attach(tree, point)
        finally:
            os.close(point)
        # (a clone of a shared mount is its peer: pivot_root refuses one, and nothing here
        # may reach the host's mounts)
        linux.mount(None, "/proc/jail", None, linux.MS_REC | linux.MS_PRIVATE)
    finally:
        os.close(tree)
    os.chdir("/proc/jail")
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)  # the host's tree, the tmpfs with it
    os.chdir("/")


def _forward_signals_to(init: int) -> None:
    def forward(signum: int, _frame) -> None:
        if init:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signum)
    for signum in FORWARDED:
        signal.signal(signum, forward)


def _drop_privileges() -> None:
    """No capability and no way to gain one: the stand-in only waits and signals its own
    jail's first process (root's, like itself)."""
    import prctl
    prctl.set_no_new_privs(True)
    for capability in range(64):  # past the kernel's last: refused, and nothing to drop
        with contextlib.suppress(OSError, ValueError):
            prctl.capbset_drop(capability)
    for caps in (prctl.cap_effective, prctl.cap_permitted, prctl.cap_inheritable):
        caps.limit()


def _wait(supervisor: int) -> int:
    while True:
        try:
            _, status = os.waitpid(supervisor, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + (
        os.WTERMSIG(status))
