"""A jail's record as the registry keeps it, and the plain read of a directory of records.

Owns: the Record type (its JSON form and whether its supervisor lives) and reading every
record of a jails directory without the lock. The registry (`hyjail.registry`) writes and
reclaims records; the stale-jail reclaimer (`hyjail.reclaim`) and the network helper
(`hyjail.net.netd`) only read them. It imports nothing of hyjail's but leaf modules (`linux`,
`frozen`, `jsontext`), so that each of those can import it without an import cycle.
"""

from __future__ import annotations

import os

from hyjail import jsontext
from hyjail.frozen import asdict, frozen, made_by
from hyjail.linux import process_start_time

STATE_DIR = "/run/hyjail"  # root's registry (SPEC section 3)
JAILS_DIR = os.path.join(STATE_DIR, "jails")


@frozen
class Record:
    """A live jail as the registry keeps it."""

    jid: int
    name: str
    hostname: str
    path: str
    addresses: tuple[str, ...]
    backend: str
    supervisor_pid: int
    supervisor_start: int
    started: float
    host_link: str | None = None
    init_pid: int | None = None
    init_start: int | None = None
    params: dict = made_by(dict)  # FreeBSD parameters and stop hooks (JSON)

    def supervisor_alive(self) -> bool:
        return process_start_time(self.supervisor_pid) == self.supervisor_start

    def to_json(self) -> str:
        return jsontext.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Record:
        data = jsontext.loads(text)
        data["addresses"] = tuple(data["addresses"])
        return cls(**data)


def read_all(jails_dir: str) -> list[Record]:
    """Every record in jails_dir, by JID; unreadable or foreign entries are skipped."""
    try:
        names = os.listdir(jails_dir)
    except FileNotFoundError:
        return []
    records = []
    for entry in names:
        if not entry.endswith(".json"):
            continue
        try:
            with open(os.path.join(jails_dir, entry)) as f:
                records.append(Record.from_json(f.read()))
        except (OSError, ValueError, TypeError):
            continue  # removed meanwhile, or not ours: never shown as a jail
    return sorted(records, key=lambda r: r.jid)


def supervised(jails_dir: str = JAILS_DIR) -> list[Record]:
    """The records whose supervisor lives, read without the lock and reclaiming nothing: for a
    helper that answers a caller who may hold the lock (the network helper)."""
    return [r for r in read_all(jails_dir) if r.supervisor_alive()]
