"""The escape battery's programs: hjprobe, built from its C source, for each ABI.

Owns: compiling `probe.c` static and non-PIE with the host's gcc, as a 64-bit program and
(where gcc-multilib gives a 32-bit libc) a 32-bit one, into a cache keyed by the source, and
installing them in a jail's root: /bin/hjprobe, /bin/hjprobe32, and /bin/hjsuid, a setuid-root
copy that only prints its effective uid (the setuid-regain attempt runs it as nobody). Also the
planted NSS module of the entry group (`nss_evil.c`, a shared library), built the same way and
installed, with the nsswitch.conf that names it, only in the root of the attempt that plants it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

from hyjail.errors import SetupError

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe.c")
NSS_SOURCE = os.path.join(os.path.dirname(SOURCE), "nss_evil.c")
NSS_MODULE = "libnss_evil.so.2"
# Where a jail's dynamic loader looks for it (Debian's multiarch directory first).
NSS_DIRS = ("lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")
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


def build_nss(cache: str = CACHE) -> str | None:
    """The planted NSS module, built (or found) in the cache; None where gcc cannot build it."""
    with open(NSS_SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    where = os.path.join(cache, digest)
    os.makedirs(where, mode=0o755, exist_ok=True)
    path = os.path.join(where, NSS_MODULE)
    if os.path.exists(path):
        return path
    return _compile(path, ["-shared", "-fPIC", f"-Wl,-soname,{NSS_MODULE}"], NSS_SOURCE)


def plant_nss(root: str, module: str) -> None:
    """What a hostile jail's root writes for itself: an nsswitch.conf naming "evil" first and
    the module in every directory its loader searches."""
    with open(os.path.join(root, "etc", "nsswitch.conf"), "w") as f:
        f.write("passwd: evil files\ngroup: evil files\nshadow: evil files\n")
    for where in NSS_DIRS:
        os.makedirs(os.path.join(root, where), mode=0o755, exist_ok=True)
        shutil.copy(module, os.path.join(root, where, NSS_MODULE))


def _compile(path: str, flags: list[str], source: str = SOURCE) -> str | None:
    if shutil.which("gcc") is None:
        return None
    partial = f"{path}.{os.getpid()}.tmp"
    static = [] if "-shared" in flags else ["-static", "-no-pie", "-pthread"]
    done = subprocess.run(["gcc", *flags, *static, "-O1", "-o", partial, source],
                          capture_output=True, text=True)
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
