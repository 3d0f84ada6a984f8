"""R3 on the trace backend: the jail's socket calls, performed by the supervisor itself.

Owns: FreeBSD's address rules (binding the unspecified address or 127.0.0.1 means the
jail's address, any other address but the jail's is EADDRNOTAVAIL; connecting or sending to
127.0.0.1 reaches the jail's own address; every socket that talks is first bound to the
jail's address) and carrying each call out race-free: the supervisor copies the address, the
data and the control messages out of the tracee once, takes the socket itself with
pidfd_getfd, and binds, connects or sends on that copy of the socket with its own copy of the
arguments. Another thread rewriting the tracee's memory afterwards changes nothing. A call on
a blocking socket runs in a worker thread, with the tracee held until it is done.

A call on a socket that is not an internet one (AF_UNIX, netlink) runs as the tracee made it,
so that the kernel resolves a path in the jail's root and sees the tracee's credentials (a
unix peer's SO_PEERCRED, SCM_CREDENTIALS), and Landlock's scope keeps abstract names inside
the jail (the plan requires it); but only when fd N cannot name another file by the time the
kernel looks it up: no other task shares the caller's descriptor table (a thread that
dup2()s an internet socket over N would have the kernel make the call on it, with the
tracee's own address). Where one does, the call is refused with EPERM: performing it here
would give a unix peer the supervisor's credentials. listen names no address: it is always
performed here, on our copy.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hyjail.ns.syscall_filter import AF_PACKET, CONFINED_FAMILIES
from hyjail.trace import memory, unix

if TYPE_CHECKING:
    from hyjail.trace.state import Call

_MAX_DATA = 1 << 20  # bytes copied per send; more is a short write, as the kernel may do
_CAP_NET_BIND_SERVICE = 10
# Control messages a jail may send on an internet socket (level, type); PKTINFO's source is
# checked, the rest cannot change where a packet comes from.
_PKTINFO = {(socket.IPPROTO_IP, 8), (socket.IPPROTO_IPV6, 50)}
_HARMLESS_CMSG = {(socket.IPPROTO_IP, 1), (socket.IPPROTO_IP, 2), (socket.IPPROTO_IPV6, 52),
                  (socket.IPPROTO_IPV6, 67), (socket.IPPROTO_UDP, 103)}
_SOCKETCALL = {1: "socket", 2: "bind", 3: "connect", 4: "listen", 8: "socketpair",
               11: "sendto", 14: "setsockopt", 16: "sendmsg", 20: "sendmmsg"}
_SOCKETCALL_ARGS = {1: 3, 2: 3, 3: 3, 4: 2, 8: 4, 11: 6, 14: 5, 16: 3, 20: 4}
_SYS_KCMP = 312
_KCMP_FILES = 2
_libc = ctypes.CDLL(None, use_errno=True)
REFUSED_PROTOCOLS = (132, 262)  # SCTP and MPTCP: more addresses than the one bound
REFUSED_OPTION_LEVELS = (132, 284)  # their address options (bindx, connectx, subflows)


@dataclass(frozen=True)
class Deferred:
    """A result computed off the tracer's thread (a call that may block); the tracee waits.
    Work that takes on the caller's identity (the unix stand-in) changes its thread for good,
    so it gets a thread of its own; the rest run on the tracer's reusable workers."""
    work: Callable[[], int]
    assumes_identity: bool = False


@dataclass(frozen=True)
class Instead:
    """Run this call in place of the one stopped, with these arguments in its registers (the
    supervisor's copies: nothing is read from tracee memory again), in the ABI's argument
    registers; number None keeps the call's own. The kernel runs the filter again on the
    new call (Linux 4.8 and later), so its rules hold for it too."""
    number: int | None
    args: tuple[int, ...]
    abi: str = "i386"


# i386's direct calls for socketcall's operations that make sockets: the filter reads their
# family from a register, where socketcall's sits in memory.
_I386_SOCKET, _I386_SOCKETPAIR = 359, 360


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


@contextlib.contextmanager
def _taken(call: Call, fd: int) -> Iterator[socket.socket | int]:
    """The tracee's socket fd as our own socket object (same open file), or the call's
    answer if it is none: -EBADF, or -ENOTSOCK."""
    mine = unix.take_fd(call, fd)
    if mine < 0:
        yield -errno.EBADF
        return
    try:
        sock = socket.socket(fileno=mine)
    except OSError:
        os.close(mine)
        yield -errno.ENOTSOCK
        return
    try:
        yield sock
    finally:
        sock.close()


