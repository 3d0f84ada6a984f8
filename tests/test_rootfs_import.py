"""`hyjail rootfs import`: container images (docker-archive, OCI layout) and root tarballs
into a jail root, layers in order with their whiteouts, and never a byte outside DEST, whatever
the archive's names, symlinks and hard links say."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile

import pytest

from hyjail.errors import SetupError
from hyjail.rootfs.image import import_archive

from conftest import hyjail, needs_jails, new_leaks


class Layer:
    """A layer (a tar) made in memory."""

    def __init__(self) -> None:
        self.data = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.data, mode="w",  # noqa: SIM115 (closed by bytes())
                                format=tarfile.PAX_FORMAT)

    def add(self, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode=0o644,
            link: str = "", uid: int = 0, gid: int = 0, major: int = 0, minor: int = 0):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.uid, info.gid = kind, mode, link, uid, gid
        info.devmajor, info.devminor, info.mtime = major, minor, 1_000_000_000
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        self.tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        return self

    def bytes(self) -> bytes:
        self.tar.close()
        return self.data.getvalue()


def _archive(path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def docker_archive(path, *layers: Layer) -> str:
    files = {f"l{i}/layer.tar": layer.bytes() for i, layer in enumerate(layers)}
    files["manifest.json"] = json.dumps([{"Config": "c.json", "RepoTags": ["t:1"],
                                          "Layers": [f"l{i}/layer.tar"
                                                     for i in range(len(layers))]}]).encode()
    return _archive(path, files)


def oci_archive(path, *layers: Layer, compress: str = "gzip") -> str:
    files: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        files[f"blobs/sha256/{digest}"] = data
        return f"sha256:{digest}"
    described = []
    for layer in layers:
        data = layer.bytes()
        if compress == "gzip":
            data = gzip.compress(data)
        described.append({"mediaType": f"application/vnd.oci.image.layer.v1.tar+{compress}",
                          "digest": blob(data), "size": len(data)})
    manifest = blob(json.dumps({"schemaVersion": 2, "layers": described}).encode())
    inner_index = blob(json.dumps({"manifests": [{"digest": manifest,
                                                  "platform": {"architecture": "amd64"}}]}
                                  ).encode())
    files["index.json"] = json.dumps({"manifests": [{"digest": inner_index}]}).encode()
    return _archive(path, files)


def _read(path) -> str:
    with open(path) as f:
        return f.read()


def test_layers_apply_in_order_with_whiteouts(tmp_path):
    lower = (Layer().add("etc/", tarfile.DIRTYPE, mode=0o755)
             .add("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n")
             .add("usr/bin/tool", data=b"old tool", mode=0o755)
             .add("usr/lib/libx.so", data=b"x")
             .add("lib", tarfile.SYMTYPE, link="usr/lib")
             .add("data/old", data=b"old").add("data/keep/a", data=b"a")
             .add("bin/su", data=b"su", mode=0o4755, uid=0)
             .add("home/u/f", data=b"f", uid=1000, gid=1000))
    upper = (Layer().add("usr/bin/.wh.tool")
             .add("data/.wh..wh..opq").add("data/new", data=b"new")
             .add("lib/liby.so", data=b"y")  # through the image's own symlink
             .add("etc/.wh.nonexistent"))
    dest = tmp_path / "root"
    import_archive(docker_archive(tmp_path / "image.tar", lower, upper), str(dest))
    assert not (dest / "usr/bin/tool").exists()
    assert sorted(os.listdir(dest / "data")) == ["new"]
    assert _read(dest / "usr/lib/liby.so") == "y" and os.readlink(dest / "lib") == "usr/lib"
    assert stat.S_IMODE(os.stat(dest / "bin/su").st_mode) == 0o4755
    assert (os.stat(dest / "home/u/f").st_uid, os.stat(dest / "home/u/f").st_gid) == (1000, 1000)
    assert os.stat(dest / "etc/passwd").st_mtime == 1_000_000_000


def test_an_oci_layout_with_gzip_layers_and_a_nested_index(tmp_path):
    image = oci_archive(tmp_path / "oci.tar", Layer().add("a", data=b"1").add("b", data=b"2"),
                        Layer().add(".wh.a").add("c", data=b"3"))
    dest = tmp_path / "root"
    import_archive(image, str(dest))
    assert sorted(os.listdir(dest)) == ["b", "c"]


def test_nothing_is_written_outside_dest(tmp_path):
    """Absolute names, symlinks to / and up, a hard link to a host file: all land in (or
    resolve inside) DEST, as the jail will see them."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host's\n")
    hostile = (Layer().add("/abs", data=b"abs")
               .add("evil", tarfile.SYMTYPE, link="/")
               .add("evil/planted", data=b"through /")
               .add("up", tarfile.SYMTYPE, link=f"../../../../../..{outside}")
               .add("up/planted", data=b"through ..")
               .add("dev/sda", tarfile.BLKTYPE, major=8, minor=0)
               .add("fifo", tarfile.FIFOTYPE))
    dest = tmp_path / "root"
    import_archive(docker_archive(tmp_path / "image.tar", hostile), str(dest))
    assert sorted(os.listdir(outside)) == ["secret"]
    assert not os.path.exists("/planted") and not os.path.exists("/abs")
    assert _read(dest / "abs") == "abs" and _read(dest / "planted") == "through /"
    assert _read(dest / outside.relative_to("/") / "planted") == "through .."
    assert not os.path.lexists(dest / "dev/sda")  # a jail gets its own /dev
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
    linked = Layer().add("hl", tarfile.LNKTYPE, link=str(outside / "secret"))
    with pytest.raises(SetupError, match="No such file"):
        import_archive(docker_archive(tmp_path / "link.tar", linked), str(tmp_path / "r2"))
    assert not os.path.exists(tmp_path / "r2")  # what a failed import made is gone
    assert os.stat(outside / "secret").st_nlink == 1


