"""The host's caches (compiled filters, the probe) are never written by a jail and never used
unverified: a tampered entry is rebuilt, not loaded (issue 13, finding 5).

The host plays the attacker: it plants what a hostile writer could leave in the cache, then
starts a jail and looks from inside whether the real filter holds (unshare(CLONE_NEWUSER),
which only the filter refuses). The weakening "unchecked-cache" shows each plant would work.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys

import pytest

from conftest import backends, host_plan, hyjail, needs_jails, needs_probe_py

pytestmark = needs_jails

# Loads the architecture (as every filter of libseccomp's does first), then allows all.
ALLOW_ALL = struct.pack("<HBBI", 0x20, 0, 0, 4) + struct.pack("<HBBI", 0x06, 0, 0, 0x7FFF0000)
PLANTS = ("raw", "forged-tag", "group-writable", "symlink")


def _entry(root: str, backend: str) -> str:
    """The cache file of the filter a default jail of this backend gets (its key)."""
    from hyjail import enforcement, platform
    from hyjail import plan as plans
    from hyjail.ns import syscall_filter
    from hyjail.spec import JailSpec
    spec = JailSpec.create(root, "cached", "127.0.0.1", ["/bin/true"], backend=backend)
    held = enforcement.confinement(spec, plans.choose(platform.current(), backend))
    key = syscall_filter.entry_key(held.allowed, dict(held.traced), dict(held.refused),
                                   held.refused_arguments, dict(held.self_args), held.weakened,
                                   held.traced_arguments)
    return os.path.join(syscall_filter.cache_path(), f"{key}.bpf")


@contextlib.contextmanager
def planted(path: str, how: str):
    """An allow-all program at path, as `how` says; afterwards the entry and anything planted
    beside it are removed (the next jail compiles its filter again)."""
    from hyjail import cache
    target = f"{path}.target"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    try:
        if how == "raw":  # the format of old, unchecked caches, and any writer's
            with open(path, "wb") as f:
                f.write(ALLOW_ALL)
        elif how == "forged-tag":  # the sealed format, tagged as a rootless cache is (no key)
            from hyjail import digest
            name = os.path.basename(path)
            tag = digest.digest(name.encode() + b"\0" + ALLOW_ALL)
            with open(path, "wb") as f:
                f.write(cache._MAGIC + tag + ALLOW_ALL)
        else:  # correctly sealed (the host's key), but group-writable, or behind a symlink
            with cache.open_directory(os.path.dirname(path)) as directory:
                directory.write(os.path.basename(path), ALLOW_ALL)
            if how == "group-writable":
                os.chmod(path, 0o664)
            else:
                os.rename(path, target)
                os.symlink(os.path.basename(target), path)
        yield
    finally:
        for leftover in (path, target):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def _unshare_user(root: str, backend: str, weaken: str = "") -> str:
    env = {**os.environ, "HYJAIL_UNSAFE_WEAKEN": weaken}
    result = hyjail("run", "--backend", backend, root, "cached", "127.0.0.1", "/bin/hjprobe",
                    "cached", "64", "unshare_user", env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("backend", backends("ns", "trace"))
@pytest.mark.parametrize("how", PLANTS)
def test_a_tampered_filter_is_rebuilt_never_loaded(probe_root, backend, how):
    path = _entry(probe_root, backend)
    with planted(path, how):
        assert _unshare_user(probe_root, backend) == "unshare_user=EPERM"
        from hyjail import cache
        with cache.open_directory(os.path.dirname(path)) as directory:  # rebuilt, sealed
            assert directory.read(os.path.basename(path)) not in (None, ALLOW_ALL)


@pytest.mark.parametrize("backend", backends("ns", "trace"))
@pytest.mark.parametrize("how", PLANTS)
def test_the_weakened_jail_loads_the_plant(probe_root, backend, how):
    """The attempt can fail: trusted blindly, each plant gives the jail no filter at all."""
    path = _entry(probe_root, backend)
    with planted(path, how):
        if backend == "ns":
            assert _unshare_user(probe_root, backend, "unchecked-cache") == "unshare_user=ok"
        else:  # no call stops for the supervisor: uname gives the host's own name
            env = {**os.environ, "HYJAIL_UNSAFE_WEAKEN": "unchecked-cache"}
            result = hyjail("run", "--backend", backend, probe_root, "cached", "127.0.0.1",
                            "/bin/hostname", env=env)
            assert result.stdout.strip() == os.uname().nodename != "cached", result.stderr


def _forged_probe() -> dict:
    """This caller's probe, as a forger would cache it: no namespace of any kind."""
    from hyjail import platform
    real = platform.current()
    return {platform.fingerprint(): {
        name: [False if name.startswith("ns.") else check.ok, check.detail]
        for name, check in real.items()}}


