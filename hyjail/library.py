"""The library's `run` and `exec_in`: a jail's command as subprocess.run runs a program.

Owns: turning stdin, stdout and stderr (None: ours; an fd; a file object; subprocess.PIPE;
subprocess.DEVNULL; stderr=subprocess.STDOUT) and `input` into the command's three
descriptors, collecting what it writes to a PIPE (threads, so that neither side blocks on a
full pipe), and the `Completed` result (returncode, stdout, stderr; text with text=True;
`check` raising CalledProcessError as subprocess's does). The jail itself is
`hyjail.supervisor.run`'s and `hyjail.jails.exec_in`'s, whose statuses follow SPEC 2.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

Stream = int | IO[Any] | None


@dataclass
class Completed:
    """What a jailed command did: as subprocess.CompletedProcess."""
    args: list[str]
    returncode: int
    stdout: bytes | str | None = None
    stderr: bytes | str | None = None

    def check_returncode(self) -> None:
        if self.returncode:
            raise subprocess.CalledProcessError(self.returncode, self.args, self.stdout,
                                                self.stderr)


def run(spec, *, stdin: Stream = None, stdout: Stream = None, stderr: Stream = None,
        input: bytes | str | None = None, text: bool = False, check: bool = False,
        registry=None) -> Completed:
    """Run spec.command in a new jail (hyjail.JailSpec), in the foreground, its stdio as
    subprocess.run's; raises SetupError if the jail cannot be set up (as `hyjail run`'s 125)
    and HyjailError for a command that cannot be found or run (127, 126)."""
    from hyjail.supervisor import run as run_jail
    return _completed(list(spec.command), stdin, stdout, stderr, input, text, check,
                      lambda stdio: run_jail(spec, registry, stdio=stdio))


def exec_in(which: str | int, argv: Sequence[str], *, stdin: Stream = None,
            stdout: Stream = None, stderr: Stream = None, input: bytes | str | None = None,
            text: bool = False, check: bool = False, **options) -> Completed:
    """Run argv in the running jail `which` (its JID or name), under all its rules, stdio as
    subprocess.run's; options as hyjail.jails.exec_in's (user, login, environ, cwd, ...)."""
    from hyjail.jails import exec_in as enter
    return _completed(list(argv), stdin, stdout, stderr, input, text, check,
                      lambda stdio: enter(which, argv, stdio=stdio, **options))


def _completed(args: list[str], stdin: Stream, stdout: Stream, stderr: Stream,
               input: bytes | str | None, text: bool, check: bool,
               body: Callable[[tuple[int, int, int]], int]) -> Completed:
    if input is not None:
        if stdin is not None:
            raise ValueError("stdin and input may not both be given")
        stdin = subprocess.PIPE
    with contextlib.ExitStack() as undo:
        ours: list[int] = []  # the child's ends, closed here once it has them
        readers: dict[str, _Reader] = {}
        fds = []
        for which, given in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
            if which == "stderr" and given == subprocess.STDOUT:
                fds.append(fds[1])
                continue
            fd, reader = _descriptor(which, given, input, undo)
            fds.append(fd)
            if reader is not None:
                readers[which] = reader
                ours.append(fd)
        threads = [reader.start() for reader in readers.values()]
        try:
            status = body((fds[0], fds[1], fds[2]))
        finally:
            for fd in ours:  # every writer gone: the readers see their end
                with contextlib.suppress(OSError):
                    os.close(fd)
            for thread in threads:
                thread.join()
        out = {which: reader.result(text) for which, reader in readers.items()
               if which != "stdin"}
    done = Completed(args, status, out.get("stdout"), out.get("stderr"))
    if check:
        done.check_returncode()
    return done


class _Reader:
    """One PIPE's far end: collects (stdout, stderr) or feeds input (stdin), in a thread."""

    def __init__(self, fd: int, feed: bytes | None = None):
        self.fd, self.feed, self.data = fd, feed, bytearray()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._work, daemon=True)
        thread.start()
        return thread

    def _work(self) -> None:
        try:
            if self.feed is not None:
                with contextlib.suppress(BrokenPipeError):
                    view = memoryview(self.feed)
                    while view:
                        view = view[os.write(self.fd, view):]
            else:
                while chunk := os.read(self.fd, 65536):
                    self.data += chunk
        finally:
            os.close(self.fd)

    def result(self, text: bool) -> bytes | str:
        data = bytes(self.data)
        return data.decode() if text else data


def _descriptor(which: str, given: Stream, input: bytes | str | None,
                undo: contextlib.ExitStack) -> tuple[int, _Reader | None]:
    """(the child's fd for `which`, the reader of its PIPE if it has one)."""
    default = {"stdin": 0, "stdout": 1, "stderr": 2}[which]
    if given is None:
        return default, None
    if given == subprocess.DEVNULL:
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        undo.callback(os.close, fd)
        return fd, None
    if given == subprocess.PIPE:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        if which == "stdin":
            feed = input.encode() if isinstance(input, str) else (input or b"")
            return read_end, _Reader(write_end, feed)
        return write_end, _Reader(read_end)
    if isinstance(given, int):
        return given, None
    return given.fileno(), None
