"""A jail on the LAN, made with pyroute2 (in the network helper, `hyjail.net.netd`, the only
process that loads it): `hyjail.net.lan`'s three modes.

Owns: a macvlan (bridge mode), else ipvlan (L2), child of the named interface, born inside the
jail's network namespace and configured there (its addresses with the LAN's prefix, a default
route through a gateway if given, no address the kernel would add by itself); the jail's
addresses as aliases of the interface, and their removal; interfaces moved into the jail's
namespace and back. Only ever the interfaces the user named, each checked to exist; an
address the host already holds is refused. A LAN prefix not given is the interface's own
network's that holds the address, else a host route (/32, /128), as FreeBSD's alias.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
from collections.abc import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hyjail.errors import SetupError
from hyjail.net import JAIL_LINK_NAME
from hyjail.net.veth import netlink_inside

_IFA_F_NODAD = 0x02
_IN6_ADDR_GEN_MODE_NONE = 1
# Child kinds in the order tried; the kernel answers EOPNOTSUPP for one it was built without.
CHILD_KINDS = (("macvlan", {"macvlan_mode": "bridge"}), ("ipvlan", {"ipvlan_mode": 0}))
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise SetupError(f"interface={name}: no such interface on this host")
    return found[0]


def _host_networks(ipr: IPRoute, index: int) -> list[Interface]:
    return [ipaddress.ip_interface(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}")
            for m in ipr.get_addr(index=index)]


def resolve(ipr: IPRoute, index: int, given: Iterable[str]) -> list[Interface]:
    """The jail's addresses with their prefixes: given, else the interface's network's that
    holds the address, else a host route. One the host holds already is refused."""
    held = {ipaddress.ip_address(m.get_attr("IFA_ADDRESS")) for m in ipr.get_addr()}
    own = _host_networks(ipr, index)
    result = []
    for text in given:
        if "/" in text:
            address = ipaddress.ip_interface(text)
        else:
            plain = ipaddress.ip_address(text)
            network = next((n.network for n in own if plain in n.network
                            and n.network.prefixlen < n.max_prefixlen), None)
            address = ipaddress.ip_interface(
                f"{plain}/{network.prefixlen if network else plain.max_prefixlen}")
        if address.ip in held:
            raise SetupError(f"{address.ip}: an address of this host already (the jail needs "
                             f"one of its own on the LAN)")
        result.append(address)
    return result


def _add(ipr: IPRoute, index: int, address: Interface) -> None:
    ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen,
             flags=_IFA_F_NODAD if address.version == 6 else 0)


def _configure_inside(netns_fd: int, name: str, addresses: list[Interface],
                      gateway: str | None) -> None:
    with netlink_inside(netns_fd) as jail:
        (index,) = jail.link_lookup(ifname=name)
        jail.link("set", index=index, IFLA_AF_SPEC={"attrs": [("AF_INET6", {
            "attrs": [("IFLA_INET6_ADDR_GEN_MODE", _IN6_ADDR_GEN_MODE_NONE)]})]})
        for address in addresses:
            _add(jail, index, address)
        jail.link("set", index=index, state="up")
        if gateway is not None:
            default = "0.0.0.0/0" if ipaddress.ip_address(gateway).version == 4 else "::/0"
            jail.route("add", dst=default, gateway=gateway, oif=index)


def mac_for(address: Interface) -> str:
    """A jail's MAC on the LAN, from its address (locally administered, 02:68 then the last
    four bytes): the same jail again at the same address is the same machine to the LAN,
    whose neighbour caches would otherwise lose it for as long as their entries live."""
    tail = address.ip.packed[-4:]
    return "02:68:" + ":".join(f"{b:02x}" for b in tail)


def attach_child(interface: str, netns_fd: int, given: list[str], gateway: str | None
                 ) -> str:
    """The jail's own child of interface, in its namespace; returns the kind made."""
    with IPRoute() as host:
        index = _index(host, interface)
        addresses = resolve(host, index, given)
        mac = {"address": mac_for(addresses[0])} if addresses else {}
        kind = None
        for candidate, options in CHILD_KINDS:
            try:
                host.link("add", ifname=JAIL_LINK_NAME, kind=candidate, link=index,
                          net_ns_fd=netns_fd, **options,
                          **(mac if candidate == "macvlan" else {}))
            except NetlinkError as e:
                if e.code == errno.EOPNOTSUPP:
                    continue
                raise SetupError(f"interface={interface}: cannot make the jail's "
                                 f"{candidate}: {os.strerror(e.code)}") from None
            kind = candidate
            break
        if kind is None:
            raise SetupError(f"interface={interface}: this kernel has neither macvlan nor "
                             f"ipvlan")
    try:
        _configure_inside(netns_fd, JAIL_LINK_NAME, addresses, gateway)
    except NetlinkError as e:
        raise SetupError(f"interface={interface}: configuring the jail's {kind}: "
                         f"{os.strerror(e.code)}") from None
    return kind


