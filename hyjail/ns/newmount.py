"""The new mount API (Linux 5.2): a filesystem made detached, held by descriptor, then attached.

Owns: thin wrappers of fsopen, fsconfig, fsmount, open_tree, mount_setattr and move_mount.
Mounting this way gives the caller a descriptor of the new filesystem's root (or of a bind's
copy) before it is attached anywhere, so what is done inside it afterwards never goes by a
name that someone else could redirect (mount(2) leaves only the target's name to find the new
filesystem by). Nothing here decides policy; each wrapper raises OSError with the kernel's
errno.
"""

from __future__ import annotations

import ctypes
import os

from hyjail.linux import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY

# The same numbers on every architecture (the unified table from 424 on).
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432

_FSOPEN_CLOEXEC = 0x1
_FSMOUNT_CLOEXEC = 0x1
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOVE_MOUNT_T_EMPTY_PATH = 0x40

# mount(2)'s per-mount flags and their MOUNT_ATTR_* equivalents (the only ones plans use).
_ATTRIBUTES = {MS_RDONLY: 0x1, MS_NOSUID: 0x2, MS_NODEV: 0x4, MS_NOEXEC: 0x8}

_libc = ctypes.CDLL(None, use_errno=True)


def _call(what: str, *args: object) -> int:
    result = _libc.syscall(*args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), what)
    return result


def make(fstype: str, flags: int = 0, data: str | None = None) -> int:
    """A new, detached filesystem of fstype with mount(2)-style per-mount flags and options
    ("mode=755,size=64k,newinstance"); returns an O_CLOEXEC descriptor of its root."""
    unknown = flags & ~sum(_ATTRIBUTES)
    if unknown:
        raise ValueError(f"mount flags {unknown:#x} have no mount attribute")
    attributes = sum(attr for flag, attr in _ATTRIBUTES.items() if flags & flag)
    context = _call(f"fsopen {fstype}", _SYS_FSOPEN, os.fsencode(fstype),
                    ctypes.c_uint(_FSOPEN_CLOEXEC))
    try:
        # The source names the filesystem in mountinfo and df, as mount(2)'s would.
        # A read-only filesystem too, not only a read-only mount, as mount(2) would make it
        # (writes then fail with EROFS before any permission check).
        options = (f"source={fstype}", *(("ro",) if flags & MS_RDONLY else ()),
                   *filter(None, (data or "").split(",")))
        for option in options:
            key, has_value, value = option.partition("=")
            if has_value:
                _call(f"{fstype} option {option}", _SYS_FSCONFIG, context,
                      ctypes.c_uint(_FSCONFIG_SET_STRING), os.fsencode(key),
                      os.fsencode(value), 0)
            else:
                _call(f"{fstype} option {option}", _SYS_FSCONFIG, context,
                      ctypes.c_uint(_FSCONFIG_SET_FLAG), os.fsencode(key), None, 0)
        _call(f"create {fstype}", _SYS_FSCONFIG, context, ctypes.c_uint(_FSCONFIG_CMD_CREATE),
              None, None, 0)
        return _call(f"fsmount {fstype}", _SYS_FSMOUNT, context,
                     ctypes.c_uint(_FSMOUNT_CLOEXEC), ctypes.c_uint(attributes))
    finally:
        os.close(context)


def attach(mount_fd: int, target_fd: int) -> None:
    """Attach the detached mount at mount_fd onto the directory or file open at target_fd (an
    O_PATH descriptor: the target is the object already opened, never a name looked up again).
    mount_fd stays a descriptor of the mount's root."""
    _call("move_mount", _SYS_MOVE_MOUNT, mount_fd, b"", target_fd, b"",
          ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH))


_SYS_OPEN_TREE = 428
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 0x1
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def clone(source_fd: int, recursive: bool = False) -> int:
    """A detached copy of the mount at source_fd (an O_PATH descriptor: the object already
    opened, never a name), with the mounts beneath it if recursive: a bind mount not yet
    attached anywhere. Returns an O_CLOEXEC descriptor of its root."""
    flags = _OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_EMPTY_PATH | (_AT_RECURSIVE if recursive else 0)
    return _call("open_tree", _SYS_OPEN_TREE, source_fd, b"", ctypes.c_uint(flags))


def restrict(mount_fd: int, flags: int, recursive: bool = False) -> None:
    """Add mount(2)-style per-mount flags (MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC) to the
    mount at mount_fd, attached or not, and to those beneath it if recursive (mount_setattr,
    Linux 5.12: OSError ENOSYS before)."""
    unknown = flags & ~sum(_ATTRIBUTES)
    if unknown:
        raise ValueError(f"mount flags {unknown:#x} have no mount attribute")
    attr = _MountAttr(sum(a for flag, a in _ATTRIBUTES.items() if flags & flag), 0, 0, 0)
    _call("mount_setattr", _SYS_MOUNT_SETATTR, mount_fd, b"",
          ctypes.c_uint(_AT_EMPTY_PATH | (_AT_RECURSIVE if recursive else 0)),
          ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
