"""A jail's name servers: whether its /etc/resolv.conf names one it can reach, and --dns.

Owns: reading the root's /etc/resolv.conf as plain data beneath the root (never following a
link out of it: `hyjail.accounts.read_jail_file`), telling which of its servers a jail with
a network of its own cannot reach (its own loopback runs no resolver of the host's; beyond
its veth's host end it has no route), so that `hyjail run` says so once at start rather than
leave programs to hang in getaddrinfo; and the file `--dns ADDR` puts in the root's file's
place: written in the registry's directory, bound read-only over /etc/resolv.conf in the
jail's own mount namespace (the root is never changed), removed with the jail's record.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterable

from hyjail.errors import SetupError


def servers(root: str) -> list[str]:
    """The nameserver lines of the root's /etc/resolv.conf ([] if it has none or none can be
    read)."""
    from hyjail.accounts import read_jail_file
    try:
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        data = read_jail_file(fd, "etc/resolv.conf")
    except SetupError:
        return []
    finally:
        os.close(fd)
    found = []
    for line in data.decode(errors="replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            found.append(words[1].split("%", 1)[0])
    return found


def unreachable(names: Iterable[str], reachable: Iterable) -> list[str]:
    """The servers a jail with its own network cannot reach: all but its veth's host end."""
    ends = {ipaddress.ip_address(str(a).split("/", 1)[0]) for a in reachable}
    far = []
    for name in names:
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            continue
        if address not in ends:
            far.append(name)
    return far


def warn_if_unreachable(name: str, root: str, reachable: Iterable) -> None:
    far = unreachable(servers(root), reachable)
    if far:
        import sys
        sys.stderr.write(f"hyjail: jail {name}: its /etc/resolv.conf names {', '.join(far)}, "
                         f"which it cannot reach from its own network (--dns ADDR gives it "
                         f"another)\n")


def write(path: str, addresses: Iterable[str]) -> str:
    """The jail's own resolv.conf at path (the registry's `resolv_path`); path."""
    text = "".join(f"nameserver {address}\n" for address in addresses)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a dead jail's of this JID
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path

