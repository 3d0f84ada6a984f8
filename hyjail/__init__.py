"""hyjail: FreeBSD-style jails for Linux, as a library.

    from hyjail import JailSpec, run, start, list_jails, get, exec_in, stop
    status = run(JailSpec.create("/srv/root", "web", "10.0.0.5", ["/bin/sh"]))
    record = start(JailSpec.create("/srv/root", "db", "10.0.0.6", [], persist=True))
    exec_in(record.jid, ["/bin/sh", "-c", "echo hi"]); stop("db")

The names below load their modules on first use, so `import hyjail` stays cheap.
"""

from __future__ import annotations

__all__ = ["JailSpec", "run", "start", "list_jails", "get", "exec_in", "stop", "HyjailError",
           "SetupError"]


def __getattr__(name: str):
    if name == "JailSpec":
        from hyjail.spec import JailSpec
        return JailSpec
    if name == "run":
        from hyjail.supervisor import run
        return run
    if name == "start":
        from hyjail.supervisor import start_detached
        return start_detached
    if name in ("list_jails", "get", "exec_in", "stop"):
        from hyjail import jails
        return getattr(jails, name)
    if name in ("HyjailError", "SetupError"):
        from hyjail import errors
        return getattr(errors, name)
    raise AttributeError(name)
