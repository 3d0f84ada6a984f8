"""Building jail roots: `hyjail rootfs build KIND DEST`, and importing them from container
images and tarballs: `hyjail rootfs import ARCHIVE DEST`.

Owns the list of kinds a user can build; each kind is a module with a `build(dest, ...)`
function (busybox offline; debian from Debian's archive).
"""

from __future__ import annotations

from hyjail.errors import SetupError

KINDS = ("busybox", "busybox-i386", "debian")
DEFAULT_DEST = "/var/lib/hyjail/roots"


def build(kind: str, dest: str, suite: str | None = None, include: tuple[str, ...] = (),
          mirror: str | None = None) -> str:
    if kind == "debian":
        from hyjail.rootfs import debian
        return debian.build(dest, suite or debian.DEFAULT_SUITE, include, mirror)
    if suite or include or mirror:
        raise SetupError(f"--suite, --include and --mirror are a debian root's; not {kind}'s")
    if kind in KINDS:
        from hyjail.rootfs import busybox
        binary = busybox.BUSYBOX_I386 if kind == "busybox-i386" else busybox.BUSYBOX
        return busybox.build(dest, binary, kind)
    raise SetupError(f"{kind!r}: unknown root kind (known: {', '.join(KINDS)})")
