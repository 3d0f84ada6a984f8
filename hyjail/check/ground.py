"""The escape battery's ground on the host: made once, removed at the end.

Owns: a busybox root with the probes (hjprobe, the planted NSS module), a secret beside it
that no jail may read (and its file handle, for open_by_handle_at), a stopped host process
that no jail may wake, the jails' hostnames, and removing the logs its jails leave. What
runs on it is `hyjail.check.runner`'s and, for the entry group, `hyjail.check.entry`'s.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading

from hyjail.check import probes

_AT_FDCWD = -100


class Ground:
    """What the battery stands on, made once and removed at the end."""

    def __init__(self, undo: contextlib.ExitStack):
        self.top = tempfile.mkdtemp(prefix="hyjail-check-")
        undo.callback(shutil.rmtree, self.top, True)
        undo.callback(_remove_new_logs, _logs())  # its persistent jails' logs go with it
        from hyjail.rootfs import busybox
        self.root = busybox.build(os.path.join(self.top, "root"))
        self.probes = probes.build()
        probes.install(self.root, self.probes)
        self.nss_module = probes.build_nss()
        self.token = f"hyjail-secret-{os.urandom(6).hex()}"
        self.secret = os.path.join(self.top, f"secret-{self.token}")
        with open(self.secret, "w") as f:
            f.write(self.token + "\n")
        os.symlink(self.secret, os.path.join(self.root, "tmp", "hjout"))
        self.handle = _file_handle(self.secret)
        self.host_process = subprocess.Popen(["sleep", "1000000"], cwd=self.top)
        undo.callback(_end, self.host_process)
        os.kill(self.host_process.pid, signal.SIGSTOP)
        self.hostname = os.uname().nodename
        self._names = itertools.count(1)
        self._lock = threading.Lock()

    def hostname_for_jail(self) -> str:
        with self._lock:
            return f"chk{os.getpid() % 1000}x{next(self._names)}"

    def placeholders(self) -> dict:
        return {"secret_abs": self.secret, "secret_rel": self.secret.lstrip("/"),
                "secret_name": os.path.basename(self.secret), "token": self.token,
                "handle": self.handle or "0:00", "host_pid": self.host_process.pid}

    def host_process_woken(self) -> bool:
        """Whether the stopped host process runs again (stopped anew for the next attempt)."""
        try:
            with open(f"/proc/{self.host_process.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state not in ("T", "t"):
            os.kill(self.host_process.pid, signal.SIGSTOP)
            return True
        return False


def _logs() -> set[str]:
    from hyjail.logs import LOG_DIR
    return set(os.listdir(LOG_DIR)) if os.path.isdir(LOG_DIR) else set()


def _remove_new_logs(before: set[str]) -> None:
    from hyjail.logs import LOG_DIR
    for name in _logs() - before:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(LOG_DIR, name))


def _end(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()


def _file_handle(path: str) -> str | None:
    """name_to_handle_at(path) as "TYPE:HEX", for open_by_handle_at from inside."""
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(8 + 128)
    ctypes.c_uint.from_buffer(buffer).value = 128
    mount_id = ctypes.c_int()
    if libc.name_to_handle_at(_AT_FDCWD, path.encode(), buffer, ctypes.byref(mount_id), 0):
        return None
    size = ctypes.c_uint.from_buffer(buffer).value
    kind = ctypes.c_int.from_buffer(buffer, 4).value
    return f"{kind}:{buffer.raw[8:8 + size].hex()}"


# ---- the host's side of one attempt ------------------------------------------------------