def add_aliases(interface: str, given: list[str]) -> list[str]:
    """The jail's addresses as aliases of interface; returns them as ADDR/PREFIX (what to
    remove)."""
    with IPRoute() as host:
        index = _index(host, interface)
        addresses = resolve(host, index, given)
        added: list[Interface] = []
        try:
            for address in addresses:
                _add(host, index, address)
                added.append(address)
        except NetlinkError as e:
            for address in added:
                _remove(host, index, address)
            raise SetupError(f"interface={interface}: {os.strerror(e.code)}") from None
    return [str(a) for a in addresses]


def remove_aliases(interface: str, addresses: list[str]) -> None:
    with IPRoute() as host:
        found = host.link_lookup(ifname=interface)
        if found:
            for text in addresses:
                _remove(host, found[0], ipaddress.ip_interface(text))


def _remove(ipr: IPRoute, index: int, address: Interface) -> None:
    try:
        ipr.addr("del", index=index, address=str(address.ip),
                 prefixlen=address.network.prefixlen)
    except NetlinkError as e:
        if e.code not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
            raise


def move_in(interfaces: list[str], netns_fd: int, given: list[str],
            gateway: str | None) -> None:
    """vnet.interface: each interface into the jail's namespace, the first given the
    jail's addresses (if any)."""
    with IPRoute() as host:
        indexes = [_index(host, name) for name in interfaces]
        addresses = resolve(host, indexes[0], given) if given else []
        moved = []
        try:
            for name, index in zip(interfaces, indexes, strict=True):
                host.link("set", index=index, net_ns_fd=netns_fd)
                moved.append(name)
        except NetlinkError as e:
            move_back(moved, netns_fd)
            raise SetupError(f"vnet.interface={name}: {os.strerror(e.code)}") from None
    try:
        for name in interfaces:
            _configure_inside(netns_fd, name, addresses if name == interfaces[0] else [],
                              gateway if name == interfaces[0] else None)
    except NetlinkError as e:
        move_back(interfaces, netns_fd)
        raise SetupError(f"vnet.interface: configuring {name}: {os.strerror(e.code)}") from None


def move_back(interfaces: list[str], netns_fd: int) -> None:
    """The interfaces from the jail's namespace into ours again, without the jail's
    addresses; one gone already (with a namespace that died) is let be."""
    host_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError), netlink_inside(netns_fd) as jail:
            for name in interfaces:
                found = jail.link_lookup(ifname=name)
                if not found:
                    continue
                with contextlib.suppress(NetlinkError):
                    jail.flush_addr(index=found[0])
                    jail.link("set", index=found[0], state="down")
                with contextlib.suppress(NetlinkError):
                    jail.link("set", index=found[0], net_ns_fd=host_fd)
        with IPRoute() as host:  # usable again, as it was before the jail took it
            for name in interfaces:
                for index in host.link_lookup(ifname=name):
                    with contextlib.suppress(NetlinkError):
                        host.link("set", index=index, state="up")
    finally:
        os.close(host_fd)
