"""The registry of live jails under /run/hyjail/: one JSON record per jail.

Owns: JID allocation (lowest free integer >= 1), name and address uniqueness, atomic record
writes under an exclusive lock on the state directory, and telling live records from stale
ones (a record is live while its supervisor, identified by pid *and* start time, lives).
Undoing what a dead jail left on the host is `hyjail.reclaim`, which every stale record
found here goes through. The record itself, and its plain read, is `hyjail.record` (below
both, so that the reclaimer and the network helper read records without importing this).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import time
from collections.abc import Callable, Iterator

from hyjail import record as records
from hyjail.errors import SetupError
from hyjail.frozen import replace
from hyjail.linux import process_start_time
from hyjail.reclaim import reclaim as reclaim_stale
from hyjail.record import STATE_DIR, Record

__all__ = ["STATE_DIR", "Record", "Registry", "default_state_dir"]


def default_state_dir() -> str:
    """Root's registry is STATE_DIR; another user's jails are listed in a directory of their
    own (`hyjail.rootless.state_dir`), so users never see or touch each other's records."""
    from hyjail import rootless
    return STATE_DIR if rootless.host_root() else rootless.state_dir()


class Registry:
    def __init__(self, state_dir: str | None = None,
                 reclaim: Callable[[Record], None] = reclaim_stale):
        self.reclaim = reclaim
        self.state_dir = state_dir or default_state_dir()
        self.jails_dir = os.path.join(self.state_dir, "jails")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry's exclusive lock (a flock on the state directory itself, so the
        lock leaves no file behind)."""
        os.makedirs(self.jails_dir, mode=0o700, exist_ok=True)
        fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _path(self, jid: int) -> str:
        return os.path.join(self.jails_dir, f"{jid}.json")

    def _read_all(self) -> list[Record]:
        return records.read_all(self.jails_dir)

    def _write(self, record: Record) -> None:
        tmp = os.path.join(self.jails_dir, f".{record.jid}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(record.to_json())
        os.replace(tmp, self._path(record.jid))

    def read(self, jid: int) -> Record | None:
        """One jail's record as it is on disk now (no lock, nothing reclaimed)."""
        try:
            with open(self._path(jid)) as f:
                return Record.from_json(f.read())
        except (FileNotFoundError, ValueError):
            return None

    def live(self) -> list[Record]:
        """The live jails. Stale records found on the way are reclaimed and dropped."""
        records = self._read_all()
        if all(r.supervisor_alive() for r in records):
            return records
        with self.locked():
            return self._live_locked()

    def supervised(self) -> list[Record]:
        """The records whose supervisor lives, read without the lock and reclaiming nothing:
        for a helper that answers a caller who may hold the lock (the network helper)."""
        return records.supervised(self.jails_dir)

    def collect(self, orphans: Callable[[set[int]], None]) -> None:
        """`hyjail gc`: reclaim stale records, then, still under the lock (so no jail is
        between its admission and its first resources), hand the live JIDs to `orphans`,
        which removes what no live jail owns."""
        with self.locked():
            orphans({record.jid for record in self._live_locked()})

    def _live_locked(self) -> list[Record]:
        live = []
        for record in self._read_all():
            if record.supervisor_alive():
                live.append(record)
                continue
            self.reclaim(record)
            self.remove(record.jid)
        return live

    def admit(self, *, name: str | None, hostname: str, path: str, addresses: tuple[str, ...],
              backend: str, params: dict | None = None, jid: int | None = None,
              link_name: Callable[[int], str | None] = lambda jid: None) -> Record:
        """Allocate a JID and write this supervisor's record, refusing taken names/addresses."""
        with self.locked():
            live = self._live_locked()
            for other in live:
                if name is not None and other.name == name:
                    raise SetupError(f"{name}: a running jail (JID {other.jid}) has that name")
                # Loopback addresses are never shared: each jail has its own lo.
                held = {a for a in set(addresses) & set(other.addresses)
                        if not ipaddress.ip_address(a).is_loopback}
                if held:
                    raise SetupError(f"{held.pop()}: already held by running jail "
                                     f"{other.name} (JID {other.jid})")
            taken = {r.jid for r in live}
            if jid in taken:
                raise SetupError(f"{jid}: JID taken by a running jail")
            jid = jid or next(n for n in range(1, len(taken) + 2) if n not in taken)
            me = os.getpid()
            record = Record(
                jid=jid, name=name or str(jid), hostname=hostname, path=path,
                addresses=addresses, backend=backend, supervisor_pid=me,
                supervisor_start=process_start_time(me) or 0, started=time.time(),
                host_link=link_name(jid), params=dict(params or {}),
            )
            self._write(record)
            return record

    def update(self, record: Record, **changes) -> Record:
        """The jail's record with `changes`, applied to what is on disk now: several writers
        keep one record (its supervisor renames a traced jail; jail(8) adds hooks and the
        lifetime watch), and a writer's older copy must not undo another's fields."""
        with self.locked():
            current = self.read(record.jid)
            if current is None or (current.supervisor_pid, current.supervisor_start) != (
                    record.supervisor_pid, record.supervisor_start):
                current = record  # not yet written, or another jail's now
            updated = replace(current, **changes)
            self._write(updated)
        return updated

    def door_path(self, jid: int) -> str:
        """Where a trace jail's supervisor listens for jexec (`hyjail.trace.supervisor`)."""
        return os.path.join(self.jails_dir, f"{jid}.door")

    def resolv_path(self, jid: int) -> str:
        """The resolv.conf `--dns` gives a jail (`hyjail.net.resolv`), removed with it."""
        return os.path.join(self.jails_dir, f"{jid}.resolv.conf")

    def remove(self, jid: int) -> None:
        """The jail's record, and its door and resolv.conf if a supervisor killed outright
        left them."""
        for path in (self._path(jid), self.door_path(jid), self.resolv_path(jid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
