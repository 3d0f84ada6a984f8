"""The console scripts' entry points: `hyjail`, and the FreeBSD drop-ins `jail`, `jls` and
`jexec`.

Owns only starting each command's own parser with its exit status: the drop-ins' getopt
parsers (`hyjail.jail8`, `hyjail.jls`, `hyjail.jexec8`), and for `hyjail run` the table's
parser (`hyjail.runline`), without importing `hyjail.cli` and with it click, whose import
alone is about 20 ms of every call. Every other `hyjail` command line, and a `run` line only
click can read (help, a usage error), goes to `hyjail.cli`. The commands that move a process
into a jail's cgroups start `hyjail.warmup` first, before their imports.
"""

from __future__ import annotations

import gc
import sys

from hyjail import warmup


def _import_uncollected(*modules: str) -> None:
    """Import a start's modules with the garbage collector paused, then freeze what they made.
    An import makes thousands of objects and no garbage; the collections it set off were 1-2
    ms of a start. Frozen, they are never scanned again, nor copied into a forked child by a
    collection there."""
    gc.disable()
    try:
        for name in modules:
            __import__(name)
    finally:
        gc.freeze()
        gc.enable()


def hyjail_main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["run"]:
        warmup.start()
        _import_uncollected("hyjail.runline", "hyjail.supervisor")
        from hyjail import runline
        from hyjail.errors import exit_status
        values = runline.parse(args[1:])
        if values is not None:
            sys.exit(exit_status("hyjail", lambda: runline.start(values)))
    from hyjail import cli
    cli.main(args)


def jail_main(argv: list[str] | None = None) -> None:
    if not {"-r", "-R"} & set(sys.argv[1:] if argv is None else argv):  # not only removals
        warmup.start()
    from hyjail import jail8
    jail8.main(argv)


def jls_main(argv: list[str] | None = None) -> None:
    from hyjail import jls
    sys.exit(jls.main(argv))


def jexec_main(argv: list[str] | None = None) -> None:
    warmup.start()
    _import_uncollected("hyjail.jexec8", "hyjail.jails", "hyjail.foreground", "hyjail.ns.enter")
    from hyjail import jexec8
    sys.exit(jexec8.main(argv))
