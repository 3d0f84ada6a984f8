"""Run a command as on a locked-down host: under a seccomp filter that refuses namespaces.

    python tests/deny_namespaces.py [--user-only] COMMAND [ARG...]

Container hosts deny namespace creation this way (Docker's default profile refuses `unshare`
and namespace flags on `clone`), so no sysctl tells why. With --user-only, only user
namespaces are refused (what a distribution's policy or a container runtime may do). The
filter is inherited by every descendant and cannot be removed.
"""

from __future__ import annotations

import errno
import os
import sys

import pyseccomp as sc

CLONE_NEWUSER = 0x10000000
ALL_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, CLONE_NEWUSER, 0x20000000,
                  0x40000000, 0x00000080)


def main(argv: list[str]) -> None:
    user_only = argv[:1] == ["--user-only"]
    command = argv[1:] if user_only else argv
    flags = (CLONE_NEWUSER,) if user_only else ALL_NAMESPACES
    denied = sc.ERRNO(errno.EPERM)
    syscall_filter = sc.SyscallFilter(sc.ALLOW)
    for flag in flags:
        for call in ("unshare", "clone"):
            syscall_filter.add_rule(denied, call, sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, out of a filter's reach: make callers fall back.
    syscall_filter.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    if not user_only:
        syscall_filter.add_rule(denied, "setns")
    syscall_filter.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
