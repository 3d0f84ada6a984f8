"""The host's caches (the probe's answers, compiled filters): nothing a jail or another user
could have written is ever used.

Owns reaching a cache directory and its entries, and sealing each entry. A directory is reached
from `/` one component at a time, never through a symlink, and used by descriptor from then on;
it and every entry must belong to the caller (root, or a rootless caller's own uid) and be
writable by nobody else. Each entry carries a tag: a MAC (keyed BLAKE2b, `hyjail.digest`) of
its name and content under a key kept in the directory's `trusted.` extended attribute, which
only a holder of CAP_SYS_ADMIN over the host's user namespace can read or write. No jailed
process ever holds that (the ns backend's root has it only in the jail's own user namespace,
and a root kept in the host's never keeps it), so a jail that could reach the cache (through a
root that contains it) can delete entries but never forge one; root without that key keeps no
cache. A rootless caller cannot use `trusted.`: its entries are tagged with a plain hash, and
trusted as far as its own private state directory is. An entry that fails any check is treated
as absent, so it is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from hyjail import digest, linux

_KEY_ATTRIBUTE = "trusted.hyjail.cache-key"
_MAGIC = b"hyjail-cache-2\n"  # 2: BLAKE2b tags (1 was HMAC-SHA256: never trusted now)
_TAG = digest.MAC_SIZE
_LIMIT = 1 << 20  # no entry is larger; a bigger file is not one of ours


class Directory:
    """An open cache directory, verified; use it in a `with` block (it holds a descriptor,
    which must never outlive the operation: nothing of the host's may reach a jail)."""

    def __init__(self, fd: int, owner: int):
        self.fd = fd
        self.owner = owner
        self._key: bytes | None = None

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *_) -> None:
        os.close(self.fd)

    def read(self, name: str) -> bytes | None:
        """The entry's content if it is a sealed entry of ours, else None."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self.fd)
        except OSError:
            return None
        try:
            if not _private(os.fstat(fd), self.owner, stat.S_ISREG):
                return None
            data = os.read(fd, _LIMIT + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        header = len(_MAGIC) + _TAG
        if len(data) > _LIMIT or len(data) < header or not data.startswith(_MAGIC):
            return None
        content = data[header:]
        tag = self._tag(name, content)
        if tag is None or not digest.same(data[len(_MAGIC):header], tag):
            return None
        return content

    def write(self, name: str, content: bytes) -> None:
        """Keep a sealed entry (atomically); a cache that cannot be written is no error."""
        tag = self._tag(name, content)
        if tag is None:
            return
        partial = f".{name}.{os.getpid()}.tmp"
        try:
            data = _MAGIC + tag + content
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(partial, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(partial, dir_fd=self.fd)

    def _tag(self, name: str, content: bytes) -> bytes | None:
        """The entry's seal; None (nothing is kept or trusted) for root without its key."""
        message = name.encode() + b"\0" + content
        if self.owner != 0:
            return digest.digest(message)
        key = self._sealing_key()
        return None if key is None else digest.mac(key, message)

    def _sealing_key(self) -> bytes | None:
        """The directory's key, made on first use; None where `trusted.` is out of reach
        (a file system without it, a root without CAP_SYS_ADMIN)."""
        if self._key is None:
            for _ in range(2):
                try:
                    key = os.getxattr(self.fd, _KEY_ATTRIBUTE)
                    if len(key) == digest.KEY_SIZE:
                        self._key = key
                    break
                except OSError as e:
                    if e.errno != errno.ENODATA:
                        break
                try:  # first use: only one maker wins; the others read its key
                    os.setxattr(self.fd, _KEY_ATTRIBUTE, os.urandom(digest.KEY_SIZE),
                                os.XATTR_CREATE)
                except OSError as e:
                    if e.errno != errno.EEXIST:
                        break
        return self._key


def content_unchecked(data: bytes) -> bytes:
    """An entry's content, trusted blindly (only the weakening "unchecked-cache" does)."""
    header = len(_MAGIC) + _TAG
    return data[header:] if data.startswith(_MAGIC) else data


def open_directory(path: str, mode: int = 0o700) -> Directory | None:
    """The cache directory at path (absolute), made if missing, or None when any component is
    a symlink or the directory is not the caller's alone. Parents it makes get `mode`."""
    owner = os.geteuid()
    resolve = linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        fd = os.open("/", flags | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for part in filter(None, path.split("/")):
            try:
                child = linux.openat2(fd, part, flags, resolve)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
                child = linux.openat2(fd, part, flags, resolve)
            os.close(fd)
            fd = child
        if not _private(os.fstat(fd), owner, stat.S_ISDIR):
            raise PermissionError(errno.EPERM, "not private", path)
    except OSError:
        os.close(fd)
        return None
    return Directory(fd, owner)


def _private(st: os.stat_result, owner: int, kind) -> bool:
    """Of the right kind, the owner's, and writable by no group or other."""
    return kind(st.st_mode) and st.st_uid == owner and not st.st_mode & 0o022