@contextlib.contextmanager
def forged_probe_cache():
    from hyjail import platform
    path = os.path.join(platform.cache_dir(), "probe.json")
    forged = _forged_probe()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    try:
        with open(path, "w") as f:  # unsealed, as anything but hyjail would write it
            json.dump(forged, f)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _auto_providers(weaken: str = "") -> set[str]:
    """The providers `--backend auto` picks, as `hyjail features` reports them."""
    env = {**os.environ, "HYJAIL_UNSAFE_WEAKEN": weaken}
    result = hyjail("features", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {row["provider"] for row in json.loads(result.stdout)["plan"]
            if "auto" in row["picked_by"]}


def test_a_forged_probe_is_probed_again():
    """Believed, the forged probe would put every rule on ptrace (or leave auto none)."""
    from hyjail import plan as plans
    from hyjail.errors import SetupError
    from hyjail.platform import Check, Probe
    real = {provider.kind for provider in host_plan("auto").chosen.values()}
    (forged,) = _forged_probe().values()
    try:
        believed = {provider.kind for provider in plans.choose(Probe(
            {name: Check(name, ok, detail) for name, (ok, detail) in forged.items()})).chosen
            .values()}
    except SetupError:
        believed = set()
    if believed == real:
        pytest.skip("needs a namespace of some kind: this host's probe already has none")
    with forged_probe_cache():
        assert _auto_providers() == real
    with forged_probe_cache():  # and the weakened caller believes it
        assert _auto_providers("unchecked-cache") == believed


def test_a_cache_directory_behind_a_symlink_or_writable_by_others_is_not_used(tmp_path):
    from hyjail import cache
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    assert cache.open_directory(str(tmp_path / "link")) is None
    assert cache.open_directory(str(tmp_path / "link" / "below")) is None
    assert not (real / "below").exists()  # nothing made through the symlink
    os.chmod(real, 0o770)
    assert cache.open_directory(str(real)) is None
    os.chmod(real, 0o700)
    with cache.open_directory(str(real)) as directory:
        directory.write("entry", b"content")
        assert directory.read("entry") == b"content"
        os.chmod(real / "entry", 0o666)
        assert directory.read("entry") is None


_WRITE_THE_CACHE = """
import os, socket, sys
with open("/proc/1/comm") as f:
    if socket.gethostname() != sys.argv[1] or f.read().strip() != "hyjail-init":
        sys.exit(99)
for directory in ("/var/cache/hyjail", "/var/cache/hyjail/filters"):
    try:
        fd = os.open(os.path.join(directory, "hyjail-test-written"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        print(directory, "written")
    except OSError as e:
        print(directory, "refused", e.strerror)
"""


@needs_probe_py  # a jail over the host's tree, whose pid 1 is hyjail-init
@pytest.mark.parametrize("weaken", ["", "unchecked-cache"])
def test_a_jail_over_the_host_tree_cannot_write_the_cache(weaken):
    """The mask of /var/cache/hyjail in a jail over / (hyjail/ns/mounts.py); weakened, the
    jail writes both directories."""
    from hyjail.ns import syscall_filter
    from hyjail.ns.syscall_filter import cache_path
    syscall_filter.program(frozenset())  # the directories exist
    made = [os.path.join(d, "hyjail-test-written") for d in (os.path.dirname(cache_path()),
                                                            cache_path())]
    try:
        result = hyjail("run", "/", "cachew", "127.0.0.1", sys.executable, "-c",
                        _WRITE_THE_CACHE, "cachew",
                        env={**os.environ, "HYJAIL_UNSAFE_WEAKEN": weaken})
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("written" if weaken else "refused") == 2, result.stdout
    finally:
        for path in made:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

