"""A persistent jail's output: where it goes, and how it is read back (`hyjail logs`).

Owns: the log's place (exec.consolelog when the jail has one; else LOG_DIR/NAME.log for
root, the user's registry directory's logs/ for another user), the pump that copies what the
jail's command and its supervisor write (a pipe, never a host file handed to the jail) into
it, from a thread of the supervisor, capped at MAX_BYTES and rotated once (NAME.log.1), and
reading it back, following it with -f. The directory and the files are reached by descriptor
and never through a symlink: LOG_DIR lies inside a jail over `/`, which therefore gets it
masked like the registry (`hyjail.ns.mounts.HOST_STATE`), and a supervisor must not append
to whatever file a link names.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Callable, Iterator

from hyjail import linux
from hyjail.errors import SetupError

LOG_DIR = "/var/log/hyjail"
MAX_BYTES = 8 << 20  # then NAME.log becomes NAME.log.1 (the one before it is dropped)
_NO_LINKS = linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS
_AT_FDCWD = -100


def make_directory() -> None:
    """LOG_DIR, root's only (made before any jail whose root could hold it starts)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(LOG_DIR, 0o750)


def default_path(name: str, state_dir: str | None = None) -> str:
    """Where a jail named `name` logs without exec.consolelog: root's in LOG_DIR, another
    user's in the logs/ of their registry directory (`state_dir`)."""
    if "/" in name or name in ("", ".", ".."):
        raise SetupError(f"{name!r}: not a jail name a log file can have")
    directory = LOG_DIR if state_dir is None else os.path.join(state_dir, "logs")
    return os.path.join(directory, f"{name}.log")


class Log:
    """An append-only log file, capped and rotated once, written through descriptors."""

    def __init__(self, path: str, limit: int = MAX_BYTES):
        self.directory, self.name = os.path.split(os.path.abspath(path))
        self.limit = limit
        self._dir = -1
        self._fd = -1
        self._size = 0

    def open(self) -> Log:
        """Open (making LOG_DIR's kind of directory if missing) and position at the end.
        SetupError naming the path if it cannot be."""
        try:
            with contextlib.suppress(FileExistsError):
                os.makedirs(self.directory, 0o750)
            self._dir = linux.openat2(_AT_FDCWD, self.directory, os.O_PATH | os.O_DIRECTORY,
                                      _NO_LINKS)
            self._reopen()
        except OSError as e:
            self.close()
            raise SetupError(f"log {os.path.join(self.directory, self.name)}: "
                             f"{e.strerror}") from None
        return self

    def _reopen(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                           | os.O_CLOEXEC | os.O_NOCTTY, 0o640, dir_fd=self._dir)
        self._size = os.fstat(self._fd).st_size

    def write(self, data: bytes) -> None:
        if self._size + len(data) > self.limit and self._size > 0:
            os.rename(self.name, self.name + ".1", src_dir_fd=self._dir, dst_dir_fd=self._dir)
            self._reopen()
        while data:
            written = os.write(self._fd, data)
            self._size += written
            data = data[written:]

    def close(self) -> None:
        for fd in (self._fd, self._dir):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._dir = -1


def pump(source: int, log: Log):
    """Copy from the pipe `source` into log until every writer has closed it (a daemon
    thread, so a supervisor never waits on it to exit); write errors drop output, never
    the jail."""
    def copy() -> None:
        try:
            while data := os.read(source, 65536):
                with contextlib.suppress(OSError):
                    log.write(data)
        finally:
            os.close(source)
            log.close()
    import threading  # a persistent jail's alone: not on every start
    thread = threading.Thread(target=copy, name="hyjail-log", daemon=True)
    thread.start()
    return thread


def read(path: str, out: Callable[[bytes], object], follow: Callable[[], bool] | None = None,
         interval: float = 0.2) -> None:
    """Write the log (its rotated part first) to out; with follow, keep writing what is
    appended (across a rotation) while follow() says the jail still runs, then the rest."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        dir_fd = linux.openat2(_AT_FDCWD, directory, os.O_PATH | os.O_DIRECTORY, _NO_LINKS)
    except OSError as e:
        raise SetupError(f"{path}: {e.strerror}") from None
    try:
        with _opened(dir_fd, name + ".1") as older:
            if older is not None:
                _copy(older, out)
        current = _open(dir_fd, name)
        if current is None and follow is None:
            raise SetupError(f"{path}: no log (the jail wrote nothing yet)")
        try:
            if current is not None:
                _copy(current, out)
            while follow is not None:
                running = follow()
                if current is None or _rotated(dir_fd, name, current):
                    if current is not None:
                        _copy(current, out)  # what was written before the rotation
                        os.close(current)
                    current = _open(dir_fd, name)
                if current is not None:
                    _copy(current, out)
                if not running:
                    return
                time.sleep(interval)
        finally:
            if current is not None:
                os.close(current)
    finally:
        os.close(dir_fd)


def _open(dir_fd: int, name: str) -> int | None:
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                       dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SetupError(f"{name}: a symbolic link where a log should be") from None
        raise SetupError(f"{name}: {e.strerror}") from None


@contextlib.contextmanager
def _opened(dir_fd: int, name: str) -> Iterator[int | None]:
    fd = _open(dir_fd, name)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def _copy(fd: int, out: Callable[[bytes], object]) -> None:
    while data := os.read(fd, 65536):
        out(data)


def _rotated(dir_fd: int, name: str, fd: int) -> bool:
    try:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)


# On a terminal every control byte but newline and tab shows as '?': a jail's output must not
# drive the administrator's terminal (as ps(1) and hyjail ps show jailed commands).
_SHOWN = bytes(c if c in b"\n\t" or 32 <= c != 127 else ord("?") for c in range(256))


def to_stdout(data: bytes) -> None:
    if sys.stdout.isatty():
        data = data.translate(_SHOWN)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