def _read_sockaddr(call: Call, address: int, length: int) -> bytes | int:
    if length < 2 or length > 128:
        return -errno.EINVAL
    try:
        return memory.read(call.tid, address, length)
    except OSError:
        return -errno.EFAULT


def _decode(raw: bytes) -> tuple | None:
    """An AF_INET/AF_INET6 sockaddr as Python's address tuple; None for other families."""
    family = struct.unpack_from("<H", raw)[0]
    if family == socket.AF_INET and len(raw) >= 16:
        port = struct.unpack_from(">H", raw, 2)[0]
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if family == socket.AF_INET6 and len(raw) >= 24:
        port, flow = struct.unpack_from(">HI", raw, 2)
        scope = struct.unpack_from("<I", raw, 24)[0] if len(raw) >= 28 else 0
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope)
    return None


def _family(raw: bytes) -> int:
    return struct.unpack_from("<H", raw)[0]


_ELSEWHERE = "elsewhere"  # the rules leave the address as named (a LAN jail asks once more)
_MEMO_LIMIT = 4096  # addresses remembered per jail; a jail naming more starts over
_LOCALHOST = {4: ipaddress.ip_address("127.0.0.1"), 6: ipaddress.ip_address("::1")}


def _jail_address(call: Call, ip: str, *, binding: bool) -> str | int:
    """FreeBSD's rules: the unspecified address and 127.0.0.1 (::1) mean the jail's own
    address, for a bind and a destination alike (so the host's localhost services are out of
    reach); any other address bound must be the jail's. The rules depend only on the jail's
    own addresses, so each answer is remembered (a server judges the same few addresses on
    every call); only whether another address is the host's is asked each time."""
    memo = call.jail.address_memo
    ruled = memo.get((ip, binding))
    if ruled is None:
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        ruled = memo[ip, binding] = _address_rule(call, ipaddress.ip_address(ip), binding)
    if ruled is not _ELSEWHERE:
        return ruled
    if call.jail.on_lan:  # a jail on the LAN reaches the host as the LAN does not
        addr = ipaddress.ip_address(ip)
        if _the_hosts_own(getattr(addr, "ipv4_mapped", None) or addr):
            return -errno.ECONNREFUSED
    return ip


def _address_rule(call: Call, addr, binding: bool) -> str | int:
    """_jail_address's answer from the jail's own addresses alone: the address to use,
    -errno, or _ELSEWHERE."""
    mapped = getattr(addr, "ipv4_mapped", None)
    if mapped is not None:
        inner = _address_rule(call, mapped, binding)
        return inner if isinstance(inner, int) or inner is _ELSEWHERE else f"::ffff:{inner}"
    if addr.version in call.jail.inherited:  # ip4/ip6=inherit: every host address is its own
        return str(addr)
    own = [a for a in call.jail.addresses if a.version == addr.version]
    if addr in own:
        return str(addr)
    if addr.is_unspecified or addr == _LOCALHOST[addr.version]:
        return str(own[0]) if own else -errno.EADDRNOTAVAIL
    if binding:
        return -errno.EADDRNOTAVAIL
    return _ELSEWHERE


def _the_hosts_own(addr) -> bool:
    """Whether addr is an address of the host's (it can be bound here) that no live jail
    holds: a jail on the LAN as aliases shares the host's stack, where the host's services
    answer on every address of the host's. Another jail's address stays reachable, as on
    FreeBSD."""
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(addr), 0))
        except OSError:
            return False  # not the host's
    from hyjail.record import supervised
    return not any(str(addr) in r.addresses for r in supervised())


def _source_for(call: Call, sock: socket.socket, destination: str | None = None) -> int:
    """Bind an unbound internet socket to the jail's address (port 0), as FreeBSD does before
    a jailed socket talks; 0, or -errno."""
    name = sock.getsockname()
    if name[1] != 0 or name[0] not in ("0.0.0.0", "::"):
        return 0  # bound already (only ever through us, to the jail's address)
    if (4 if sock.family == socket.AF_INET else 6) in call.jail.inherited:
        return 0  # the kernel picks among the host's addresses, all the jail's
    wanted = "0.0.0.0" if sock.family == socket.AF_INET else "::"
    if destination and sock.family == socket.AF_INET6 and destination.startswith("::ffff:"):
        wanted = "::ffff:0.0.0.0"
    source = _jail_address(call, wanted, binding=True)
    if isinstance(source, int):
        return source
    try:
        sock.bind((source, 0) if sock.family == socket.AF_INET else (source, 0, 0, 0))
    except OSError as e:
        return -e.errno
    return 0


