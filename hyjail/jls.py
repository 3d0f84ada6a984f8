"""`jls`: FreeBSD jls(8)'s output, byte for byte, from the registry's records.

Owns: the jail parameters a record exposes under FreeBSD's names (jid, name, host.hostname,
path, ip4.addr, ip6.addr, persist, dying), and every output form: the default table (and -N),
-v, the parameter forms (-n, -h, -q, -s, named parameters) and `--libxo json`. Pure functions
from records to text; reading the registry is the caller's job.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from hyjail.registry import Record

# FreeBSD's "all" order: top-level parameters first, then dotted ones, each alphabetical.
ALL_PARAMS = ("dying", "jid", "name", "path", "persist", "host.hostname", "ip4.addr", "ip6.addr")
BOOLEANS = frozenset({"dying", "persist"})
READ_ONLY = frozenset({"dying"})  # -s prints only what `jail -c` could be given


@dataclass(frozen=True)
class Style:
    nameval: bool = False  # -n
    quoted: bool = False  # -q
    skip: bool = False  # -s
    header: bool = False  # -h


def params(record: Record) -> dict[str, object]:
    addresses = [ipaddress.ip_address(a) for a in record.addresses]
    return {
        "dying": False,
        "jid": record.jid,
        "name": record.name,
        "path": record.path,
        "persist": bool(record.params.get("persist")),
        "host.hostname": record.hostname,
        "ip4.addr": [str(a) for a in addresses if a.version == 4],
        "ip6.addr": [str(a) for a in addresses if a.version == 6],
    }


def check_param_names(names: list[str]) -> None:
    for name in names:
        if name not in ALL_PARAMS:
            raise KeyError(name)


def default_table(records: list[Record], by_name: bool = False) -> str:
    if by_name:
        lines = [f" {'JID':<15} {'IP Address':<15} {'Hostname':<29} Path"]
    else:
        lines = [f"{'JID':>6}  IP Address{'':6}Hostname{'':22}Path"]
    for record in records:
        values = params(record)
        ip4 = (values["ip4.addr"] or [""])[0]
        key = f" {record.name:<15} " if by_name else f"{record.jid:6d}  "
        lines.append(f"{key}{ip4[:15]:<15} {record.hostname[:29]:<29} {record.path[:74]}")
    return "".join(line + "\n" for line in lines)


def verbose_table(records: list[Record]) -> str:
    lines = [f"{'':3}JID  Hostname{'':22}Path", f"{'':8}Name{'':26}State",
             f"{'':8}CPUSetID", f"{'':8}IP Address(es)"]
    for record in records:
        values = params(record)
        lines.append(f"{record.jid:6d}  {record.hostname[:29]:<29} {record.path[:74]}")
        lines.append(f"{'':8}{record.name[:29]:<29} ACTIVE")
        lines.append(f"{'':8}{record.jid}")  # each jail is its own cpuset, as on FreeBSD
        lines += [f"{'':8}{ip}" for ip in [*values["ip4.addr"], *values["ip6.addr"]]]
    return "".join(line + "\n" for line in lines)


def _quote(value: str, style: Style) -> str:
    if value == "":
        return '""'
    mark = ('"' if "'" in value else "'" if '"' in value
            else '"' if (" " in value or "\t" in value) else "")
    return f"{mark}{value}{mark}" if style.quoted else value


def _field(name: str, value: object, style: Style) -> str:
    if name in BOOLEANS:
        if style.nameval:
            return name if value else f"no{name}"
        return "true" if value else "false"
    if isinstance(value, list):
        text = ",".join(value)
        if not text:
            shown = '""' if style.quoted else ("" if style.nameval else "-")
            return f"{name}={shown}" if style.nameval else shown
    else:
        text = str(value)
    shown = _quote(text, style) if not isinstance(value, int) else text
    return f"{name}={shown}" if style.nameval else shown


def param_lines(records: list[Record], names: list[str], style: Style) -> str:
    """-n, -h, -q, -s and named parameters: one line per jail."""
    if style.skip:
        names = [n for n in names if n not in READ_ONLY]
    lines = [" ".join(names)] if style.header else []
    for record in records:
        values = params(record)
        lines.append(" ".join(_field(name, values[name], style) for name in names))
    return "".join(line + "\n" for line in lines)


def libxo_json(records: list[Record], names: list[str] | None, verbose: bool) -> str:
    """`--libxo json`: {"__version": "2", "jail-information": {"jail": [...]}}."""
    jails = []
    for record in records:
        values = params(record)
        if names is not None:
            jails.append({name: values[name] for name in names})
        elif verbose:
            jails.append({"jid": record.jid, "hostname": record.hostname, "path": record.path,
                          "name": record.name, "state": "ACTIVE", "cpusetid": record.jid,
                          "ipv4_addrs": values["ip4.addr"], "ipv6_addrs": values["ip6.addr"]})
        else:
            jails.append({"jid": record.jid, "ipv4": (values["ip4.addr"] or [""])[0],
                          "hostname": record.hostname, "path": record.path})
    return json.dumps({"__version": "2", "jail-information": {"jail": jails}}) + "\n"
