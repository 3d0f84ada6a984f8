"""A jail root from a container image or a root tarball: `hyjail rootfs import ARCHIVE DEST`.

Owns reading the three kinds of archive (`podman save`/`docker save`'s docker-archive with its
manifest.json; an OCI image layout, as `podman save --format oci-archive` writes it, with its
index.json; else a plain root tarball, gzip, bzip2 or xz alike), and applying the image's
layers in order into DEST with the OCI rules for whiteouts: `.wh.NAME` removes NAME, and
`.wh..wh..opq` empties its directory, of what the layers below left (never of what the same
layer adds).

Never writing outside DEST: an archive is the image author's, and a hostile one names
`../x`, `/etc/x`, or a symlink (`lib -> /`, `etc -> ../../..`) and then files through it.
Every member's parent is resolved beneath DEST as if DEST were `/` (openat2 with
RESOLVE_IN_ROOT: a symlink inside the image resolves inside the image, as it will in the
jail), every entry is made relative to that directory's descriptor without following a link
at its last component, and a hard link's target is resolved the same way. Device nodes are
skipped (a jail gets its own /dev); owners, modes (set-id bits too) and times are kept.
DEST must be a new or empty directory; what a failed import made is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from typing import IO

from hyjail import linux
from hyjail.errors import SetupError

_IN_ROOT = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_ZSTD = ("zstd",)
_CHUNK = 1 << 20


def import_archive(archive: str, dest: str) -> str:
    """Apply the image (or tarball) at archive into dest; returns dest."""
    dest = os.path.abspath(dest)
    if os.path.lexists(dest) and (not os.path.isdir(dest) or os.path.islink(dest)
                                  or os.listdir(dest)):
        raise SetupError(f"{dest}: exists and is not an empty directory")
    made = not os.path.lexists(dest)
    try:
        outer = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed in the finally below)
    except (OSError, tarfile.TarError) as e:
        raise SetupError(f"{archive}: {getattr(e, 'strerror', None) or e}") from None
    try:
        os.makedirs(dest, 0o755, exist_ok=True)
        root = os.open(dest, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for layer in _layers(outer, archive):
                with layer as tar:
                    _apply(tar, root, archive)
        finally:
            os.close(root)
    except BaseException:
        _undo(dest, made)
        raise
    finally:
        outer.close()
    return dest


# ---- which layers -------------------------------------------------------------------------

def _layers(outer: tarfile.TarFile, archive: str) -> Iterator[contextlib.AbstractContextManager]:
    """Each layer of the archive, lowest first, as a context giving a TarFile."""
    names = {m.name.removeprefix("./"): m for m in outer.getmembers()}
    if "manifest.json" in names:
        manifest = _json(outer, names, "manifest.json", archive)
        if not isinstance(manifest, list) or len(manifest) != 1:
            raise SetupError(f"{archive}: its manifest.json holds {_count(manifest)} images; "
                             f"hyjail imports one")
        paths = manifest[0].get("Layers") if isinstance(manifest[0], dict) else None
        if not isinstance(paths, list):
            raise SetupError(f"{archive}: manifest.json names no layers")
        for path in paths:
            yield _inner(outer, names, str(path), archive)
    elif "index.json" in names and "oci-layout" in names:
        manifest = _oci_manifest(outer, names, archive)
        for layer in manifest.get("layers", []):
            if any(kind in str(layer.get("mediaType", "")) for kind in _ZSTD):
                raise SetupError(f"{archive}: a zstd-compressed layer; hyjail reads tar, gzip, "
                                 f"bzip2 and xz")
            yield _inner(outer, names, _blob(layer, archive), archive)
    else:  # a plain root tarball: one layer, the archive itself, read again as a stream
        yield _stream(archive)


def _oci_manifest(outer: tarfile.TarFile, names: dict, archive: str) -> dict:
    document = _json(outer, names, "index.json", archive)
    for _ in range(4):  # an index may name an index (a multi-platform image)
        found = document.get("manifests") if isinstance(document, dict) else None
        if not isinstance(found, list) or not found:
            return document if isinstance(document, dict) else {}
        if len(found) > 1:
            found = [m for m in found if (m.get("platform") or {}).get("architecture")
                     in (None, "amd64")] or found
            if len(found) > 1:
                raise SetupError(f"{archive}: holds {len(found)} images; hyjail imports one")
        document = _json(outer, names, _blob(found[0], archive), archive)
    raise SetupError(f"{archive}: index.json nests too deep")


def _blob(descriptor: dict, archive: str) -> str:
    digest = str(descriptor.get("digest", "")) if isinstance(descriptor, dict) else ""
    algorithm, _, value = digest.partition(":")
    if not (algorithm.isalnum() and value.isalnum()):
        raise SetupError(f"{archive}: a descriptor without a digest: {digest!r}")
    return f"blobs/{algorithm}/{value}"


def _json(outer: tarfile.TarFile, names: dict, name: str, archive: str):
    with _member(outer, names, name, archive) as f:
        try:
            return json.loads(f.read(16 << 20))
        except ValueError as e:
            raise SetupError(f"{archive}: {name}: not JSON ({e})") from None


@contextlib.contextmanager
def _member(outer: tarfile.TarFile, names: dict, name: str, archive: str) -> Iterator[IO]:
    member = names.get(posixpath.normpath(name).removeprefix("./"))
    if member is None or not member.isfile():
        raise SetupError(f"{archive}: {name}: not in the archive")
    f = outer.extractfile(member)
    try:
        yield f
    finally:
        f.close()


@contextlib.contextmanager
def _inner(outer: tarfile.TarFile, names: dict, name: str, archive: str
           ) -> Iterator[tarfile.TarFile]:
    with _member(outer, names, name, archive) as f:
        try:
            tar = tarfile.open(fileobj=f, mode="r|*")  # noqa: SIM115 (the with below)
        except tarfile.TarError as e:
            raise SetupError(f"{archive}: layer {name}: {e}") from None
        with tar:
            yield tar


@contextlib.contextmanager
def _stream(archive: str) -> Iterator[tarfile.TarFile]:
    """The archive read once, front to back (a compressed one is never rewound)."""
    with tarfile.open(archive, "r|*") as tar:
        yield tar


def _count(value) -> int:
    return len(value) if isinstance(value, list) else 0


# ---- applying one layer -------------------------------------------------------------------

def _apply(tar: tarfile.TarFile, root: int, archive: str) -> None:
    """One layer's members, in order; whiteouts remove only what lower layers left."""
    added: set[str] = set()  # paths this layer made, which its whiteouts never touch
    try:
        for member in tar:
            path = _path(member.name, archive)
            if path is None:
                continue  # the root itself
            parent, name = posixpath.split(path)
            if name == OPAQUE:
                _empty(root, parent, added)
            elif name.startswith(WHITEOUT):
                gone = posixpath.join(parent, name[len(WHITEOUT):])
                if gone not in added:
                    _remove(root, gone)
            elif _make(tar, member, root, parent, name, archive):
                added.add(path)
    except tarfile.TarError as e:
        raise SetupError(f"{archive}: {e}") from None


