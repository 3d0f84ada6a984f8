"""The network helper: the one process that loads pyroute2 and changes the host's network for
jails, kept warm between jails so that no jail's start pays pyroute2's import (a quarter of a
second here; a veth made directly in the jail's network namespace costs about 10 ms).

Owns: serving its rendezvous (`hyjail.net.rendezvous`: a socket in a directory only its uid
can enter, one helper per uid, code and seccomp state, whose lock it holds for its life, so a
client can tell it from an impostor), who may ask (root's hyjail supervisors, each for its own
jail's link only, as the registry's records have it), attaching a jail's veth
(`hyjail.net.veth`) or putting it on the LAN (`hyjail.net.lanlink`: a child of the interface
its record names, the record's addresses as aliases, or interfaces moved in), undoing that
as soon as the supervisor's connection closes (the jail's end, or the supervisor's death),
reclaiming what a stale jail left, and leaving once idle for LINGER seconds (or at SIGTERM),
its socket removed.

    python -m hyjail.net.netd          (started by hyjail.net.link when none answers)
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import selectors
import signal
import socket
import sys
import threading
import time

from hyjail.net import rendezvous

LINGER = 30.0  # seconds without a jail before the helper leaves
_HOST_LINK = re.compile(r"hj[0-9]+h")  # SPEC section 3: what hyjail.net.host_link_name makes
RELEASED = b'{"released": true}'  # a jail's link: deleted from here on, its name held
LOCK_FD = "HYJAIL_NETD_LOCK_FD"  # the rendezvous lock its starter hands it
STARTING_FD = "HYJAIL_NETD_STARTING_FD"  # "any-netd" only: the old ".starting" name


address = rendezvous.address  # public: where the helper listens (the battery takes it)


class Helper:
    def __init__(self) -> None:
        self.connections = 0
        self.idle_since = time.monotonic()
        self.lock = threading.Lock()
        self.link_locks: dict[str, threading.Lock] = {}

    def link_lock(self, name: str) -> threading.Lock:
        with self.lock:
            return self.link_locks.setdefault(name, threading.Lock())

    def serve(self, listener: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ)
        while True:
            if selector.select(timeout=1.0):
                connection, _ = listener.accept()
                with self.lock:
                    self.connections += 1
                threading.Thread(target=self.handle, args=(connection,), daemon=True).start()
            with self.lock:
                if not self.connections and time.monotonic() - self.idle_since > LINGER:
                    return

    def handle(self, connection: socket.socket) -> None:
        try:
            with connection:
                self._handle(connection)
        finally:
            with self.lock:
                self.connections -= 1
                self.idle_since = time.monotonic()

    def _handle(self, connection: socket.socket) -> None:
        message, fds, _, _ = socket.recv_fds(connection, 65536, 1)
        try:
            request = json.loads(message)
            pid, uid = rendezvous.peer(connection)
            if uid != 0:
                raise PermissionError("only root's jails have a veth")
            if "lan" in request or "reclaim_lan" in request:
                return self._lan(connection, pid, request, fds)
            if "nat" in request or "reclaim_nat" in request:
                return self._nat(connection, pid, request)
            name = request.get("attach", request.get("reclaim", ""))
            if not _HOST_LINK.fullmatch(name):  # never any other interface of the host's
                raise PermissionError(f"{name!r}: not a jail's link (hj<JID>h)")
            if "attach" in request:
                if not fds or not _supervises(pid, name):
                    raise PermissionError(f"{name}: not the asking supervisor's jail link")
                self.attach(name, fds[0], request)
                connection.send(b'{"ok": true}')
                _until_closed(connection)  # the jail lives; then its link goes
                with self.link_lock(name):
                    # The name is held until the link is gone (a jail given the JID next
                    # waits for this lock): the supervisor need not wait out the deletion
                    # (30 ms of the kernel's), only this.
                    with contextlib.suppress(OSError):
                        connection.send(RELEASED)
                    _delete(name)
            elif "reclaim" in request:
                if _owned(name):
                    raise PermissionError(f"{name}: a live jail's link")
                with self.link_lock(name):
                    _delete(name)
                connection.send(b'{"ok": true}')
        except Exception as e:  # every failure is the asker's one line; the helper goes on
            from hyjail.errors import HyjailError
            text = str(e) if isinstance(e, HyjailError | PermissionError) else \
                f"{type(e).__name__}: {e}"
            with contextlib.suppress(OSError):
                connection.send(json.dumps({"error": text}).encode())
        finally:
            for fd in fds:
                os.close(fd)

    def _lan(self, connection: socket.socket, pid: int, request: dict, fds: list[int]) -> None:
        """A jail on the LAN (`hyjail.net.lan`): only as the asking supervisor's own jail's
        record has it (its mode, interfaces, addresses), undone when its connection closes;
        or, for a jail whose supervisor is gone, its aliases removed."""
        from hyjail.net import lanlink
        if "reclaim_lan" in request:
            lan = request["reclaim_lan"]
            if lan.get("mode") == "alias" and not _lan_held(lan):
                with self.link_lock(lan["interfaces"][0]):
                    lanlink.remove_aliases(lan["interfaces"][0], lan.get("added", []))
            connection.send(b'{"ok": true}')
            return
        lan = request["lan"]
        if not _supervises_lan(pid, lan):
            raise PermissionError("not the asking supervisor's jail on the LAN")
        mode, interfaces = lan["mode"], list(lan["interfaces"])
        gateway = lan.get("gateway")
        if mode in ("child", "vnet") and not fds:
            raise PermissionError(f"{mode}: no network namespace given")
        with self.link_lock(interfaces[0]):
            if mode == "child":
                kind = lanlink.attach_child(interfaces[0], fds[0], lan["addresses"], gateway)
                added: list[str] = []
            elif mode == "vnet":
                lanlink.move_in(interfaces, fds[0], lan["addresses"], gateway)
                kind, added = "vnet", []
            else:
                added, kind = lanlink.add_aliases(interfaces[0], lan["addresses"]), "alias"
        connection.send(json.dumps({"ok": True, "kind": kind, "added": added}).encode())
        _until_closed(connection)  # the jail lives; then what it was given goes
        with self.link_lock(interfaces[0]):
            if mode == "vnet":
                lanlink.move_back(interfaces, fds[0])
            elif mode == "alias":
                lanlink.remove_aliases(interfaces[0], added)

    def _nat(self, connection: socket.socket, pid: int, request: dict) -> None:
        """A jail's way out and in (`hyjail.net.nat`): as the asking supervisor's record
        says, undone when its connection closes; a dead jail's, for `hyjail gc`."""
        from hyjail.net import nat
        if "reclaim_nat" in request:
            wanted = request["reclaim_nat"]
            if not any(r.jid == wanted["jid"] for r in _records()):
                with self.lock:
                    _undo_nat(wanted)
            connection.send(b'{"ok": true}')
            return
        wanted = request["nat"]
        if not _supervises_nat(pid, wanted):
            raise PermissionError("not the asking supervisor's jail's nat or published ports")
        published = [nat.Published(**p) for p in wanted.get("publish", [])]
        with self.lock:  # the table and the forwarding settings are shared by every jail
            turned_on = []
            try:
                script = nat.rules(wanted["jid"], wanted["veth"], wanted["addresses"],
                                   wanted.get("uplink"), published)
                for interface in _crossed(wanted, published):
                    if not nat.forwarding(interface):
                        nat.set_forwarding(interface, True)
                        turned_on.append(interface)
                        if interface != wanted["veth"]:
                            script += nat.guard(interface)
                    elif _forwarded_by_us(interface):
                        turned_on.append(interface)  # another jail's doing: ours too now
                nat.run(script)
            except BaseException:
                _undo_nat({**wanted, "forwarded": turned_on})
                raise
        connection.send(json.dumps({"ok": True, "forwarded": turned_on}).encode())
        _until_closed(connection)
        with self.lock:
            _undo_nat({**wanted, "forwarded": turned_on})

    def attach(self, name: str, netns_fd: int, request: dict) -> None:
        from hyjail.net import veth
        addresses = tuple(ipaddress.ip_address(a) for a in request["addresses"])
        host = tuple(ipaddress.ip_address(a) for a in request["host_addresses"])
        with self.link_lock(name):
            veth.create(name, netns_fd, addresses, host)


