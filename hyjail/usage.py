"""What running jails use, as `hyjail ls` and `hyjail top` show it.

Owns the two views' rows and their formatting: each jail's processes (from its pid
namespace), memory in use and CPU time (from its cgroups, `hyjail.cgroups.usage`; `-` where
the host counts none), OOM kills, uptime, and for `top` the CPU share over the last interval.
`top` clears the terminal between refreshes only when its output is one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return "-"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def network(record) -> str:
    """How a jail is on the network, from its record: its veth, or its place on the LAN
    (macvlan/ipvlan child, alias or vnet, on which interface), its NAT and published ports;
    else `-` (its loopback, or the host's network with its tracer's rules)."""
    params = record.params if isinstance(record.params, dict) else {}
    lan, nat = params.get("lan"), params.get("nat")
    if isinstance(lan, dict):
        shown = f"{lan.get('kind') or lan.get('mode')}:{','.join(lan.get('interfaces', []))}"
    else:
        shown = f"veth:{record.host_link}" if record.host_link else "-"
    if isinstance(nat, dict):
        if nat.get("uplink"):
            shown += f" nat:{nat['uplink']}"
        for port in nat.get("publish", []):
            where = f"{port['host_address']}:" if port.get("host_address") else ""
            shown += f" {where}{port['host_port']}->{port['jail_port']}/{port['protocol']}"
    return shown


def table(jails: Iterable) -> Iterator[str]:
    """hyjail ls: a header, then a line per jail."""
    yield (f"{'JID':>5} {'NAME':<12} {'BACKEND':<7} {'PROCS':>5} {'MEM':>7} {'CPU':>9} "
           f"{'OOM':>3} {'UPTIME':>9} {'HOSTNAME':<20} {'ADDRESSES':<24} {'PATH':<20} "
           f"NETWORK")
    for j in jails:
        r, used = j.record, j.usage()
        yield (f"{r.jid:>5} {r.name:<12} {r.backend:<7} {len(j.processes):>5} "
               f"{_size(used.memory):>7} {_seconds(used.cpu_seconds):>9} "
               f"{'-' if used.oom_kills is None else used.oom_kills:>3} {j.uptime:>8.0f}s "
               f"{r.hostname:<20} {','.join(r.addresses):<24} {r.path:<20} "
               f"{network(r)}")


def watch(iterations: int | None, delay: float, say: Callable[[str], None]) -> None:
    """hyjail top: every `delay` seconds, each jail's CPU share since the last look."""
    from hyjail.jails import list_jails
    before: dict[tuple[int, int | None], tuple[float, float]] = {}
    count = 0
    while iterations is None or count < iterations:
        jails = list_jails()
        now = time.monotonic()
        lines = [f"{'JID':>5} {'NAME':<12} {'PROCS':>5} {'CPU%':>6} {'MEM':>7} {'CPU':>9} "
                 f"{'OOM':>3} HOSTNAME"]
        seen = {}
        for j in jails:
            r, used = j.record, j.usage()
            key = (r.jid, r.supervisor_pid)
            share = "-"
            if used.cpu_seconds is not None:
                seen[key] = (now, used.cpu_seconds)
                if key in before:
                    then, cpu = before[key]
                    share = f"{100 * (used.cpu_seconds - cpu) / max(now - then, 1e-6):.1f}"
            lines.append(f"{r.jid:>5} {r.name:<12} {len(j.processes):>5} {share:>6} "
                         f"{_size(used.memory):>7} {_seconds(used.cpu_seconds):>9} "
                         f"{'-' if used.oom_kills is None else used.oom_kills:>3} {r.hostname}")
        before = seen
        if sys.stdout.isatty():
            say("\033[H\033[2J" + "\n".join(lines))
        else:
            say("\n".join(lines) + "\n")
        count += 1
        if iterations is None or count < iterations:
            time.sleep(delay)
