"""An interactive shell in a jail on a terminal: job control and Ctrl-C work inside, and the
jail holds only its own pty, so it cannot push input into the host's terminal (TIOCSTI)."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time

from conftest import HYJAIL, guard, host_plan, needs_jails, needs_probe_py, probe

pytestmark = needs_jails


class Terminal:
    """A pty standing in for the user's terminal, with hyjail run as its session's program."""

    def __init__(self, *args: str):
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        # busybox lets $LINES/$COLUMNS override the terminal's real size: keep them out.
        env = {k: v for k, v in os.environ.items() if k not in ("LINES", "COLUMNS")}
        self.process = subprocess.Popen(
            [*HYJAIL, *args], stdin=self.slave, stdout=self.slave, stderr=self.slave,
            start_new_session=True, preexec_fn=self._take_terminal, env=env)
        self.seen = b""
        self.history = b""

    def _take_terminal(self) -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    def expect(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {text!r}; screen: {self.seen[-500:]!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    data = os.read(self.master, 4096)
                    self.seen += data
                    self.history += data
                except OSError:
                    break
        assert text.encode() in self.seen, self.seen[-500:]
        self.seen = self.seen[self.seen.index(text.encode()) + len(text):]

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            return self.process.wait(timeout=20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            os.close(self.master)
            os.close(self.slave)


def test_interactive_shell_with_job_control_and_ctrl_c(busybox_root):
    term = Terminal("run", busybox_root, "tty", "127.0.0.1", "/bin/sh", "-i")
    try:
        term.send(guard("tty") + "echo sum=$((6*7))\r")
        term.expect("sum=42")
        if host_plan("auto").uses("R1", "kernel"):  # the jail's own devpts, which names it
            term.send("tty\r")
            term.expect("/dev/pts/0")
        term.send("stty size\r")
        term.expect("\n40 100")
        term.send("sleep 1000\r")
        time.sleep(0.3)
        term.send("\x03")  # Ctrl-C: SIGINT to the foreground job only, the shell lives on
        term.send("echo after=$?\r")
        term.expect("after=130")
        term.send("sleep 1000 &\r")
        term.send("jobs\r")
        term.expect("sleep 1000")
        term.send("kill %1; exit 5\r")
    finally:
        status = term.close()
    assert status == 5


@needs_probe_py
def test_jail_cannot_inject_input_into_the_host_terminal():
    term = Terminal("run", "/", "inject", "127.0.0.1", *probe("inject", "tiocsti"))
    host_terminal = os.fstat(term.slave)
    try:
        term.expect("fd2 dev=")
        term.expect("\n")
        status = term.process.wait(timeout=20)
        host_input = struct.unpack("i", fcntl.ioctl(term.slave, termios.FIONREAD, b"\0" * 4))[0]
    finally:
        term.close()
    assert status == 0
    assert host_input == 0, "the jail pushed input into the host's terminal"
    # Whatever TIOCSTI did, it did to the jail's own pty: none of its fds is the host's
    # terminal (the relay would otherwise carry injected bytes straight back into the jail).
    screen = term.history.decode()
    for fd in (0, 1, 2):
        (line,) = [x for x in screen.splitlines() if x.startswith(f"fd{fd} dev=")]
        fields = dict(item.split("=") for item in line.split()[1:])
        assert (int(fields["dev"]), int(fields["rdev"])) != (
            host_terminal.st_dev, host_terminal.st_rdev)
        assert int(fields["dev"]) != host_terminal.st_dev  # the jail's own devpts instance