@pytest.mark.parametrize("member", ["../escape", "a/../../escape"])
def test_a_member_climbing_out_is_refused_and_nothing_is_left(tmp_path, member):
    image = docker_archive(tmp_path / "image.tar", Layer().add("ok", data=b"ok")
                           .add(member, data=b"x"))
    (tmp_path / "given").mkdir()
    with pytest.raises(SetupError, match="climbs out of the root: refused"):
        import_archive(image, str(tmp_path / "given"))
    assert os.listdir(tmp_path / "given") == []
    assert not (tmp_path / "escape").exists()


def test_bad_archives_and_destinations_are_one_line(tmp_path):
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "x").write_text("")
    with pytest.raises(SetupError, match="exists and is not an empty directory"):
        import_archive(docker_archive(tmp_path / "i.tar", Layer()), str(dest))
    with pytest.raises(SetupError, match="zstd"):
        import_archive(oci_archive(tmp_path / "z.tar", Layer(), compress="zstd"),
                       str(tmp_path / "z"))
    (tmp_path / "junk").write_bytes(b"not a tar at all")
    with pytest.raises(SetupError, match="junk"):
        import_archive(str(tmp_path / "junk"), str(tmp_path / "j"))
    assert not (tmp_path / "z").exists() and not (tmp_path / "j").exists()


@needs_jails[0]
@needs_jails[1]
def test_an_imported_tarball_runs_as_a_jail(tmp_path, busybox_root):
    tarball = tmp_path / "root.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(busybox_root, arcname=".")
    imported = hyjail("rootfs", "import", str(tarball), str(tmp_path / "root"))
    assert imported.returncode == 0, imported.stderr
    ran = hyjail("run", str(tmp_path / "root"), "imp", "127.0.0.1", "/bin/cat",
                 "/etc/hyjail-root")
    assert (ran.returncode, ran.stdout) == (0, "busybox\n"), ran.stderr
    assert not new_leaks()