def _until_closed(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while connection.recv(64):
            pass


def _delete(name: str) -> None:
    from hyjail.net import veth
    veth.delete(name)


def _records():
    from hyjail.record import supervised
    return supervised()


def _supervises(pid: int, name: str) -> bool:
    """Whether pid is the live supervisor of the jail whose host link is `name`."""
    return any(r.supervisor_pid == pid and r.host_link == name for r in _records())


def _owned(name: str) -> bool:
    return any(r.host_link == name for r in _records())


def _supervises_lan(pid: int, lan: dict) -> bool:
    """Whether pid supervises a live jail whose record names exactly this LAN request."""
    for record in _records():
        kept = record.params.get("lan") if isinstance(record.params, dict) else None
        if record.supervisor_pid == pid and isinstance(kept, dict):
            return (kept.get("mode"), kept.get("interfaces"), kept.get("addresses")) == (
                lan.get("mode"), lan.get("interfaces"), lan.get("addresses"))
    return False


def _supervises_nat(pid: int, wanted: dict) -> bool:
    for record in _records():
        kept = record.params.get("nat") if isinstance(record.params, dict) else None
        if record.supervisor_pid == pid and isinstance(kept, dict):
            same = ("jid", "veth", "addresses", "uplink", "publish")
            return record.jid == wanted.get("jid") and record.host_link == wanted.get("veth") \
                and all(kept.get(k) == wanted.get(k) for k in same)
    return False


def _crossed(wanted: dict, published) -> list[str]:
    """The interfaces the jail's traffic is forwarded in through: its veth, the uplink
    (replies), and where its published ports are reached (the interface holding the
    address, or every one with an address)."""
    from pyroute2 import IPRoute
    crossed = [wanted["veth"], *([wanted["uplink"]] if wanted.get("uplink") else [])]
    if published:
        with IPRoute() as ipr:
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
            for message in ipr.get_addr():
                name = names.get(message["index"], "")
                address = message.get_attr("IFA_ADDRESS")
                if name == "lo" or _HOST_LINK.fullmatch(name) or name in crossed:
                    continue
                if any(p.host_address in (None, address) for p in published):
                    crossed.append(name)
    return crossed


def _forwarded_by_us(interface: str) -> bool:
    return any(interface in (r.params.get("nat") or {}).get("forwarded", [])
               for r in _records() if isinstance(r.params, dict))


def _undo_nat(wanted: dict) -> None:
    """A jail's rules gone; forwarding off, with its guard, where hyjail turned it on and no
    other live jail needs it."""
    from hyjail.net import nat
    nat.remove_jail(wanted["jid"])
    for interface in wanted.get("forwarded", []):
        others = [r for r in _records() if r.jid != wanted["jid"] and interface in
                  ((r.params.get("nat") or {}) if isinstance(r.params, dict) else {})
                  .get("forwarded", [])]
        if not others:
            with contextlib.suppress(OSError):
                nat.set_forwarding(interface, False)
            nat.remove(f"hyjail forwarding of {interface}")


def _lan_held(lan: dict) -> bool:
    """Whether a live jail still has these aliases on this interface."""
    return any(isinstance(r.params, dict) and isinstance(r.params.get("lan"), dict)
               and r.params["lan"].get("interfaces") == lan.get("interfaces")
               and set(r.params["lan"].get("addresses", [])) & set(lan.get("addresses", []))
               for r in _records())


def _leave(signum: int, frame: object) -> None:
    sys.exit(0)  # through main's finally: the socket goes with the helper


def main() -> None:
    import prctl
    prctl.set_name("hyjail-netd")
    prctl.set_proctitle("hyjail-netd")
    prctl.set_dumpable(False)  # a host helper: no one of its uid reads or traces it
    if rendezvous.weakened():
        return _main_unchecked()
    from hyjail.errors import SetupError
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _leave)
    lock = int(os.environ.pop(LOCK_FD, "-1"))
    try:
        if lock < 0:  # started by hand: take the lock, unless a helper holds it
            lock = rendezvous.open_directory()
            if not rendezvous.try_lock(lock):
                return
        from hyjail.net import veth  # noqa: F401  (loaded once, now: what the helper is for)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as \
                listener:
            try:
                rendezvous.bind(listener, lock)
                listener.listen(128)
                rendezvous.sweep()  # what killed helpers, or helpers of older code, left
                Helper().serve(listener)
            finally:  # while the lock is held: no one finds a socket no helper answers
                rendezvous.unbind(lock)
    except (OSError, SetupError) as e:
        print(f"hyjail-netd: {e}", file=sys.stderr)


def _main_unchecked() -> None:
    """The old rendezvous ("any-netd"): an abstract name anyone can compute and bind first."""
    starting = int(os.environ.pop(STARTING_FD, "-1"))
    from hyjail.net import veth  # noqa: F401
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        listener.bind(address())
    except OSError:
        return  # another helper answers already
    listener.listen(128)
    if starting >= 0:
        os.close(starting)  # ready: others may start one again when this one has left
    Helper().serve(listener)


if __name__ == "__main__":
    main()
