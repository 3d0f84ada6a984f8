"""The FreeBSD drop-ins' entry points: `jail`, `jls` and `jexec` as console scripts.

Owns only starting each command's own getopt parser (`hyjail.jail8`, `hyjail.jls`,
`hyjail.jexec8`) with its exit status, without importing `hyjail.cli` and with it click,
whose import alone is about 30 ms of every call.
"""

from __future__ import annotations

import sys


def jail_main(argv: list[str] | None = None) -> None:
    from hyjail import jail8
    jail8.main(argv)


def jls_main(argv: list[str] | None = None) -> None:
    from hyjail import jls
    sys.exit(jls.main(argv))


def jexec_main(argv: list[str] | None = None) -> None:
    from hyjail import jexec8
    sys.exit(jexec8.main(argv))
