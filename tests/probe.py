"""Runs inside a jail over the host tree and does one exact thing with real syscalls.

usage: probe.py EXPECTED_HOSTNAME OPERATION [ARG...]

It refuses to act (exit 99) unless it is inside a hyjail jail: the hostname must be the one the
test gave the jail, and pid 1 must be the jail's init. Results are printed as `key=value`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import termios

REFUSED = 99


def inside_jail(expected_hostname: str) -> bool:
    try:
        with open("/proc/1/comm") as f:
            init = f.read().strip()
    except OSError:
        return False
    return socket.gethostname() == expected_hostname and init == "hyjail-init"


def bind(address: str) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
            print(f"bind {address}=ok")
        except OSError as e:
            print(f"bind {address}={errno.errorcode[e.errno]}")


def kill(pid: str) -> None:
    try:
        os.kill(int(pid), 0)
        print("kill=ok")
    except OSError as e:
        print(f"kill={errno.errorcode[e.errno]}")


def tiocsti() -> None:
    """Push input into every terminal this process can name."""
    targets = {"fd0": 0, "fd1": 1, "fd2": 2}
    try:
        targets["tty"] = os.open("/dev/tty", os.O_RDWR)
    except OSError as e:
        print(f"open /dev/tty={errno.errorcode[e.errno]}")
    for name, fd in targets.items():
        try:
            for byte in b"INJECTED\n":
                fcntl.ioctl(fd, termios.TIOCSTI, bytes([byte]))
            print(f"tiocsti {name}=ok")
        except OSError as e:
            print(f"tiocsti {name}={errno.errorcode[e.errno]}")
    for fd in (0, 1, 2):
        st = os.fstat(fd)
        print(f"fd{fd} dev={st.st_dev} rdev={st.st_rdev}")


def fds() -> None:
    """Every open descriptor (fstat, so that listing opens none of its own)."""
    open_fds = []
    for fd in range(4096):
        try:
            os.fstat(fd)
            open_fds.append(str(fd))
        except OSError:
            pass
    print("fds=" + ",".join(open_fds))


OPERATIONS = {"bind": bind, "kill": kill, "tiocsti": tiocsti, "fds": fds}


def main() -> int:
    expected, operation, *args = sys.argv[1:]
    if not inside_jail(expected):
        print("refusing: not inside the test's jail", file=sys.stderr)
        return REFUSED
    for arg in args or [None]:
        OPERATIONS[operation](*([arg] if arg is not None else []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
