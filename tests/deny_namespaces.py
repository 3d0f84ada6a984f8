"""Run a command as on a host that denies namespaces: under a seccomp filter that refuses them.

    python tests/deny_namespaces.py [--only KIND[,KIND...]] COMMAND [ARG...]

Container hosts deny namespace creation this way (Docker's default profile refuses `unshare`
and namespace flags on `clone`, and `setns`), so no sysctl tells why. With --only, just those
kinds are refused (user, pid, net, uts, ipc, mnt, cgroup): what a distribution's policy, a
container runtime or a kernel built without them leaves a host. The filter is inherited by
every descendant and cannot be removed.
"""

from __future__ import annotations

import errno
import os
import sys

import pyseccomp as sc

KINDS = {"mnt": 0x00020000, "cgroup": 0x02000000, "uts": 0x04000000, "ipc": 0x08000000,
         "user": 0x10000000, "pid": 0x20000000, "net": 0x40000000, "time": 0x00000080}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--only"]:
        kinds, command = argv[1].split(","), argv[2:]
    else:
        kinds, command = list(KINDS), argv
    denied = sc.ERRNO(errno.EPERM)
    syscall_filter = sc.SyscallFilter(sc.ALLOW)
    # Every ABI the jail may use (a filter for x86_64 alone would kill any int 0x80 call).
    for arch in (sc.Arch.X86, sc.Arch.X32):
        syscall_filter.add_arch(arch)
    for kind in kinds:
        flag = KINDS[kind]
        for call in ("unshare", "clone"):
            syscall_filter.add_rule(denied, call, sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, out of a filter's reach: make callers fall back.
    syscall_filter.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    if set(kinds) == set(KINDS):
        syscall_filter.add_rule(denied, "setns")
    syscall_filter.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
