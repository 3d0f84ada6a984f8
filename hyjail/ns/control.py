"""The channel between the supervisor and the jail's pid 1 (a SOCK_SEQPACKET socketpair).

Owns: the few messages of the start-up handshake and their wire form:
  jail -> supervisor  READY [+ the pty master fd]   namespaces and mounts are in place
  supervisor -> jail  GO                            the host side is ready: run the command
  jail -> supervisor  FAIL <code> <message>         setup or exec failed; exit with <code>
The command's own process holds the jail end until its exec succeeds (close-on-exec), so
end-of-file on the supervisor's side means the command is running.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

READY = b"READY"
GO = b"GO"
FAIL = b"FAIL"


@dataclass(frozen=True)
class Failure:
    exit_code: int
    message: str


def pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor end, jail end); both close-on-exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send_ready(sock: socket.socket, fds: list[int]) -> None:
    socket.send_fds(sock, [READY], fds)


def send_fail(sock: socket.socket, exit_code: int, message: str) -> None:
    sock.send(b"%s %d %s" % (FAIL, exit_code, message.encode(errors="replace")))


def send_go(sock: socket.socket) -> None:
    sock.send(GO)


def receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message and any fds it carried; (b"", []) at end-of-file."""
    data, fds, _flags, _addr = socket.recv_fds(sock, 4096, 4)
    return data, fds


def parse_failure(data: bytes) -> Failure | None:
    if not data.startswith(FAIL + b" "):
        return None
    _, code, message = data.split(b" ", 2)
    return Failure(int(code), message.decode(errors="replace"))
