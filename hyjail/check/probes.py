"""The escape battery's programs: hjprobe, built from its C source, for each ABI.

Owns: compiling `probe.c` static and non-PIE with the host's gcc, as a 64-bit program and
(where gcc-multilib gives a 32-bit libc) a 32-bit one, into a cache keyed by the source, and
installing them in a jail's root: /bin/hjprobe, /bin/hjprobe32, and /bin/hjsuid, a setuid-root
copy that only prints its effective uid (the setuid-regain attempt runs it as nobody).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

from hyjail.errors import SetupError

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe.c")
CACHE = "/var/cache/hyjail/check"
BITS = {"hjprobe": [], "hjprobe32": ["-m32"]}


def build(cache: str = CACHE) -> dict[str, str | None]:
    """{name: path} of each probe built (None where this host cannot build it: no 32-bit
    libc). SetupError if even the 64-bit one cannot be built."""
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    where = os.path.join(cache, digest)
    os.makedirs(where, mode=0o755, exist_ok=True)
    built: dict[str, str | None] = {}
    for name, flags in BITS.items():
        path = os.path.join(where, name)
        if not os.path.exists(path):
            built[name] = _compile(path, flags)
        else:
            built[name] = path
    if built["hjprobe"] is None:
        raise SetupError("hyjail check: cannot build its probe: needs gcc and libc6-dev "
                         "(script/bootstrap installs them)")
    return built


def _compile(path: str, flags: list[str]) -> str | None:
    if shutil.which("gcc") is None:
        return None
    partial = f"{path}.{os.getpid()}.tmp"
    done = subprocess.run(["gcc", *flags, "-static", "-no-pie", "-O1", "-pthread", "-o",
                           partial, SOURCE], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    os.replace(partial, path)
    return path


def install(root: str, built: dict[str, str | None]) -> None:
    """Copy the probes into root/bin, with hjsuid setuid root."""
    for name, path in built.items():
        if path is not None:
            shutil.copy(path, os.path.join(root, "bin", name))
    suid = os.path.join(root, "bin", "hjsuid")
    shutil.copy(built["hjprobe"], suid)
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)