def _path(name: str, archive: str) -> str | None:
    """A member's path relative to the root, or SetupError if it climbs out of it."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise SetupError(f"{archive}: member {name!r} climbs out of the root: refused")
    if any("\0" in p for p in parts):
        raise SetupError(f"{archive}: member {name!r}: not a file name")
    return "/".join(parts) or None


def _directory(root: int, path: str) -> int:
    """An O_PATH descriptor of the directory at path beneath root, resolved as the jail will
    resolve it (the image's symlinks followed inside the root, `..` stopping at it), each
    directory on the way made (0755) where missing, a link's missing target included (as
    container runtimes do)."""
    here: list[str] = []  # the resolved path so far: directories only, no links
    todo = [p for p in path.split("/") if p not in ("", ".")]
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if here:
                here.pop()
            continue
        parent = _resolved(root, here)
        try:
            try:
                found = os.stat(part, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                os.mkdir(part, 0o755, dir_fd=parent)
                here.append(part)
                continue
            if stat.S_ISLNK(found.st_mode):
                links += 1
                if links > 40:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                target = os.readlink(part, dir_fd=parent)
                if target.startswith("/"):
                    here = []
                todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            elif stat.S_ISDIR(found.st_mode):
                here.append(part)
            else:
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        finally:
            os.close(parent)
    return _resolved(root, here)


def _resolved(root: int, here: list[str]) -> int:
    """The directory at a path of directories only (no link on it: one there now is
    refused, never followed)."""
    return linux.openat2(root, "/".join(here) or ".", os.O_PATH | os.O_DIRECTORY,
                         _IN_ROOT | linux.RESOLVE_NO_SYMLINKS)


def _make(tar: tarfile.TarFile, member: tarfile.TarInfo, root: int, parent: str, name: str,
          archive: str) -> bool:
    """Make one entry; False if it is skipped (a device node)."""
    if member.ischr() or member.isblk():
        return False
    try:
        where = _directory(root, parent)
    except OSError as e:
        raise SetupError(f"{archive}: {member.name}: {e.strerror}") from None
    try:
        if member.isdir():
            _make_directory(where, name)
        else:
            _clear(where, name)
            if member.isreg():
                _make_file(tar, member, where, name)
            elif member.issym():
                os.symlink(member.linkname, name, dir_fd=where)
            elif member.islnk():
                _make_link(root, member.linkname, where, name, archive)
            elif member.isfifo():
                os.mkfifo(name, 0o600, dir_fd=where)
            else:
                return False
        _own(member, where, name)
    except OSError as e:
        raise SetupError(f"{archive}: {member.name}: {e.strerror}") from None
    finally:
        os.close(where)
    return True


def _make_directory(where: int, name: str) -> None:
    try:
        found = os.stat(name, dir_fd=where, follow_symlinks=False)
    except FileNotFoundError:
        os.mkdir(name, 0o700, dir_fd=where)
        return
    if not stat.S_ISDIR(found.st_mode):  # a link or file below becomes the directory
        os.unlink(name, dir_fd=where)
        os.mkdir(name, 0o700, dir_fd=where)


def _clear(where: int, name: str) -> None:
    """Make room for a non-directory: whatever is at name, link, file or tree, goes."""
    try:
        found = os.stat(name, dir_fd=where, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(found.st_mode):
        _remove_tree(where, name)
    else:
        os.unlink(name, dir_fd=where)


def _make_file(tar: tarfile.TarFile, member: tarfile.TarInfo, where: int, name: str) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=where)
    with os.fdopen(fd, "wb") as out:
        source = tar.extractfile(member)
        if source is not None:
            shutil.copyfileobj(source, out, _CHUNK)


def _make_link(root: int, target: str, where: int, name: str, archive: str) -> None:
    """A hard link to target as the image names it: resolved beneath the root, never a file
    of the host's."""
    path = _path(target, archive)
    if path is None:
        raise SetupError(f"{archive}: a hard link to the root")
    source = linux.openat2(root, path, os.O_PATH | os.O_NOFOLLOW, _IN_ROOT)
    try:
        if stat.S_ISDIR(os.fstat(source).st_mode):
            raise SetupError(f"{archive}: a hard link to the directory {target!r}")
        os.link(f"/proc/self/fd/{source}", name, dst_dir_fd=where, follow_symlinks=True)
    finally:
        os.close(source)