def _inet(sock: socket.socket | int) -> bool:
    return not isinstance(sock, int) and sock.family in (socket.AF_INET, socket.AF_INET6)


def _as_made(call: Call, sock: socket.socket | int) -> int | None:
    """The answer for a judged call whose fd is not an internet socket: its errno if not a
    socket; None (it runs as made) where no other task can re-point the fd before the kernel
    looks it up; else EPERM."""
    if isinstance(sock, int):
        return sock
    if "judged-fd-passthrough" in call.jail.weakened:
        return None  # the old pass-through, for the battery's weakened jail
    return -errno.EPERM if _fd_table_shared(call) else None


def _fd_table_shared(call: Call) -> bool:
    """Whether another task of the jail shares the caller's descriptor table (its threads,
    or a clone(CLONE_FILES)); a task that cannot be compared counts as sharing. The caller
    is stopped, so no new sharer can appear: only the caller could make one."""
    for tid in call.jail.tasks():
        if tid == call.tid:
            continue
        order = _libc.syscall(_SYS_KCMP, call.tid, tid, _KCMP_FILES, 0, 0)
        if order == 0 or (order < 0 and ctypes.get_errno() != errno.ESRCH):
            return True
    return False


def _may_bind_port(call: Call, port: int) -> bool:
    if port == 0 or port >= _unprivileged_port_start():
        return True
    try:
        with open(f"/proc/{call.tid}/status") as f:
            caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return False
    return bool(caps & (1 << _CAP_NET_BIND_SERVICE))


def _blocking(sock: socket.socket, flags: int = 0) -> bool:
    return not (fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
                or flags & socket.MSG_DONTWAIT)


def _later_if_blocking(sock: socket.socket, flags: int,
                       work: Callable[[socket.socket], int]) -> int | Deferred:
    """Run work(sock) now, or, on a blocking socket, in a worker with its own copy of it."""
    if not _blocking(sock, flags):
        return work(sock)
    held = sock.dup()

    def run() -> int:
        try:
            return work(held)
        finally:
            held.close()
    return Deferred(run)


def _errno_of(action: Callable[[], int]) -> int:
    try:
        return action()
    except OSError as e:
        return -(e.errno or errno.EIO)


# ---- the calls -----------------------------------------------------------------------------

@contextlib.contextmanager
def _judged(call: Call, fd: int, address: int, length: int, *, binding: bool
            ) -> Iterator[tuple[socket.socket, tuple] | int | None]:
    """The tracee's internet socket and the address it named, judged by FreeBSD's rules, as
    (socket, address to use); or, instead, the call's answer: -errno, or None to let it run
    (not an internet socket, or connect's AF_UNSPEC, which only dissolves an association)."""
    raw = _read_sockaddr(call, address, length)
    if isinstance(raw, int):
        yield raw
        return
    with _taken(call, fd) as sock:
        if not binding and _stood_in(call, sock):
            yield _Unix(sock.dup(), raw)
            return
        if not _inet(sock):
            yield _as_made(call, sock)
            return
        decoded = _decode(raw)
        if decoded is None:
            unspec = not binding and _family(raw) == socket.AF_UNSPEC
            # connect(AF_UNSPEC) dissolves an association: done here, on our copy, since the
            # kernel would read the address again (and another thread may have changed it).
            yield _errno_of(lambda: _dissolve(sock)) if unspec else -errno.EAFNOSUPPORT
        elif binding and _family(raw) != sock.family:
            yield -errno.EINVAL
        else:
            ip = _jail_address(call, decoded[0], binding=binding)
            yield ip if isinstance(ip, int) else (sock, (ip, *decoded[1:]))


@dataclass(frozen=True)
class _Unix:
    """A unix socket's call that names an address, for the stand-in (`hyjail.trace.unix`):
    our own copy of the socket (closed by the stand-in's work) and of the address."""
    sock: socket.socket
    raw: bytes


def _stood_in(call: Call, sock: socket.socket | int) -> bool:
    """Whether this socket's addressed calls go to the stand-in: a unix socket, where the
    plan's R3 has no Landlock scope to keep abstract names in."""
    return call.jail.unix_stand_in and not isinstance(sock, int) and \
        sock.family == socket.AF_UNIX


