"""AppArmor for an OCI container's process (process.apparmorProfile, as runc applies it).

Owns whether the host enforces AppArmor, whether a profile asked for is loaded, and asking
the kernel to confine the calling thread under a profile from its next exec on (`exec
PROFILE` written to its attr/apparmor/exec, or attr/exec before Linux 5.8). The file is
reached through the jail's /proc only after that mount is checked to be a procfs and the
path to stay on it (openat2, RESOLVE_NO_XDEV): a jail root able to mount could otherwise lay
a file of its own over it, and the profile would silently not be applied. Failing that, the
process is not run (SetupError naming the profile).
"""

from __future__ import annotations

import errno
import os

from hyjail import linux
from hyjail.errors import SetupError

SECURITYFS = "/sys/kernel/security/apparmor"
UNCONFINED = "unconfined"


def enabled() -> bool:
    """Whether this host's kernel enforces AppArmor (its securityfs directory is there)."""
    return os.path.isdir(SECURITYFS)


def loaded(profile: str) -> bool:
    """Whether a profile of that name is loaded (`NAME (MODE)` lines of its profiles file)."""
    try:
        with open(os.path.join(SECURITYFS, "profiles")) as f:
            return any(line.rpartition(" (")[0] == profile for line in f)
    except OSError:
        return False


def wanted(profile: str | None, field: str) -> str | None:
    """A profile asked for (`field` names where): one the host has loaded; "unconfined" as it
    is (no profile); None for none; SetupError on a host without AppArmor or for a profile
    it has not loaded."""
    if not profile or profile == UNCONFINED:
        return profile or None
    if not enabled():
        raise SetupError(f"{field}: {profile}: this host has no AppArmor")
    if not loaded(profile):
        raise SetupError(f"{field}: {profile}: no such profile is loaded (apparmor_parser "
                         f"-r FILE loads one)")
    return profile


def confine_on_exec(profile: str, proc: str = "/proc") -> None:
    """The calling thread runs under `profile` from its next exec on."""
    what = f"process.apparmorProfile {profile}"
    try:
        top = os.open(proc, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise SetupError(f"{what}: cannot be applied: {proc}: {e.strerror}") from None
    try:
        if linux.filesystem_type(top) != linux.PROC_SUPER_MAGIC:
            raise SetupError(f"{what}: cannot be applied: {proc} is not a proc file system")
        fd = None
        for name in ("thread-self/attr/apparmor/exec", "thread-self/attr/exec"):
            try:
                fd = linux.openat2(top, name, os.O_WRONLY, linux.RESOLVE_NO_XDEV)
                break
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise SetupError(f"{what}: cannot be applied: {proc}/{name}: "
                                     f"{e.strerror}") from None
        if fd is None:
            raise SetupError(f"{what}: cannot be applied: {proc} has no attr/exec")
        try:
            os.write(fd, f"exec {profile}".encode())
        except OSError as e:
            raise SetupError(f"{what}: cannot be applied: {e.strerror}") from None
        finally:
            os.close(fd)
    finally:
        os.close(top)
