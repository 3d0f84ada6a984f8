"""Building jail roots: `hyjail rootfs build KIND DEST`.

Owns the list of kinds a user can build; each kind is a module with a `build(dest)` function.
"""

from __future__ import annotations

from hyjail.errors import SetupError

KINDS = ("busybox",)
DEFAULT_DEST = "/var/lib/hyjail/roots"


def build(kind: str, dest: str) -> str:
    if kind == "busybox":
        from hyjail.rootfs import busybox
        return busybox.build(dest)
    raise SetupError(f"{kind!r}: unknown root kind (known: {', '.join(KINDS)})")