def _own(member: tarfile.TarInfo, where: int, name: str) -> None:
    """Owner, then mode (chown clears set-id bits), then times; a symlink's own owner only."""
    os.chown(name, member.uid, member.gid, dir_fd=where, follow_symlinks=False)
    if member.issym():
        return
    if not member.islnk():
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=where)
        try:
            os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(member.mode))
        finally:
            os.close(fd)
    os.utime(name, (member.mtime, member.mtime), dir_fd=where, follow_symlinks=False)


def _remove(root: int, path: str) -> None:
    parent, name = posixpath.split(path)
    try:
        where = linux.openat2(root, parent or ".", os.O_PATH | os.O_DIRECTORY, _IN_ROOT)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        _clear(where, name)
    finally:
        os.close(where)


def _empty(root: int, path: str, added: set[str]) -> None:
    """An opaque directory: what the layers below put in it goes (this layer's stays)."""
    try:
        where = linux.openat2(root, path or ".", os.O_RDONLY | os.O_DIRECTORY, _IN_ROOT)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        for entry in os.listdir(where):
            if posixpath.join(path, entry) not in added:
                _clear(where, entry)
    finally:
        os.close(where)


def _remove_tree(where: int, name: str) -> None:
    """rm -r of name in the directory `where`, by descriptors, never following a link."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=where)
    try:
        for entry in os.listdir(fd):
            found = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(found.st_mode):
                _remove_tree(fd, entry)
            else:
                os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=where)


def _undo(dest: str, made: bool) -> None:
    with contextlib.suppress(OSError):
        if made:
            shutil.rmtree(dest)
        else:
            for entry in os.listdir(dest):
                path = os.path.join(dest, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)

