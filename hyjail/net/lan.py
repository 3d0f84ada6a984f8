"""A jail on the LAN: its addresses on an interface of the host's that the user named
(FreeBSD's `interface=`, `IFACE|ADDR/PREFIX`), or interfaces given to it whole (`vnet`,
`vnet.interface`). What the supervisor asks of the network helper; pure data here.

Owns: the one typed description (`LanSpec`), parsing its forms (an address's `/24` or
`/255.255.255.0`, jail.conf's `IFACE|ADDR`), and which way it is made (`mode`):

  child  the ns backend: a macvlan (bridge mode) or ipvlan (L2) child of the interface, made
         in the jail's own network namespace, holding exactly the jail's addresses, with the
         LAN's prefix and, given a gateway, a default route;
  alias  no network namespace (trace, hybrid): the addresses added to the interface for the
         jail's life, FreeBSD's own way, and removed at its end (and by `hyjail gc`);
  vnet   the interfaces moved into the jail's network namespace for its life (given the
         jail's addresses, if any), moved back at its end.

The pyroute2 side is `hyjail.net.lanlink`, in the helper only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from hyjail.errors import SetupError

_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}\Z")  # IFNAMSIZ less its NUL


@dataclass(frozen=True)
class LanSpec:
    interfaces: tuple[str, ...]  # the host's: one for child and alias, any number for vnet
    prefixes: tuple[tuple[str, int], ...] = ()  # address -> prefix length, where given
    gateway: str | None = None  # a default route through it (child, vnet)
    vnet: bool = False

    def mode(self, own_network: bool) -> str:
        if self.vnet:
            if not own_network:
                raise SetupError("vnet: needs a network namespace of the jail's (the kernel's "
                                 "R3), which this jail does not get")
            return "vnet"
        return "child" if own_network else "alias"

    def with_prefixes(self, addresses) -> list[str]:
        """The jail's addresses as ADDR/PREFIX where a prefix was given, else ADDR (the
        helper takes the LAN's from the interface)."""
        given = dict(self.prefixes)
        return [f"{a}/{given[str(a)]}" if str(a) in given else str(a) for a in addresses]

    def request(self, addresses, own_network: bool) -> dict | None:
        """What the supervisor asks the helper, and its record keeps (the helper does only
        what a live supervisor's record says); None for a vnet jail given no interface."""
        mode = self.mode(own_network)
        shown = [a for a in addresses if not a.is_loopback]
        if mode == "vnet" and not self.interfaces:
            if shown:
                raise SetupError(f"{shown[0]}: a vnet jail holds its addresses on the "
                                 f"interfaces vnet.interface gives it, and has none")
            return None
        return {"mode": mode, "interfaces": list(self.interfaces),
                "addresses": self.with_prefixes(shown), "gateway": self.gateway}

    def describe(self) -> str:
        return (f"vnet.interface={','.join(self.interfaces)}" if self.vnet
                else f"interface={self.interfaces[0]}")


def check_interface(name: str, option: str = "interface") -> str:
    if not _IFNAME.match(name) or name in (".", ".."):
        raise SetupError(f"{option}={name}: not an interface name")
    if name == "lo":
        raise SetupError(f"{option}=lo: the loopback is no LAN")
    if re.fullmatch(r"hj[0-9]+h", name):
        raise SetupError(f"{option}={name}: a jail's own veth, not a LAN interface")
    return name


def prefix_of(address: str, mask: str) -> int:
    """A /24 or a /255.255.255.0 (FreeBSD's ifconfig netmask form) as a prefix length."""
    version = ipaddress.ip_address(address).version
    try:
        network = ipaddress.ip_network(f"{'0.0.0.0' if version == 4 else '::'}/{mask}")
    except ValueError:
        raise SetupError(f"{address}/{mask}: not a prefix length or netmask") from None
    return network.prefixlen


def split(text: str, option: str = "IP") -> tuple[str, tuple[tuple[str, int], ...]]:
    """`ADDR[/PREFIX][,...]` as the addresses alone and the prefixes given."""
    plain, prefixes = [], []
    for item in filter(None, (i.strip() for i in text.split(","))):
        address, slash, mask = item.partition("/")
        if slash:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise SetupError(f"{item!r}: not a valid {option} address") from None
            prefixes.append((str(ipaddress.ip_address(address)), prefix_of(address, mask)))
        plain.append(address)
    return ",".join(plain), tuple(prefixes)
