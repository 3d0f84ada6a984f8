"""The addresses a jail may hold, and the host-side end's addresses.

Owns: parsing `IP[,IP...]`, refusing addresses that cannot be a jail's (unspecified, multicast,
link-local, reserved, broadcast, IPv4-mapped), and telling a loopback-only jail from one that
needs a veth. Pure functions on the `ipaddress` types; no kernel calls.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from hyjail.errors import SetupError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# The host-side end of every veth answers here unless --host-ip says otherwise. Each veth is a
# separate link, so every jail can use the same pair: the host routes replies by the jail's /32.
DEFAULT_HOST_ADDRESSES: tuple[Address, ...] = (
    ipaddress.IPv4Address("169.254.77.1"),
    ipaddress.IPv6Address("fe80::1"),
)

_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _reason_not_usable(addr: Address) -> str | None:
    if addr.is_unspecified:
        return "the unspecified address cannot be a jail's"
    if addr.is_multicast:
        return "a multicast address cannot be a jail's"
    if addr == _BROADCAST:
        return "the broadcast address cannot be a jail's"
    if addr.is_link_local:
        return "link-local addresses are reserved for the host side of the jail's veth"
    if addr.is_reserved:
        return "a reserved address cannot be a jail's"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return "write an IPv4-mapped address as plain IPv4"
    return None


def _each_address(text: str, what: str) -> Iterator[tuple[str, Address]]:
    for item in text.split(","):
        item = item.strip()
        try:
            yield item, ipaddress.ip_address(item)
        except ValueError:
            raise SetupError(f"{item!r}: not a valid {what}") from None


def parse_addresses(text: str, what: str = "IP") -> tuple[Address, ...]:
    """Parse a comma-separated address list, refusing anything a jail cannot hold."""
    result: list[Address] = []
    for item, addr in _each_address(text, f"{what} address"):
        reason = _reason_not_usable(addr)
        if reason:
            raise SetupError(f"{item}: {reason}")
        if addr in result:
            raise SetupError(f"{item}: given twice")
        result.append(addr)
    return tuple(result)


def parse_host_addresses(text: str) -> tuple[Address, ...]:
    """Parse --host-ip: at most one address per family, link-local allowed, never loopback."""
    result: list[Address] = []
    for item, addr in _each_address(text, "host-side address"):
        if addr.is_loopback or addr.is_multicast or addr.is_unspecified:
            raise SetupError(f"{item}: cannot be the host-side address of a veth")
        if any(other.version == addr.version for other in result):
            raise SetupError(f"{item}: only one host-side address per address family")
        result.append(addr)
    return tuple(result)


def routed(addresses: Iterable[Address]) -> tuple[Address, ...]:
    """The addresses a veth must carry: all but loopback ones, which the jail's own lo holds."""
    return tuple(a for a in addresses if not a.is_loopback)


def host_side_for(jail_addresses: Iterable[Address],
                  host_addresses: Iterable[Address]) -> tuple[Address, ...]:
    """The host-side addresses the veth needs: one per family the jail uses."""
    families = {a.version for a in routed(jail_addresses)}
    return tuple(a for a in host_addresses if a.version in families)
