"""A Debian jail root, from Debian's archive: `hyjail rootfs build debian [--suite S]
[--include PKG,...] [--mirror URL] DEST`.

Owns the mmdebstrap command that builds one (root mode, the minbase variant plus what is
asked for, no documentation or manual pages), and the guard that keeps the packages'
services from starting while it runs: mmdebstrap runs their maintainer scripts chrooted
but in the host's network and processes, where a web server's postinst would start it on
the host's port 80. So /usr/sbin/policy-rc.d answers 101 ("action forbidden") from the
moment the essential packages are in until the build is done, and is gone from the root
it leaves. Progress is mmdebstrap's own, on stderr. DEST must be a new or empty directory
(mmdebstrap's rule), and is the marker's `debian SUITE`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from hyjail.errors import SetupError

DEFAULT_SUITE = "bookworm"
MARKER = "etc/hyjail-root"
# Each hook runs with the root's path as $1.
_GUARD = ("printf '#!/bin/sh\\n# hyjail: no service starts while the root is built\\n"
          "exit 101\\n' > \"$1/usr/sbin/policy-rc.d\" && chmod 755 \"$1/usr/sbin/policy-rc.d\"")
_UNGUARD = "rm -f \"$1/usr/sbin/policy-rc.d\""
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+\Z")
_SUITE = re.compile(r"[a-z][a-z0-9-]*\Z")


def build(dest: str, suite: str = DEFAULT_SUITE, include: tuple[str, ...] = (),
          mirror: str | None = None) -> str:
    """Build a Debian root of `suite` with `include` at dest; returns dest."""
    if shutil.which("mmdebstrap") is None:
        raise SetupError("rootfs build debian: needs mmdebstrap (apt-get install mmdebstrap)")
    if os.geteuid() != 0:
        raise SetupError("rootfs build debian: needs root (mmdebstrap's root mode)")
    if not _SUITE.match(suite):
        raise SetupError(f"--suite {suite}: not a Debian suite name")
    for package in include:
        if not _PACKAGE.match(package):
            raise SetupError(f"--include {package}: not a Debian package name")
    if mirror is not None and not re.match(r"(https?|file)://\S+\Z", mirror):
        raise SetupError(f"--mirror {mirror}: an http://, https:// or file:// URL")
    dest = os.path.abspath(dest)
    if os.path.lexists(dest) and (not os.path.isdir(dest) or os.path.islink(dest)
                                  or os.listdir(dest)):
        raise SetupError(f"{dest}: exists and is not an empty directory")
    command = ["mmdebstrap", "--mode=root", "--variant=minbase",
               *([f"--include={','.join(include)}"] if include else []),
               "--dpkgopt=path-exclude=/usr/share/man/*",
               "--dpkgopt=path-exclude=/usr/share/doc/*",
               "--dpkgopt=path-include=/usr/share/doc/*/copyright",
               f"--essential-hook={_GUARD}", f"--customize-hook={_UNGUARD}",
               f"--customize-hook=echo 'debian {suite}' > \"$1/{MARKER}\"",
               suite, dest, *([mirror] if mirror else [])]
    made = not os.path.lexists(dest)
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL)
    except KeyboardInterrupt:
        done = None
    if done is None or done.returncode != 0:
        _undo(dest, made)
        status = "interrupted" if done is None else f"exit {done.returncode}"
        raise SetupError(f"rootfs build debian: mmdebstrap failed ({status}; its messages "
                         f"are above)")
    return dest


def _undo(dest: str, made: bool) -> None:
    """Nothing half-built left where the user asked for a root: the directory if the build
    made it, else what the build put in it."""
    if made:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for entry in os.listdir(dest):
        path = os.path.join(dest, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
