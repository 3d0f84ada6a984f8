"""The default jail root: Debian's static busybox, one symlink per applet.

Owns the layout of a busybox root (the directories a jail expects, /etc/passwd and /etc/group,
the applet links) and building it offline from the installed busybox-static package. Idempotent:
a second build over the same DEST changes nothing that is already right, and it takes
milliseconds, so tests and demos build a root wherever they need one.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess

from hyjail.errors import SetupError

BUSYBOX = "/bin/busybox"
# Debian's i386 busybox-static, unpacked by script/bootstrap (it cannot be installed beside
# the amd64 package): the 32-bit root's only binary.
BUSYBOX_I386 = "/usr/lib/hyjail/busybox-i386/bin/busybox"
MARKER = "etc/hyjail-root"  # names the kind; lets a test tell the jail's root from the host's
_PT_INTERP = 3

DIRECTORIES = {
    "bin": 0o755, "sbin": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "etc": 0o755,
    "proc": 0o555, "dev": 0o755, "sys": 0o555, "tmp": 0o1777, "root": 0o700,
    "var/tmp": 0o1777, "home": 0o755,
}
FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
    MARKER: "busybox\n",
}


# Character devices a jail's programs expect; the ns backend mounts its own /dev over them,
# a chroot (the trace backend) uses these. Made only when the builder may (root).
DEVICES = {"dev/null": (1, 3), "dev/zero": (1, 5), "dev/full": (1, 7), "dev/random": (1, 8),
           "dev/urandom": (1, 9), "dev/tty": (5, 0)}


def _make_device(path: str, major: int, minor: int) -> None:
    wanted = os.makedev(major, minor)
    try:
        st = os.lstat(path)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == wanted:
            return
    except FileNotFoundError:
        pass
    try:
        os.mknod(path + ".new", 0o666 | stat.S_IFCHR, wanted)
    except PermissionError:
        return  # not root: the root has no devices of its own
    os.chmod(path + ".new", 0o666)
    os.replace(path + ".new", path)  # replaces a symlink, never writes through it


def _is_static(path: str) -> bool:
    """True if the ELF file at path (64- or 32-bit) has no program interpreter (needs no
    shared libraries)."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] not in (1, 2):  # ELFCLASS32, ELFCLASS64
            return False
        if header[4] == 2:
            (phoff,) = struct.unpack_from("<Q", header, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        else:
            (phoff,) = struct.unpack_from("<I", header, 0x1C)
            phentsize, phnum = struct.unpack_from("<HH", header, 0x2A)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != _PT_INTERP
               for i in range(phnum))


def _write_if_changed(path: str, text: str) -> None:
    """Write through a temporary file and a rename, which replaces a symlink at path rather
    than writing to wherever it points (possibly the host's own file)."""
    if not os.path.islink(path):
        try:
            with open(path) as f:
                if f.read() == text:
                    return
        except FileNotFoundError:
            pass
    with open(path + ".new", "x") as f:
        f.write(text)
    os.replace(path + ".new", path)


def _make_directory(dest: str, directory: str, mode: int) -> None:
    """mkdir -p, refusing a symlink anywhere below dest: it could lead the build onto the host."""
    path = dest
    for part in directory.split("/"):
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise SetupError(f"{path}: is a symlink; refusing to build a root through it")
        if not os.path.isdir(path):
            os.mkdir(path)
    os.chmod(path, mode)


def _link(target: str, path: str) -> None:
    try:
        if os.readlink(path) == target:
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:  # a file where a link should be: replace it
        os.unlink(path)
    os.symlink(target, path)


def build(dest: str, busybox: str = BUSYBOX, kind: str = "busybox") -> str:
    """Build (or bring up to date) a busybox root at dest; returns dest."""
    if not os.path.isfile(busybox):
        raise SetupError(f"{busybox}: not found (install Debian's busybox-static; "
                         f"script/bootstrap unpacks the i386 one)")
    if not _is_static(busybox):
        raise SetupError(f"{busybox}: not statically linked (install busybox-static)")
    dest = os.path.abspath(dest)
    os.makedirs(dest, exist_ok=True)
    for directory, mode in DIRECTORIES.items():
        _make_directory(dest, directory, mode)
    for name, text in {**FILES, MARKER: f"{kind}\n"}.items():
        _write_if_changed(os.path.join(dest, name), text)
    for name, (major, minor) in DEVICES.items():
        _make_device(os.path.join(dest, name), major, minor)

    installed = os.path.join(dest, "bin/busybox")
    src = os.stat(busybox)
    dst = os.lstat(installed) if os.path.lexists(installed) else None
    if os.path.islink(installed) or dst is None or (
            (dst.st_size, dst.st_mtime_ns) != (src.st_size, src.st_mtime_ns)):
        shutil.copy2(busybox, installed + ".new")
        os.replace(installed + ".new", installed)

    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "bin/busybox":
            _link("/bin/busybox", os.path.join(dest, applet))
    return dest
