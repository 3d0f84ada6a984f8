"""A real service in a jail, end to end, as a sysadmin runs one: a Debian root built with
`hyjail rootfs build debian --include nginx-light` (no service started on the host while it
builds), started from a jail.conf whose mount.fstab binds a host docroot read-only, serving
the host at the jail's address, its output read with `hyjail logs`, stopped, nothing left.

The build downloads from Debian's archive (as script/bootstrap's apt-get does); where the
archive cannot be reached the module is skipped, saying so. The jail's own traffic stays on
its veth, in 10.77.0.0/16 (SPEC section 4)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from conftest import connect_to_jail, fresh_ip, hyjail, needs, needs_jails, new_leaks

pytestmark = [*needs_jails, needs("R3:kernel")]
BIN = os.path.dirname(sys.executable)
JAIL = os.path.join(BIN, "jail")
ARCHIVE = "deb.debian.org"


def _archive_unreachable() -> str | None:
    try:
        with socket.create_connection((ARCHIVE, 80), timeout=10):
            return None
    except OSError as e:
        return f"Debian's package archive ({ARCHIVE}) cannot be reached: {e}"


def _running_nginx() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == "nginx":
                        found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory) -> str:
    if (why := _archive_unreachable()) is not None:
        pytest.skip(why)
    if _running_nginx():
        pytest.skip("an nginx already runs on this host: the build's guard could not be told")
    dest = str(tmp_path_factory.mktemp("debian") / "root")
    built = hyjail("rootfs", "build", "debian", "--include", "nginx-light", dest, timeout=900)
    assert built.returncode == 0, built.stderr[-2000:]
    assert built.stdout == f"{dest}\n"
    assert "success" in built.stderr  # mmdebstrap's progress, shown
    return dest


def test_the_build_starts_no_service_and_leaves_no_guard(debian_root):
    assert not os.path.lexists(os.path.join(debian_root, "usr/sbin/policy-rc.d"))
    assert os.access(os.path.join(debian_root, "usr/sbin/nginx"), os.X_OK)
    assert _running_nginx() == []  # nginx-light's postinst did not start it on the host
    with open(os.path.join(debian_root, "etc/hyjail-root")) as f:
        assert f.read() == "debian bookworm\n"
    refused = hyjail("rootfs", "build", "debian", debian_root)
    assert (refused.returncode, refused.stderr) == (
        125, f"hyjail: {debian_root}: exists and is not an empty directory\n")


def test_nginx_serves_a_read_only_host_docroot_from_a_jail_conf(debian_root, tmp_path):
    docroot = tmp_path / "docroot"
    docroot.mkdir()
    (docroot / "index.html").write_text("served from the host's docroot\n")
    (tmp_path / "log").mkdir()
    ip = fresh_ip()
    fstab = tmp_path / "web.fstab"
    fstab.write_text(f"{docroot} {debian_root}/var/www/html nullfs ro 0 0\n")
    conf = tmp_path / "jail.conf"
    conf.write_text(f"""web {{
  path = "{debian_root}";
  host.hostname = "web.example.org";
  ip4.addr = {ip};
  mount.fstab = "{fstab}";
  mount.devfs;
  exec.start = "/usr/sbin/nginx -g 'error_log stderr notice;'";
  exec.stop = "/usr/sbin/nginx -s quit";
  exec.consolelog = "{tmp_path}/log/web.console";
}}
""")
    made = subprocess.run([JAIL, "-f", str(conf), "-c", "web"], capture_output=True, text=True,
                          timeout=120)
    try:
        assert (made.returncode, made.stdout) == (0, "web: created\n"), made.stderr
        with connect_to_jail(ip, 80) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200") and \
            reply.endswith(b"served from the host's docroot\n"), reply[:300]
        write = hyjail("exec", "web", "/bin/sh", "-c", "echo x > /var/www/html/index.html")
        assert write.returncode != 0 and "Read-only file system" in write.stderr
        logged = hyjail("logs", "web")
        assert logged.returncode == 0 and "start worker process" in logged.stdout, logged
        with open("/proc/self/mountinfo") as f:
            assert str(docroot) not in f.read()  # bound in the jail's namespace only
    finally:
        removed = subprocess.run([JAIL, "-f", str(conf), "-r", "web"], capture_output=True,
                                 text=True, timeout=120)
    assert (removed.returncode, removed.stdout) == (0, "web: removed\n"), removed.stderr
    assert (docroot / "index.html").read_text() == "served from the host's docroot\n"
    assert _running_nginx() == []
    assert not new_leaks()
