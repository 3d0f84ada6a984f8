"""hyjail: FreeBSD-style jails for Linux, as a library.

    from hyjail import JailSpec, run
    status = run(JailSpec.create("/srv/root", "web", "10.0.0.5", ["/bin/sh"]))

The names below load their modules on first use, so `import hyjail` stays cheap.
"""

from __future__ import annotations

__all__ = ["JailSpec", "run", "HyjailError", "SetupError"]


def __getattr__(name: str):
    if name == "JailSpec":
        from hyjail.spec import JailSpec
        return JailSpec
    if name == "run":
        from hyjail.supervisor import run
        return run
    if name in ("HyjailError", "SetupError"):
        from hyjail import errors
        return getattr(errors, name)
    raise AttributeError(name)
