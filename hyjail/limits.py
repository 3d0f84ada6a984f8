"""Resource limits of a jail: what the user asked for, validated once.

Owns: parsing `--memory`, `--pids`, `--cpus` (enforced through cgroups, `hyjail.cgroups`) and
`--rlimit NAME=SOFT[:HARD]` (set on the command before exec), and refusing an rlimit above
the host's hard limit: hyjail never raises a limit, it only lowers one.
"""

from __future__ import annotations

import resource

from hyjail import charsets
from hyjail.errors import SetupError
from hyjail.frozen import frozen

RLIMITS = {
    "as": resource.RLIMIT_AS, "core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA, "fsize": resource.RLIMIT_FSIZE,
    "locks": 10, "memlock": resource.RLIMIT_MEMLOCK,  # RLIMIT_LOCKS: not in Python's module
    "msgqueue": resource.RLIMIT_MSGQUEUE, "nice": resource.RLIMIT_NICE,
    "nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC,
    "rss": resource.RLIMIT_RSS, "rtprio": resource.RLIMIT_RTPRIO,
    "rttime": resource.RLIMIT_RTTIME, "sigpending": resource.RLIMIT_SIGPENDING,
    "stack": resource.RLIMIT_STACK,
}
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_UNLIMITED = ("unlimited", "infinity")


@frozen
class Limits:
    """The jail's resource limits: its cgroups' and its command's rlimits."""

    memory: int | None = None  # bytes
    pids: int | None = None
    cpus: float | None = None  # CPUs' worth of time per period
    cpu_shares: int | None = None  # relative weight, v1's cpu.shares scale (2..262144)
    rlimits: tuple[tuple[str, int, int], ...] = ()  # (name, soft, hard)

    def describe(self) -> dict[str, str]:
        shown = {"memory": self.memory, "pids": self.pids, "cpus": self.cpus,
                 "cpu_shares": self.cpu_shares}
        out = {k: str(v) for k, v in shown.items() if v is not None}
        out.update({f"rlimit.{n}": f"{_show(s)}:{_show(h)}" for n, s, h in self.rlimits})
        return out


def _show(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def parse_memory(text: str) -> int:
    """Bytes: digits, then a unit (k, m, g, t), an 'i' and a 'b', each optional, in any case."""
    number = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = number[-1:] if number[-1:] in ("k", "m", "g", "t") else ""
    number = number[:len(number) - len(unit)]
    if not charsets.made_of(number, charsets.DIGITS) or int(number) == 0:
        raise SetupError(f"--memory {text}: a size such as 256M, 1G or 1048576 (bytes)")
    return int(number) * _UNITS[unit]


def parse_pids(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise SetupError(f"--pids {text}: a whole number of processes from 1")
    return int(text)


def parse_cpus(text: str) -> float:
    try:
        cpus = float(text)
    except ValueError:
        cpus = 0.0
    if not 0.01 <= cpus <= 4096:
        raise SetupError(f"--cpus {text}: a number of CPUs such as 0.5 or 2")
    return cpus


def _rlimit_value(name: str, text: str) -> int:
    if text.lower() in _UNLIMITED:
        return resource.RLIM_INFINITY
    if not text.isdigit():
        raise SetupError(f"--rlimit {name}: {text!r} is not a number or 'unlimited'")
    return int(text)


def parse_rlimit(text: str) -> tuple[str, int, int]:
    """`NAME=SOFT[:HARD]`; HARD defaults to SOFT. Refused above the host's hard limit."""
    name, sep, values = text.partition("=")
    name = name.strip().lower().removeprefix("rlimit_")
    if not sep or name not in RLIMITS:
        raise SetupError(f"--rlimit {text}: NAME=SOFT[:HARD] with NAME one of "
                         f"{', '.join(sorted(RLIMITS))}")
    soft_text, _, hard_text = values.partition(":")
    soft = _rlimit_value(name, soft_text)
    hard = _rlimit_value(name, hard_text) if hard_text else soft
    if _above(soft, hard):
        raise SetupError(f"--rlimit {text}: the soft limit is above the hard limit")
    _, host_hard = resource.getrlimit(RLIMITS[name])
    if _above(hard, host_hard):
        raise SetupError(f"--rlimit {text}: above the host's hard limit {_show(host_hard)} "
                         "(a jail's limits can only be lower)")
    return name, soft, hard


def _above(a: int, b: int) -> bool:
    inf = resource.RLIM_INFINITY
    return a != b and (a == inf or (b != inf and a > b))


def create(memory: str | None = None, pids: str | None = None, cpus: str | None = None,
           rlimits: tuple[str, ...] | list[str] = ()) -> Limits:
    parsed = [parse_rlimit(r) for r in rlimits]
    names = [n for n, _, _ in parsed]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SetupError(f"--rlimit {duplicate}: given twice")
    return Limits(
        memory=parse_memory(memory) if memory is not None else None,
        pids=parse_pids(pids) if pids is not None else None,
        cpus=parse_cpus(cpus) if cpus is not None else None,
        rlimits=tuple(parsed),
    )
