"""The jail side of the namespace backend, read top to bottom: what pid 1 does.

Owns the order of the jail-side steps: tie its life to the supervisor, enter the remaining
namespaces, set the hostname, build the filesystem and pivot into it, bring loopback up, open
the jail's own terminal, report READY, wait for GO, then start the command and reap.
The host-side steps (veth, registry) belong to the supervisor.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Sequence
from typing import NoReturn

import prctl

from hyjail import cgroups, linux
from hyjail.errors import EXIT_SETUP, HyjailError
from hyjail.net.loopback import bring_up_loopback
from hyjail.ns import control, init, mounts, userns
from hyjail.ns.dilution import Confinement
from hyjail.spec import JailSpec

# pid is unshared by the supervisor before it forks us; we are already pid 1 of it. These are
# owned by the host's user namespace, so jailed root holds no capability over them.
HOST_OWNED = linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWCGROUP
# These are owned by the jail's user namespace: root inside may set its own hostname and
# bind low ports or open raw sockets (as allow.* permits) on its own network stack.
JAIL_OWNED = (("uts", linux.CLONE_NEWUTS), ("net", linux.CLONE_NEWNET))
# allow.chflags: jailed root stays in the host's user namespace (immutable flags need
# CAP_LINUX_IMMUTABLE there). The jail's user namespace then owns only its UTS namespace,
# whose owner, root, may set the hostname from outside it; the network is the host's to own,
# where jailed root holds no CAP_NET_ADMIN.
JAIL_OWNED_WITH_CHFLAGS = (("uts", linux.CLONE_NEWUTS),)


# What jexec needs of pid 1's namespaces (rootless: handed to the supervisor).
ENTERED = ("user", "pid", "cgroup", "ipc", "uts", "net", "mnt")


def main(spec: JailSpec, channel: socket.socket, tty_fds: Sequence[int],
         host: control.HostPlan) -> NoReturn:
    """Run as the forked child, pid 1 of the new pid namespace. Never returns."""
    guarded(channel, lambda: _setup_and_run(spec, channel, tty_fds, host))


def guarded(channel: socket.socket, body: Callable[[], object]) -> NoReturn:
    """Run a jail-side body; any failure is reported on channel as one line, never raised into
    the forked copy of the supervisor (which must not go on as if it were the parent)."""
    try:
        body()
    except HyjailError as e:
        _fail(channel, e.exit_code, str(e))
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        _fail(channel, EXIT_SETUP, f"jail setup: {where}{e.strerror or e}")
    except BaseException as e:  # a bug: still report it in one line and never run the command
        _fail(channel, EXIT_SETUP, f"jail setup: {type(e).__name__}: {e}")
    os._exit(EXIT_SETUP)


def _fail(channel: socket.socket, code: int, message: str) -> NoReturn:
    try:
        control.send_fail(channel, code, message)
    finally:
        os._exit(code)


def _setup_and_run(spec: JailSpec, channel: socket.socket, tty_fds: Sequence[int],
                   host: control.HostPlan) -> NoReturn:
    # If the supervisor dies from here on, so does pid 1, and with it the whole pid namespace.
    # (If it died before this line, the GO read below sees end-of-file.)
    prctl.set_pdeathsig(signal.SIGKILL)
    init.block_signals()
    cgroups.join(list(host.cgroup_paths))  # before the cgroup namespace: the group is its root
    chflags = "chflags" in spec.allowed
    linux.unshare(HOST_OWNED | (linux.CLONE_NEWNET if chflags else 0))
    jail_owned = JAIL_OWNED_WITH_CHFLAGS if chflags else JAIL_OWNED
    owned = userns.create(host.id_map, jail_owned)
    for name, flag in jail_owned:
        linux.setns(owned[name], flag)
        os.close(owned[name])
    socket.sethostname(spec.hostname)
    mounts.carry_out(mounts.plan(spec.path, host.state_dir))
    if "mount" in spec.allowed:
        userns.own_mount_namespace()
    bring_up_loopback()
    if host.hand_over_namespaces:
        _hand_over_namespaces(channel)

    tty = ready_and_wait(channel, tty_fds)

    prctl.set_dumpable(False)  # keep /proc/1 (a host binary) out of the jail's reach
    prctl.set_name("hyjail-init")
    prctl.set_proctitle("hyjail-init")  # its argv would show host paths to the jail
    command_pid = None
    if spec.command:
        confinement = Confinement(spec.allowed, spec.limits.rlimits)
        command_pid = init.start_command(spec.command, dict(spec.environ),
                                         jail_stdio(tty, tty_fds), tty, channel, confinement)
    # Pid 1 keeps nothing open: not the channel, the terminal, nor the host's stdio.
    os.closerange(0, 2**31 - 1)
    init.reap_until_exit(command_pid, spec.persist)


def _hand_over_namespaces(channel: socket.socket) -> None:
    fds = {name: os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
           for name in ENTERED}
    try:
        control.send_namespaces(channel, fds)
    finally:
        for fd in fds.values():
            os.close(fd)


def ready_and_wait(channel: socket.socket, tty_fds: Sequence[int]) -> int | None:
    """Report READY (with a pty master if the caller is on a terminal) and wait for GO.
    Returns the pty's slave, or None. Exits if the supervisor gives up or dies."""
    tty = None
    if tty_fds:
        # The terminal lives in the jail's own devpts, so `tty` inside names a real /dev/pts/N;
        # the supervisor relays it to the host terminal, which the jail never holds.
        master, tty = os.openpty()
        control.send_ready(channel, [master])
        os.close(master)
    else:
        control.send_ready(channel, [])
    message, _ = control.receive(channel)
    if message != control.GO:
        os._exit(EXIT_SETUP)
    return tty


def jail_stdio(tty: int | None, tty_fds: Sequence[int]) -> list[int]:
    """The command's fds 0-2: the jail's pty where the caller had a terminal, else the caller's."""
    return [tty if (fd in tty_fds) else fd for fd in (0, 1, 2)]
