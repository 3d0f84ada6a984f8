"""The escape battery's impersonated network helper: another host user who takes the helper's
rendezvous first and waits for root's supervisor to ask it for a jail's veth.

Owns both halves of that attempt's host side, as one small program the runner starts:

    python -m hyjail.check.impostor listen     the fake helper: prints "ready N DETAIL", then
                                               one JSON line per connection it receives
    python -m hyjail.check.impostor exec N ARGV...    ARGV under N allow-all seccomp filters

The helper's rendezvous depends on the caller's seccomp state (hyjail.net.rendezvous.address),
and a warm helper may already hold the usual one; so the fake stacks allow-all filters until
it finds a rendezvous nobody holds, and the jail's `hyjail run` is started under as many (a
filter that allows everything changes nothing else). The fake computes the name as root would,
then becomes nobody (uid and gid 65534, no groups) before it binds anything: what it can take
is what any user could. Where the rendezvous cannot be taken (a path in a directory only root
may write), it says so and receives nothing; the jail must then run with its address.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import socket
import struct
import sys

from hyjail.check.jailrun import scaled

NOBODY = 65534
MAX_FILTERS = 12
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
# One instruction, BPF_RET|BPF_K SECCOMP_RET_ALLOW: struct sock_filter {u16 code; u8 jt, jf;
# u32 k}.
ALLOW_ALL = struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000)


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def allow_all_filter() -> None:
    """Stack one more seccomp filter that allows every call (root needs no no_new_privs)."""
    program = ctypes.create_string_buffer(ALLOW_ALL, len(ALLOW_ALL))
    prog = _Fprog(1, ctypes.cast(program, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp filter")


def _bind(name: bytes | str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.bind(name)
    except OSError:
        s.close()
        raise
    return s


def _starting(name: bytes | str) -> bytes | str:
    return name + (b".starting" if isinstance(name, bytes) else ".starting")


def _address() -> bytes | str:
    """The helper's rendezvous as root's supervisor would compute it now."""
    try:
        from hyjail.net.rendezvous import address
    except ImportError:  # the helper's own module had it before the rendezvous was split out
        from hyjail.net.netd import address
    return address()


def listen() -> int:
    names = []
    for count in range(1, MAX_FILTERS + 1):  # root's rendezvous under 1, 2, ... filters
        allow_all_filter()
        names.append((count, _address()))
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    held: list[socket.socket] = []
    chosen, detail = 1, ""
    for count, name in names:
        try:
            listener = _bind(name)
        except OSError as e:
            detail = detail or f"{name!r}: {e.strerror}"
            if e.errno == 98:  # EADDRINUSE: a real helper holds this one; try the next
                continue
            break  # not ours to take at all (a root-only directory): nothing to receive
        chosen, detail = count, f"holding {name!r}"
        listener.listen(16)
        held.append(listener)
        with contextlib.suppress(OSError):  # and block whoever would start a helper
            held.append(_bind(_starting(name)))
        break
    print(f"ready {chosen} {detail}", flush=True)
    connections: list[socket.socket] = []
    listeners = held[:1]
    while True:
        ready, _, _ = select.select([sys.stdin, *listeners], [], [], scaled(60))
        if not ready or sys.stdin in ready:
            break  # told to stop (or left waiting)
        connection, _ = listeners[0].accept()
        connections.append(connection)
        pid, uid, _ = struct.unpack("3i", connection.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        try:
            message, fds, _, _ = socket.recv_fds(connection, 65536, 4)
        except OSError:
            message, fds = b"", []
        for fd in fds:
            os.close(fd)
        print(json.dumps({"peer_pid": pid, "peer_uid": uid, "fds": len(fds),
                          "request": message.decode(errors="replace")[:200]}), flush=True)
        with contextlib.suppress(OSError):  # "done": the jail then runs without its veth
            connection.send(b'{"ok": true}')
    for s in [*connections, *held]:
        s.close()
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["listen"]:
        return listen()
    if argv[:1] == ["exec"] and len(argv) > 2 and argv[1].isdigit():
        for _ in range(int(argv[1])):
            allow_all_filter()
        os.execvp(argv[2], argv[2:])
    print("usage: python -m hyjail.check.impostor listen | exec N ARGV...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
