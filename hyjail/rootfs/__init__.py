"""Building jail roots: `hyjail rootfs build KIND DEST`.

Owns the list of kinds a user can build; each kind is a module with a `build(dest)` function.
"""

from __future__ import annotations

from hyjail.errors import SetupError

KINDS = ("busybox", "busybox-i386")
DEFAULT_DEST = "/var/lib/hyjail/roots"


def build(kind: str, dest: str) -> str:
    if kind in KINDS:
        from hyjail.rootfs import busybox
        binary = busybox.BUSYBOX_I386 if kind == "busybox-i386" else busybox.BUSYBOX
        return busybox.build(dest, binary, kind)
    raise SetupError(f"{kind!r}: unknown root kind (known: {', '.join(KINDS)})")
