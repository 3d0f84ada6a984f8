"""The channel between the supervisor and the jail's pid 1 (a SOCK_SEQPACKET socketpair).

Owns: what the supervisor hands pid 1 at the fork (HostPlan), and the few messages of the
start-up handshake and their wire form:
  supervisor -> jail  PLACED                        pid 1 (or a process jexec enters) is
                                                    in the jail's cgroups, moved from the
                                                    host side while it set up: it may make
                                                    its cgroup namespace and report READY
  jail -> supervisor  NAMESPACES <names> + fds      (rootless only) pid 1's namespaces,
                                                    which the supervisor keeps for jexec
  jail -> supervisor  READY [+ the pty master fd]   namespaces and mounts are in place
  supervisor -> jail  GO                            the host side is ready: run the command
  jail -> supervisor  FAIL <code> <message>         setup or exec failed; exit with <code>
The command's own process holds the jail end until its exec succeeds (close-on-exec), so
end-of-file on the supervisor's side means the command is running.
"""

from __future__ import annotations

import socket

from hyjail.frozen import frozen

TYPE_CHECKING = False  # typing's own costs every start 2 ms; only a checker reads these
if TYPE_CHECKING:
    from hyjail.namespaces import Namespaces
    from hyjail.ns.dilution import Confinement

READY = b"READY"
NAMESPACES = b"NAMESPACES"
GO = b"GO"
PLACED = b"PLACED"
FAIL = b"FAIL"


@frozen
class HostPlan:
    """What the supervisor decided on the host for pid 1 to carry out."""
    cgroup_paths: tuple[str, ...]  # the groups to join (none for a rootless jail)
    id_map: tuple[tuple[int, int, int], ...]  # of the jail's user namespace
    state_dir: str  # the registry's directory, whose staging point and mask the mounts use
    namespaces: Namespaces  # which to make (the plan's kernel providers)
    confinement: Confinement  # the command's, applied just before its exec
    # Rootless: hand fds of pid 1's namespaces to the supervisor, which keeps them for jexec
    # (pid 1 is non-dumpable and was forked, not exec'd, in the host's user namespace, so
    # not even its owner may open /proc/1/ns/* from outside).
    hand_over_namespaces: bool = False
    # An OCI container's network namespace, prepared by its caller and opened by the
    # supervisor (checked to be one): pid 1 joins it instead of making one.
    netns_fd: int | None = None
    # A pod's IPC namespace (CLONE_NEWIPC, fd), checked alike.
    joined_fds: tuple[tuple[int, int], ...] = ()


@frozen
class Failure:
    """pid 1's report that the jail could not start: an exit code and a line."""

    exit_code: int
    message: str


def pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor end, jail end); both close-on-exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send_ready(sock: socket.socket, fds: list[int]) -> None:
    socket.send_fds(sock, [READY], fds)


def send_namespaces(sock: socket.socket, fds: dict[str, int]) -> None:
    socket.send_fds(sock, [b" ".join([NAMESPACES, *(n.encode() for n in fds)])],
                    list(fds.values()))


def parse_namespaces(data: bytes, fds: list[int]) -> dict[str, int] | None:
    names = data.split(b" ")
    if names[0] != NAMESPACES or len(names) - 1 != len(fds):
        return None
    return {name.decode(): fd for name, fd in zip(names[1:], fds, strict=True)}


def send_fail(sock: socket.socket, exit_code: int, message: str) -> None:
    sock.send(b"%s %d %s" % (FAIL, exit_code, message.encode(errors="replace")))


def send_go(sock: socket.socket) -> None:
    sock.send(GO)


def send_placed(sock: socket.socket) -> None:
    sock.send(PLACED)


def receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message and any fds it carried; (b"", []) at end-of-file."""
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, 4096, 8)
    except ConnectionResetError:
        # The peer closed with a message of ours unread (PLACED, after it failed): the kernel
        # reports that once, before what the peer sent us (its FAIL), which follows.
        data, fds, _flags, _addr = socket.recv_fds(sock, 4096, 8)
    return data, fds


def parse_failure(data: bytes) -> Failure | None:
    if not data.startswith(FAIL + b" "):
        return None
    _, code, message = data.split(b" ", 2)
    return Failure(int(code), message.decode(errors="replace"))
