"""The relay between the host's terminal and the jail's own pseudo-terminal.

Owns: deciding which of the standard fds are terminals, raw mode on the host terminal (restored
on every exit path), window size, and copying bytes both ways. The jail holds only its own pty
(from its devpts), so nothing inside can push input into the host's terminal (TIOCSTI).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import termios
import tty
from collections.abc import Iterator

_CHUNK = 65536


def tty_fds() -> tuple[int, ...]:
    """Which of 0, 1, 2 are terminals: the jail gets its own pty in their place."""
    return tuple(fd for fd in (0, 1, 2) if os.isatty(fd))


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Relay:
    """Copies host input to the pty master and the master's output to the host terminal."""

    def __init__(self, master: int, terminals: tuple[int, ...]):
        self.master = master
        self.host_in = 0 if 0 in terminals else None
        self.host_out = 1 if 1 in terminals else 2
        self.size_from = terminals[0]
        self.pending = b""
        os.set_blocking(master, False)
        self.resize()

    def resize(self) -> None:
        size = fcntl.ioctl(self.size_from, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)

    def from_host(self) -> bool:
        """Read host input; False at end of input."""
        data = os.read(self.host_in, _CHUNK)
        self.pending += data
        return bool(data)

    def to_jail(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self.pending = self.pending[os.write(self.master, self.pending):]

    def _read_jail(self) -> bytes | None:
        """What the jail wrote (b"" if nothing yet), or None once its side is closed."""
        try:
            return os.read(self.master, _CHUNK) or None
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:  # every slave fd is closed
                return None
            raise

    def _write_host(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.host_out, view):]

    def from_jail(self) -> bool:
        """Copy the jail's output to the host; False once the jail's side is closed."""
        data = self._read_jail()
        if data:
            self._write_host(data)
        return data is not None

    def drain(self) -> None:
        """Copy whatever the jail left in the pty, after its last process is gone."""
        while data := self._read_jail():
            self._write_host(data)


def hand_over(console, master: int) -> None:
    """The jail's pty master to `console` (an OCI runtime's --console-socket, whose caller
    relays it), closed here afterwards: no relay of ours."""
    try:
        console(master)
    finally:
        os.close(master)
