"""A jail's way out and ways in through the host: `--nat IFACE` (its veth addresses
masqueraded out of IFACE) and `--publish [HOSTADDR:]HOSTPORT:JAILPORT[/tcp|udp]` (podman's -p:
the host's address and port forwarded to the jail's), in nftables, for IPv4.

Owns: parsing the options (`Published`), the rules (one table of hyjail's own, `inet hyjail`,
every rule commented with its jail's JID, so that a jail's go with it and `hyjail gc` finds a
dead one's), and forwarding, turned on only on the interfaces the jail's traffic crosses (its
veth; IFACE for replies; where published ports are reached), each one back off when the last
jail that needed it goes. An interface hyjail turned on forwards nothing but its jails'
traffic: a guard rule drops any other new connection coming in through it (before, it
forwarded nothing at all). Run by the network helper (root, in the host's namespace) through
the `nft` program; `rules()` is pure.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from dataclasses import dataclass

from hyjail.errors import SetupError

TABLE = "hyjail"
_PUBLISH = re.compile(r"(?:(?P<address>\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(?P<host>\d+):"
                      r"(?P<jail>\d+)(?:/(?P<proto>tcp|udp))?\Z")
_SKELETON = f"""\
table inet {TABLE} {{
  chain nat_pre {{ type nat hook prerouting priority dstnat; }}
  chain nat_out {{ type nat hook output priority -100; }}
  chain nat_post {{ type nat hook postrouting priority srcnat; }}
  chain forward {{ type filter hook forward priority filter; policy accept; }}
}}
"""


@dataclass(frozen=True)
class Published:
    host_port: int
    jail_port: int
    protocol: str = "tcp"
    host_address: str | None = None  # None: every address of the host's

    def describe(self) -> str:
        where = f"{self.host_address}:" if self.host_address else ""
        return f"{where}{self.host_port}:{self.jail_port}/{self.protocol}"


def parse_publish(text: str) -> Published:
    found = _PUBLISH.match(text.strip())
    if not found:
        raise SetupError(f"--publish {text}: [HOSTADDR:]HOSTPORT:JAILPORT[/tcp|udp]")
    ports = int(found["host"]), int(found["jail"])
    if not all(0 < port < 65536 for port in ports):
        raise SetupError(f"--publish {text}: ports are 1-65535")
    address = found["address"]
    if address is not None:
        try:
            address = str(ipaddress.ip_address(address.strip("[]")))
        except ValueError:
            raise SetupError(f"--publish {text}: {address} is not an IP address") from None
    return Published(*ports, found["proto"] or "tcp", address)


def _tag(jid: int) -> str:
    return f"hyjail jail {jid}"


def rules(jid: int, veth: str, addresses: list[str], uplink: str | None,
          published: list[Published]) -> str:
    """The nft script adding jail jid's rules (the table and its chains made if missing)."""
    tag = _tag(jid)
    lines = [_SKELETON]
    four = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    add = f"add rule inet {TABLE}"
    if uplink:
        if not four:
            raise SetupError("--nat: the jail has no IPv4 address (hyjail masquerades IPv4)")
        lines.append(f'{add} nat_post oifname "{uplink}" ip saddr {{ {", ".join(four)} }} '
                     f'masquerade comment "{tag}"')
        lines.append(f'{add} forward iifname "{veth}" oifname "{uplink}" accept '
                     f'comment "{tag}"')
        lines.append(f'{add} forward iifname "{uplink}" oifname "{veth}" ct state '
                     f'established,related accept comment "{tag}"')
    for port in published:
        if not four or (port.host_address and
                        ipaddress.ip_address(port.host_address).version != 4):
            raise SetupError(f"--publish {port.describe()}: IPv4 to the jail's IPv4 address "
                             f"(hyjail publishes IPv4)")
        match = (f"ip daddr {port.host_address}" if port.host_address
                 else "fib daddr type local ip daddr != 127.0.0.0/8")
        for chain in ("nat_pre", "nat_out"):
            lines.append(f'{add} {chain} {match} {port.protocol} dport {port.host_port} '
                         f'dnat ip to {four[0]}:{port.jail_port} comment "{tag}"')
        lines.append(f'{add} forward oifname "{veth}" ct status dnat accept comment "{tag}"')
        lines.append(f'{add} forward iifname "{veth}" ct status dnat accept comment "{tag}"')
    # Nothing else starts a connection into the jail through the host.
    lines.append(f'{add} forward oifname "{veth}" ct state new drop comment "{tag}"')
    return "\n".join(lines) + "\n"


def guard(interface: str) -> str:
    """The rule that keeps an interface whose forwarding hyjail turned on from forwarding
    anything but jails' traffic."""
    return (f'add rule inet {TABLE} forward iifname "{interface}" oifname != "hj*" ct state '
            f'new drop comment "hyjail forwarding of {interface}"\n')


def available() -> str | None:
    """Why nftables cannot be used here, or None."""
    if shutil.which("nft") is None:
        return "no nft program (apt-get install nftables)"
    return None


def run(script: str) -> None:
    if (why := available()) is not None:
        raise SetupError(f"--nat, --publish: {why}")
    done = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupError(f"nftables: {(done.stderr.strip().splitlines() or ['failed'])[0]}")


def remove(comment: str) -> None:
    """Every rule of the table with this comment; the table too once it holds none."""
    if available() is not None:
        return
    listed = subprocess.run(["nft", "-j", "list", "table", "inet", TABLE], capture_output=True,
                            text=True)
    if listed.returncode != 0:
        return  # no table: nothing of ours
    doomed, left = [], 0
    for item in json.loads(listed.stdout).get("nftables", []):
        rule = item.get("rule")
        if rule is None:
            continue
        if rule.get("comment") == comment:
            doomed.append(f"delete rule inet {TABLE} {rule['chain']} handle {rule['handle']}")
        else:
            left += 1
    script = "\n".join(doomed) + "\n" + ("" if left else f"delete table inet {TABLE}\n")
    subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)


def remove_jail(jid: int) -> None:
    remove(_tag(jid))


# ---- forwarding ---------------------------------------------------------------------------

def _forwarding_path(interface: str, version: int) -> str:
    return f"/proc/sys/net/ipv{version}/conf/{interface}/forwarding"


def forwarding(interface: str) -> bool:
    try:
        with open(_forwarding_path(interface, 4)) as f:
            return f.read().strip() == "1"
    except FileNotFoundError:
        raise SetupError(f"{interface}: no such interface on this host") from None


def set_forwarding(interface: str, on: bool) -> None:
    """IPv4's (IPv6 forwarding would also stop the interface taking router adverts)."""
    with open(_forwarding_path(interface, 4), "w") as f:
        f.write("1" if on else "0")