def _by_stand_in(sock: socket.socket, work: Callable[[], int]) -> Deferred:
    def run() -> int:
        try:
            return work()
        finally:
            sock.close()
    return Deferred(run, assumes_identity=True)


def _dissolve(sock: socket.socket) -> int:
    unspec = struct.pack("<H14x", socket.AF_UNSPEC)
    if _libc.connect(sock.fileno(), unspec, len(unspec)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return 0


def bind(call: Call, fd: int, address: int, length: int) -> int | None:
    with _judged(call, fd, address, length, binding=True) as judged:
        if not isinstance(judged, tuple):
            return judged
        sock, target = judged
        if not _may_bind_port(call, target[1]):
            return -errno.EACCES
        return _errno_of(lambda: sock.bind(target) or 0)


def listen(call: Call, fd: int, backlog: int, perform: bool = False) -> int | None:
    """An unbound socket would listen on every address of the host: bind it first. Then
    listen on our copy, whatever the family: let run, the call could find another socket at
    fd N (`perform` is socketcall's, whose fd sits in memory: performed even when weakened)."""
    with _taken(call, fd) as sock:
        if isinstance(sock, int):
            return sock
        if _inet(sock):
            bound = _source_for(call, sock)
            if bound:
                return bound
        if not perform and "judged-fd-passthrough" in call.jail.weakened:
            return None
        if _libc.listen(sock.fileno(), _int32(backlog)) != 0:
            return -ctypes.get_errno()
        return 0


def connect(call: Call, fd: int, address: int, length: int) -> int | Deferred | None:
    with _judged(call, fd, address, length, binding=False) as judged:
        if isinstance(judged, _Unix):
            return _by_stand_in(judged.sock, unix.connect(call, judged.sock, judged.raw))
        if not isinstance(judged, tuple):
            return judged
        sock, target = judged
        return _source_for(call, sock, target[0]) or _later_if_blocking(
            sock, 0, lambda s: -s.connect_ex(target))


def sendto(call: Call, fd: int, buffer: int, length: int, flags: int, address: int,
           address_length: int) -> int | Deferred | None:
    if address == 0:
        return None  # to the connected peer: its source was bound when it connected
    with _judged(call, fd, address, address_length, binding=False) as judged:
        if isinstance(judged, _Unix):
            try:
                data = memory.read(call.tid, buffer, min(length, _MAX_DATA)) if length else b""
            except OSError:
                judged.sock.close()
                return -errno.EFAULT
            return _unix_send(call, judged.sock, judged.raw, [data], [], flags)
        if not isinstance(judged, tuple):
            return judged
        sock, target = judged
        bound = _source_for(call, sock, target[0])
        if bound:
            return bound
        try:
            data = memory.read(call.tid, buffer, min(length, _MAX_DATA)) if length else b""
        except OSError:
            return -errno.EFAULT
        return _later_if_blocking(
            sock, flags, lambda s: _errno_of(lambda: s.sendto(data, flags, target)))


@dataclass(frozen=True)
class _Message:
    name: bytes | None
    data: list[bytes]
    control: list[tuple[int, int, bytes]]


def _read_msghdr(call: Call, address: int) -> _Message | int:
    """A msghdr and everything it points to, copied once, in the caller's ABI's layout."""
    compat = call.abi != "x86_64"
    layout = "<7I" if compat else "<QI4xQQQQI"
    try:
        fields = struct.unpack(layout, memory.read(call.tid, address, struct.calcsize(layout)))
        name_at, name_len, iov_at, iov_len, control_at, control_len = fields[:6]
        if iov_len > 1024 or control_len > 4096:
            return -errno.EMSGSIZE if iov_len > 1024 else -errno.ENOBUFS
        name = _read_sockaddr(call, name_at, name_len) if name_at else None
        if isinstance(name, int):
            return name
        vector = "<II" if compat else "<QQ"
        size = struct.calcsize(vector)
        raw_iov = memory.read(call.tid, iov_at, size * iov_len) if iov_len else b""
        data, total = [], 0
        for i in range(iov_len):
            base, length = struct.unpack_from(vector, raw_iov, i * size)
            length = min(length, _MAX_DATA - total)
            data.append(memory.read(call.tid, base, length) if length else b"")
            total += length
        control = memory.read(call.tid, control_at, control_len) if control_at else b""
    except OSError:
        return -errno.EFAULT
    parsed = _cmsgs(control, compat)
    return parsed if isinstance(parsed, int) else _Message(name, data, parsed)


def _cmsgs(raw: bytes, compat: bool) -> list[tuple[int, int, bytes]] | int:
    header = "<Iii" if compat else "<Qii"
    align = 4 if compat else 8
    size = struct.calcsize(header)
    out, at = [], 0
    while at + size <= len(raw):
        length, level, kind = struct.unpack_from(header, raw, at)
        if length < size or at + length > len(raw):
            return -errno.EINVAL
        out.append((level, kind, raw[at + size:at + length]))
        at += (length + align - 1) & ~(align - 1)
    return out


def _check_control(call: Call, control: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in control:
        if (level, kind) in _PKTINFO:
            source = data[4:8] if level == socket.IPPROTO_IP else data[:16]
            addr = ipaddress.ip_address(source)
            if (not addr.is_unspecified and addr not in call.jail.addresses
                    and addr.version not in call.jail.inherited):
                return -errno.EADDRNOTAVAIL
        elif (level, kind) not in _HARMLESS_CMSG:
            return -errno.EPERM
    return 0


def _send_message(call: Call, sock: socket.socket, message: _Message, flags: int) -> int:
    """Send one copied message from the jail's address; bytes sent, or -errno."""
    target = None
    if message.name is not None:
        decoded = _decode(message.name)
        if decoded is None:
            return -errno.EAFNOSUPPORT
        ip = _jail_address(call, decoded[0], binding=False)
        if isinstance(ip, int):
            return ip
        target = (ip, *decoded[1:])
    refused = _check_control(call, message.control) or _source_for(
        call, sock, target[0] if target else None)
    if refused:
        return refused
    return _errno_of(lambda: sock.sendmsg(message.data, message.control, flags,
                                          *([target] if target else [])))


def _unix_send(call: Call, sock: socket.socket, raw: bytes | None, data: list[bytes],
               control: list[tuple[int, int, bytes]], flags: int) -> int | Deferred:
    work = unix.send(call, sock, raw, data, control, flags)
    if isinstance(work, int):
        sock.close()
        return work
    return _by_stand_in(sock, work)


def _datagram_stood_in(call: Call, sock: socket.socket | int) -> bool:
    """A unix datagram socket's sendmsg names its address in memory the kernel would read
    again: the stand-in's. (A stream or seqpacket socket's ignores or refuses a name.)"""
    return _stood_in(call, sock) and sock.type == socket.SOCK_DGRAM


def sendmsg(call: Call, fd: int, address: int, flags: int) -> int | Deferred | None:
    with _taken(call, fd) as sock:
        if _datagram_stood_in(call, sock):
            message = _read_msghdr(call, address)
            if isinstance(message, int):
                return message
            return _unix_send(call, sock.dup(), message.name, message.data, message.control,
                              flags)
        if not _inet(sock):
            return _as_made(call, sock)
        message = _read_msghdr(call, address)
        if isinstance(message, int):
            return message
        return _later_if_blocking(sock, flags,
                                  lambda s: _send_message(call, s, message, flags))


def sendmmsg(call: Call, fd: int, address: int, count: int, flags: int
             ) -> int | Deferred | None:
    size = 32 if call.abi != "x86_64" else 64  # mmsghdr: msghdr, then msg_len
    offset = 28 if call.abi != "x86_64" else 56
    with _taken(call, fd) as sock:
        if _datagram_stood_in(call, sock) and count:
            # The first message alone (sendmmsg may send fewer): a stand-in acts once.
            message = _read_msghdr(call, address)
            if isinstance(message, int):
                return message
            sent = _unix_send(call, sock.dup(), message.name, message.data, message.control,
                              flags)
            if isinstance(sent, int):
                return sent
            return Deferred(lambda: _first_sent(call, sent, address + offset),
                            assumes_identity=sent.assumes_identity)
        if not _inet(sock):
            return _as_made(call, sock)
        messages = []
        for i in range(min(count, 1024)):
            message = _read_msghdr(call, address + i * size)
            if isinstance(message, int):
                return message if not messages else len(messages)
            messages.append(message)

        def work(s: socket.socket) -> int:
            sent = 0
            for i, message in enumerate(messages):
                result = _send_message(call, s, message, flags)
                if result < 0:
                    return result if sent == 0 else sent
                with contextlib.suppress(OSError):
                    memory.write(call.tid, address + i * size + offset,
                                 struct.pack("<I", result))
                sent += 1
            return sent
        return _later_if_blocking(sock, flags, work)


def _first_sent(call: Call, sent: Deferred, length_at: int) -> int:
    result = sent.work()
    if result < 0:
        return result
    with contextlib.suppress(OSError):
        memory.write(call.tid, length_at, struct.pack("<I", result))
    return 1


def setsockopt(call: Call, fd: int, level: int, name: int, value: int, length: int
               ) -> int | None:
    """Only reached through i386's socketcall, whose arguments sit in memory: performed on
    our copy, refusing the levels that add addresses."""
    if _int32(level) in REFUSED_OPTION_LEVELS:
        return -errno.EPERM
    with _taken(call, fd) as sock:
        if isinstance(sock, int):
            return sock
        try:
            data = memory.read(call.tid, value, min(length, 4096)) if length else b""
        except OSError:
            return -errno.EFAULT
        return _errno_of(lambda: sock.setsockopt(_int32(level), _int32(name), data) or 0)


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def socket_call(call: Call, family: int, protocol: int) -> int | None:
    versions = {a.version for a in call.jail.addresses} | call.jail.inherited
    if {socket.AF_INET: 4, socket.AF_INET6: 6}.get(_int32(family), 0) not in versions | {0}:
        return -errno.EAFNOSUPPORT
    if (_int32(family) not in (*CONFINED_FAMILIES, AF_PACKET)
            and "open-families" not in call.jail.weakened):
        return -errno.EAFNOSUPPORT  # none confines it here (allow.socket_af needs a netns)
    return -errno.EPROTONOSUPPORT if _int32(protocol) in REFUSED_PROTOCOLS else None


def _made_directly(call: Call, number: int, args: tuple[int, ...]) -> int | Instead:
    """socketcall's SOCKET or SOCKETPAIR, judged on our copy of its arguments, then made as
    the direct call from that copy: resumed as it was, the kernel would read the family from
    memory again, where another thread may have changed it since."""
    refused = socket_call(call, args[0], args[2])
    return refused if refused is not None else Instead(number, args)


def socketcall(call: Call) -> int | Deferred | Instead | None:
    """i386's multiplexer: the arguments are copied once, then handled as the direct calls
    are, except that every judged call is performed, never let through (the kernel would
    read the arguments again)."""
    which = call.args[0] & 0xFFFFFFFF
    if which not in _SOCKETCALL:
        return None
    try:
        raw = memory.read(call.tid, call.args[1], 4 * _SOCKETCALL_ARGS[which])
    except OSError:
        return -errno.EFAULT
    args = struct.unpack(f"<{_SOCKETCALL_ARGS[which]}I", raw)
    fd = _int32(args[0])
    match _SOCKETCALL[which]:
        case "socket":
            return _made_directly(call, _I386_SOCKET, args)
        case "socketpair":
            return _made_directly(call, _I386_SOCKETPAIR, args)
        case "bind":
            return _performed(bind(call, fd, args[1], args[2]))
        case "connect":
            return _performed(connect(call, fd, args[1], args[2]))
        case "listen":
            return listen(call, fd, _int32(args[1]), perform=True)
        case "sendto":
            if not args[4]:
                return _send_connected(call, fd, args[1], args[2], args[3])
            return _performed(sendto(call, fd, *args[1:6]))
        case "setsockopt":
            return setsockopt(call, fd, *args[1:5])
        case "sendmsg":
            return _performed(sendmsg(call, fd, args[1], args[2]))
        case "sendmmsg":
            return _performed(sendmmsg(call, fd, *args[1:4]))
    return None


def _performed(result: int | Deferred | None) -> int | Deferred:
    """A multiplexed call may not run as made; one the direct call would let through (an
    AF_UNIX socket, for one) is refused instead: 32-bit programs use the direct calls."""
    return -errno.ENOSYS if result is None else result


def _send_connected(call: Call, fd: int, buffer: int, length: int, flags: int
                    ) -> int | Deferred:
    with _taken(call, fd) as sock:
        if not _inet(sock):
            return sock if isinstance(sock, int) else -errno.ENOSYS
        try:
            data = memory.read(call.tid, buffer, min(length, _MAX_DATA)) if length else b""
        except OSError:
            return -errno.EFAULT
        return _later_if_blocking(sock, flags,
                                  lambda s: _errno_of(lambda: s.send(data, flags)))
