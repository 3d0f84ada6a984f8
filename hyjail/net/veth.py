"""The veth pair that carries a jail's addresses, made and configured with pyroute2 (in the
network helper, `hyjail.net.netd`, the only process that loads it).

Owns: creating the pair with its jail end born inside the jail's network namespace (no move
between namespaces), the host end's addresses and the /32 (/128) routes to the jail, the jail
end's addresses, its route to the host end and its default route (inside the jail only), and
removing the pair. The host end drops IPv4 packets whose source is not the jail's (strict
reverse-path filtering). It never touches another interface, never adds a default route, NAT or
forwarding on the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hyjail import linux
from hyjail.errors import SetupError
from hyjail.net import JAIL_LINK_NAME
from hyjail.net.addresses import Address

_IFA_F_NODAD = 0x02  # usable at once: no duplicate address detection on a point-to-point pair
_SCOPE_LINK = 253
_IN6_ADDR_GEN_MODE_NONE = 1


def _prefix(addr: Address) -> str:
    return f"{addr}/{addr.max_prefixlen}"


def _add_address(ipr: IPRoute, index: int, addr: Address) -> None:
    ipr.addr("add", index=index, address=str(addr), prefixlen=addr.max_prefixlen,
             flags=_IFA_F_NODAD if addr.version == 6 else 0)


@contextlib.contextmanager
def netlink_inside(netns_fd: int) -> Iterator[IPRoute]:
    """An rtnetlink socket bound to the jail's network namespace: opened after a setns of this
    thread, which then returns at once to the host's namespace."""
    host_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.setns(netns_fd, linux.CLONE_NEWNET)
        try:
            ipr = IPRoute()
        finally:
            linux.setns(host_fd, linux.CLONE_NEWNET)
    finally:
        os.close(host_fd)
    with ipr:
        yield ipr


def _check_not_host_address(ipr: IPRoute, addresses: Iterable[Address]) -> None:
    held = {msg.get_attr("IFA_ADDRESS") for msg in ipr.get_addr()}
    for addr in addresses:
        if str(addr) in held:
            raise SetupError(f"{addr}: an address of this host; a jail needs one of its own")


def delete(name: str) -> None:
    """Remove the host end (and with it the jail end); absent already is fine."""
    with IPRoute() as ipr:
        _delete(ipr, name)


def _delete(ipr: IPRoute, name: str) -> None:
    try:
        ipr.link("del", ifname=name)
    except NetlinkError as e:
        if e.code not in (errno.ENODEV, errno.ENOENT):
            raise


def create(name: str, netns_fd: int, addresses: tuple[Address, ...],
           host_addresses: tuple[Address, ...]) -> None:
    """Give the jail whose network namespace netns_fd names a veth holding `addresses`, its
    host end `name` holding `host_addresses` and the routes to the jail."""
    with IPRoute() as host:
        _check_not_host_address(host, addresses)
        _delete(host, name)  # a leftover of a jail with this JID whose netns was dying
        try:
            host.link("add", ifname=name, kind="veth",
                      peer={"ifname": JAIL_LINK_NAME, "net_ns_fd": netns_fd})
        except NetlinkError as e:
            raise SetupError(f"{name}: cannot create the veth: {os.strerror(e.code)}") from None
        try:
            _configure(host, netns_fd, name, addresses, host_addresses)
        except BaseException:
            _delete(host, name)
            raise


def _configure(host: IPRoute, netns_fd: int, name: str, addresses: tuple[Address, ...],
               host_addresses: tuple[Address, ...]) -> None:
    try:
        (index,) = host.link_lookup(ifname=name)
        # Strict reverse-path filtering on our end: an IPv4 packet from the jail whose source
        # is not the jail's (one root made with allow.raw_sockets and IP_HDRINCL) is dropped.
        with open(f"/proc/sys/net/ipv4/conf/{name}/rp_filter", "w") as f:
            f.write("1")
        for addr in host_addresses:
            _add_address(host, index, addr)
        host.link("set", index=index, state="up")
        for addr in addresses:
            try:
                host.route("add", dst=_prefix(addr), oif=index, scope=_SCOPE_LINK)
            except NetlinkError as e:
                if e.code == errno.EEXIST:
                    raise SetupError(f"{addr}: the host already has a route to it") from None
                raise
        with netlink_inside(netns_fd) as jail:
            (jail_index,) = jail.link_lookup(ifname=JAIL_LINK_NAME)
            # No kernel-made IPv6 link-local address: the jail's addresses are its own only.
            jail.link("set", index=jail_index, IFLA_AF_SPEC={"attrs": [("AF_INET6", {
                "attrs": [("IFLA_INET6_ADDR_GEN_MODE", _IN6_ADDR_GEN_MODE_NONE)]})]})
            for addr in addresses:
                _add_address(jail, jail_index, addr)
            jail.link("set", index=jail_index, state="up")
            for gateway in host_addresses:
                if gateway.version == 4 or not gateway.is_link_local:  # fe80::/64 is on-link
                    jail.route("add", dst=_prefix(gateway), oif=jail_index, scope=_SCOPE_LINK)
                default = "0.0.0.0/0" if gateway.version == 4 else "::/0"
                jail.route("add", dst=default, gateway=str(gateway), oif=jail_index)
    except NetlinkError as e:
        raise SetupError(f"{name}: configuring the veth: {os.strerror(e.code)}") from None
