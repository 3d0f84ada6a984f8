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
from collections.abc import Sequence

import prctl

from hyjail import linux, weaken
from hyjail.net.loopback import bring_up_loopback
from hyjail.ns import control, init, mounts, sysctl, userns, whom
from hyjail.ns.handshake import guarded, jail_stdio, ready_and_wait, wait_placed
from hyjail.spec import JailSpec

TYPE_CHECKING = False  # typing's own costs every start 2 ms; only a checker reads these
if TYPE_CHECKING:
    from typing import NoReturn

# Which namespaces pid 1 makes, and which of them the jail's user namespace owns, follow the
# plan (`hyjail.namespaces.Namespaces`). By default the host's user namespace owns the mount,
# IPC and cgroup namespaces (and pid, unshared by the supervisor before it forks us), so
# jailed root holds no capability over them; the jail's owns its UTS and network namespaces,
# where root may set its own hostname and bind low ports or open raw sockets (as allow.*
# permits) on its own network stack. allow.chflags keeps root in the host's user namespace
# (immutable flags need CAP_LINUX_IMMUTABLE there); the network is then the host's to own,
# where jailed root holds no CAP_NET_ADMIN.


# What jexec needs of pid 1's namespaces (rootless: handed to the supervisor).
ENTERED = ("user", "pid", "cgroup", "ipc", "uts", "net", "mnt")


def main(spec: JailSpec, channel: socket.socket, tty_fds: Sequence[int],
         host: control.HostPlan) -> NoReturn:
    """Run as the forked child, pid 1 of the new pid namespace. Never returns."""
    guarded(channel, lambda: _setup_and_run(spec, channel, tty_fds, host))


def _setup_and_run(spec: JailSpec, channel: socket.socket, tty_fds: Sequence[int],
                   host: control.HostPlan) -> NoReturn:
    # Before pid 1 joins or makes anything: non-dumpable, so that no jailed process can open
    # its /proc/1/{exe,mem,environ,fd,...} (a host binary and host descriptors) or ptrace it.
    # (userns.py's throwaway children make themselves dumpable again, before any jailed
    # process exists, so that a rootless pid 1 can write their id maps.)
    prctl.set_dumpable(False)
    # If the supervisor dies from here on, so does pid 1, and with it the whole pid namespace.
    # (If it died before this line, the GO read below sees end-of-file.)
    prctl.set_pdeathsig(signal.SIGKILL)
    init.block_signals()
    namespaces = host.namespaces
    if host.netns_fd is not None:  # the caller's (podman's): the host's user namespace owns it
        linux.setns(host.netns_fd, linux.CLONE_NEWNET)
        os.close(host.netns_fd)
    for flag, fd in host.joined_fds:  # a pod's, likewise
        linux.setns(fd, flag)
        os.close(fd)
    # The cgroup namespace comes last, once the supervisor has moved us into the jail's
    # groups (meanwhile: a move waits out an RCU grace period), whose root it then is.
    linux.unshare(namespaces.host_owned_flags(spec.allowed) & ~linux.CLONE_NEWCGROUP)
    jail_owned = namespaces.jail_owned(spec.allowed)
    if jail_owned:
        owned = userns.create(host.id_map, jail_owned)
        for name, flag in jail_owned:
            linux.setns(owned[name], flag)
            os.close(owned[name])
        userns.hold_jail_userns()  # while there is a /proc to find it by
    if namespaces.uts:
        socket.sethostname(spec.hostname)
        if spec.domainname:
            linux.setdomainname(spec.domainname)
    sysctl.apply(spec.sysctl)  # in the jail's own namespaces, through the host's /proc still
    # Without a pid namespace of the jail's, a proc would show the host's processes (unless
    # the jail is weakened on purpose, as a naive one would be).
    weakened = weaken.weakened()
    proc = namespaces.pid or "no-pidns" in weakened
    mounts.carry_out(mounts.plan(spec.path, host.state_dir, proc=proc, weakened=weakened,
                                 added=spec.mounts, devfs_ruleset=spec.devfs_ruleset,
                                 devices=spec.devices,
                                 read_only=spec.read_only),
                     follow_symlinks="follow-symlinks" in weakened)
    if "mount" in spec.allowed:
        userns.own_mount_namespace()
    if namespaces.net or host.netns_fd is not None:
        bring_up_loopback()
    wait_placed(channel, host.cgroup_paths)
    if namespaces.cgroup:
        linux.unshare(linux.CLONE_NEWCGROUP)
    if not namespaces.pid:  # not pid 1: orphans of the jail must still come to us to reap
        prctl.set_child_subreaper(True)
    if host.hand_over_namespaces:
        _hand_over_namespaces(channel)
    # Its user, directory and environment, settled from the jail's own files before READY
    # (a user the jail has not is a failure to start).
    command = whom.first_command(spec, host.confinement, host.id_map) if spec.command else None

    tty = ready_and_wait(channel, tty_fds)

    prctl.set_name("hyjail-init")
    prctl.set_proctitle("hyjail-init")  # its argv would show host paths to the jail
    command_pid = None
    if command is not None:
        argv, env, confinement = command
        command_pid = init.start_command(argv, env, jail_stdio(tty, tty_fds), tty, channel,
                                         confinement)
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
