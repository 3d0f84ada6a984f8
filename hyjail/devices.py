"""Host devices an administrator adds to a jail's /dev: `hyjail run --device`, OCI linux.devices.

Owns the Device value (the jail's path, the host's node, its type and number) and checking a
request: the path names a character or block device node of the host's under /dev (symlinks
on the host followed, as podman's --device does), placed at the same path in the jail's own
/dev, never over what that /dev already holds (its terminals, shared memory, the fd links).
The node is bound from the host, not made: jailed root cannot make device nodes (R5), and a
bind of the host's node is the only kind a user namespace lets a jail open. The mount plan
(`hyjail.ns.mounts`) binds each and checks the bound node is still the one checked here.
"""

from __future__ import annotations

import os
import stat

from hyjail.errors import SetupError
from hyjail.frozen import frozen, replace

# The host's device nodes a jail's /dev holds (each devfs ruleset a part of them:
# `hyjail.ns.mounts.DEVFS_RULESETS`); an added device of one of these names must be the same.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# What else the jail's /dev holds of its own, that no added device may cover.
RESERVED = ("pts", "ptmx", "shm", "fd", "stdin", "stdout", "stderr", "console")


@frozen
class Device:
    """A host device node at `path` in the jail (relative to the jail's root: dev/...),
    bound from `host` (the node the host's path led to), a character or block device
    numbered `rdev`."""
    path: str
    host: str
    block: bool
    rdev: int

    def describe(self) -> str:
        """As `ls -l` and OCI's linux.devices name it: `c 10:229`."""
        return f"{'b' if self.block else 'c'} {os.major(self.rdev)}:{os.minor(self.rdev)}"


def check(path: str, option: str = "--device") -> Device:
    """The device at host path `path`, to be bound at the same path in the jail, or
    SetupError naming what is wrong with it."""
    _check_path(path, option)
    host = os.path.realpath(path)
    try:
        st = os.stat(host)
    except OSError as e:
        raise SetupError(f"{option} {path}: {e.strerror.lower()}") from None
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise SetupError(f"{option} {path}: not a character or block device")
    return _not_over_own(Device(path=path[1:], host=host, block=stat.S_ISBLK(st.st_mode),
                                rdev=st.st_rdev), option)


def by_number(path: str, block: bool, rdev: int, option: str) -> Device:
    """The device numbered rdev at `path` in the jail (an OCI linux.devices entry), bound
    from the host's node at that path when it is that device, else from any node of the
    host's /dev with that number; SetupError if the host has none."""
    _check_path(path, option)
    wanted = Device(path=path[1:], host="", block=block, rdev=rdev)
    by_udev = f"/dev/{'block' if block else 'char'}/{os.major(rdev)}:{os.minor(rdev)}"
    for host in (path, by_udev, *_nodes("/dev")):
        try:
            st = os.stat(host)
        except OSError:
            continue
        if same_node(st, wanted):
            return _not_over_own(replace(wanted, host=os.path.realpath(host)), option)
    raise SetupError(f"{option} {path}: this host has no device {wanted.describe()}")


def _check_path(path: str, option: str) -> None:
    """A place in the jail's /dev that is not its own: SetupError otherwise."""
    parts = path.split("/")
    if (not path.startswith("/dev/") or "\0" in path
            or any(part in ("", ".", "..") for part in parts[2:])):
        raise SetupError(f"{option} {path}: a device is an absolute path under /dev "
                         f"(no '.', '..' or empty parts)")
    if parts[2] in RESERVED:
        raise SetupError(f"{option} {path}: /dev/{parts[2]} is the jail's own")


def _not_over_own(device: Device, option: str) -> Device:
    """device, unless it would stand where the jail's /dev has a device of its own that is
    another (an added /dev/null must be the host's /dev/null: then it is no change)."""
    name = device.path.removeprefix("dev/")
    if name in DEVICES:
        own = os.stat(f"/dev/{name}")
        if not same_node(own, device):
            raise SetupError(f"{option} /{device.path}: the jail's own /{device.path} is "
                             f"c {os.major(own.st_rdev)}:{os.minor(own.st_rdev)}")
    return device


def _nodes(top: str):
    """Every device node beneath top, but the jail's own kinds (terminals, shared memory)."""
    for directory, subdirectories, names in os.walk(top):
        if directory == top:
            subdirectories[:] = [d for d in subdirectories if d not in RESERVED]
        for name in sorted(names):
            yield os.path.join(directory, name)


def same_node(st: os.stat_result, device: Device) -> bool:
    """Whether st (of what a bind made) is the device that was checked."""
    kind = stat.S_ISBLK(st.st_mode) if device.block else stat.S_ISCHR(st.st_mode)
    return kind and st.st_rdev == device.rdev
