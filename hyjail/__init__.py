"""hyjail: FreeBSD-style jails for Linux, as a library.

    import subprocess
    from hyjail import JailSpec, run, start, list_jails, get, exec_in, stop
    done = run(JailSpec.create("/srv/root", "web", "10.0.0.5", ["/bin/uname", "-n"]),
               stdout=subprocess.PIPE, text=True)         # done.returncode, done.stdout
    record = start(JailSpec.create("/srv/root", "db", "10.0.0.6", [], persist=True))
    exec_in(record.jid, ["/bin/sh", "-c", "echo hi"], check=True); stop("db")

`run` and `exec_in` take stdin, stdout, stderr, input, text and check as subprocess.run does,
and return a `Completed` (returncode, stdout, stderr). The names below load their modules on
first use, so `import hyjail` stays cheap.
"""

from __future__ import annotations

__all__ = ["JailSpec", "run", "start", "list_jails", "get", "exec_in", "stop", "Completed",
           "HyjailError", "SetupError", "__version__"]


def __getattr__(name: str):
    if name == "JailSpec":
        from hyjail.spec import JailSpec
        return JailSpec
    if name in ("run", "exec_in", "Completed"):
        from hyjail import library
        return getattr(library, name)
    if name == "start":
        from hyjail.supervisor import start_detached
        return start_detached
    if name in ("list_jails", "get", "stop"):
        from hyjail import jails
        return getattr(jails, name)
    if name in ("HyjailError", "SetupError"):
        from hyjail import errors
        return getattr(errors, name)
    if name == "__version__":
        from importlib.metadata import version
        return version("hyjail")
    raise AttributeError(name)
