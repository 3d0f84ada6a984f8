"""The Python floor: the least a jail written in Python does to run a command, timed beside
hyjail's in bench/run.py (issue 19's yardstick: what the interpreter itself costs).

    python3 -I -S bench/floor.py ROOT COMMAND [ARG...]      (as root)

New mount, UTS, IPC, pid and network namespaces (ctypes' unshare), a fork into the new pid
namespace, ROOT bound onto itself with a fresh /proc, pivot_root, exec; the command's exit
status. No cgroups, no seccomp filter, no capabilities dropped, no registry: not a jail
anyone should use, only the floor under one.
"""

import ctypes
import os
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 0x1000, 0x4000, 1 << 18, 2
SYS_PIVOT_ROOT = 155  # x86_64
libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def jail(root: bytes, argv: list) -> None:
    """In the new pid namespace's first process: the root, then the command."""
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "private mounts")
    check(libc.mount(root, root, None, MS_BIND | MS_REC, None), "bind the root")
    os.chdir(root)
    check(libc.mount(b"proc", b"proc", b"proc", 0, None), "mount proc")
    check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    check(libc.umount2(b".", MNT_DETACH), "unmount the old root")
    os.chdir("/")
    os.execv(argv[0], argv)


def main() -> int:
    root, argv = os.fsencode(sys.argv[1]), sys.argv[2:]
    check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET),
          "unshare")
    pid = os.fork()
    if pid == 0:
        try:
            jail(root, argv)
        except OSError as e:
            print(f"floor: {e}", file=sys.stderr)
        os._exit(127)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
