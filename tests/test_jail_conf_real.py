"""Five real jail.conf files, in the styles FreeBSD administrators write them, start and stop
unchanged but for their paths: jail.conf(5)'s EXAMPLES, the Handbook's (globals and an
.include of jail.conf.d), Bastille's per-jail template (a thin jail: its release
nullfs-mounted by mount.fstab), a Bastille import with `$variables`, and a "blueprint" whose
hooks mount the base read-only on the host.

Each jail is an rc-style one: `exec.start = "/bin/sh /etc/rc"` starts a web server and
returns, and the jail lives while the server does (FreeBSD's lifetime, no persist); the test
fetches the jail's page from its address, then `jail -r` runs `/etc/rc.shutdown` inside and
removes it.

Adapted, each with why: paths (the test's own directories), addresses (10.77.0.0/16: test
network safety, SPEC section 4), `interface = em0`/`bastille0` lines dropped (this host has
no such interface, and the jails here sit on their veths; with the line, the refusal is one
line, tested here; tests/test_lan.py puts jails on a LAN), and the blueprint's
`mount -t nullfs -o ro` hooks written as Linux's `mount --bind -o ro` (mount_nullfs is
FreeBSD's bind mount).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import connect_to_jail, fresh_ip, needs, needs_root, new_leaks

BIN = os.path.dirname(sys.executable)
JAIL, JLS = os.path.join(BIN, "jail"), os.path.join(BIN, "jls")

pytestmark = [needs_root, needs("backend:auto"), needs("R3:kernel")]

RC = """#!/bin/sh
# The jail's /etc/rc: start its services and return, as FreeBSD's does.
mkdir -p /www
echo "served by $(hostname)" > /www/index.html
/usr/sbin/httpd -p 8080 -h /www
echo "rc: httpd started"
"""
RC_SHUTDOWN = """#!/bin/sh
/usr/bin/killall httpd
echo "rc.shutdown: httpd stopped ($*)"
"""


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def check(*argv: str) -> subprocess.CompletedProcess:
    result = run(*argv)
    assert result.returncode == 0, (argv, result.stdout, result.stderr)
    return result


def rc_root(busybox_root: str, where: str) -> str:
    """A copy of the busybox root with FreeBSD-style /etc/rc and /etc/rc.shutdown."""
    os.makedirs(os.path.dirname(where), exist_ok=True)
    # cp -a: the root's device nodes stay nodes (a copy that read them would read /dev/full)
    subprocess.run(["cp", "-a", busybox_root, where], check=True)
    for name, text in (("rc", RC), ("rc.shutdown", RC_SHUTDOWN)):
        with open(os.path.join(where, "etc", name), "w") as f:
            f.write(text)
    return where


def page(ip: str) -> str:
    with connect_to_jail(ip, 8080) as sock:
        sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data.decode(errors="replace")


def running(name: str) -> bool:
    return run(JLS, "-j", name).returncode == 0


def remove_all(conf: str, *names: str) -> None:
    for name in names:
        if running(name):
            run(JAIL, "-f", conf, "-r", name)


def serves(name: str, ip: str, hostname: str) -> None:
    """The jail is up after its rc returned (no persist: its httpd keeps it) and answers at
    its own address with a page its rc wrote under its own hostname."""
    assert running(name)
    assert f"served by {hostname}" in page(ip)


EXAMPLES = """\
# Typical static defaults:
# Use the rc scripts to start and stop jails.  Mount jail's /dev.
exec.start = "/bin/sh /etc/rc";
exec.stop = "/bin/sh /etc/rc.shutdown jail";
exec.clean;
mount.devfs;

# Dynamic wildcard parameter:
# Base the path off the jail name.
path = "{base}/$name";

# A typical jail.
foo {{
	host.hostname = "foo.com";
	ip4.addr = {ip1}, {ip2}, {ip3};
}}

# This jail overrides the defaults defined above.
bar {{
	exec.start = '';
	exec.stop = '';
	path = /;
	mount.nodevfs;
	persist;	// Required because there are no processes
}}
"""


def test_jail_conf_5_examples(busybox_root, tmp_path):
    """jail.conf(5)'s EXAMPLES: `jail -f FILE -c` creates both (foo an rc jail with three
    addresses, bar a processless persistent jail of the host's root); -r removes them."""
    base = tmp_path / "var-jail"
    rc_root(busybox_root, str(base / "foo"))
    ips = [fresh_ip() for _ in range(3)]
    conf = tmp_path / "jail.conf"
    conf.write_text(EXAMPLES.format(base=base, ip1=ips[0], ip2=ips[1], ip3=ips[2]))
    try:
        made = check(JAIL, "-f", str(conf), "-c")
        assert "foo: created" in made.stdout and "bar: created" in made.stdout, made.stdout
        assert "rc: httpd started" in made.stdout
        serves("foo", ips[2], "foo.com")
        assert sorted(check(JLS, "-j", "foo", "ip4.addr").stdout.strip().split(",")) == \
            sorted(ips)
        assert check(JLS, "-j", "bar", "path").stdout.strip() == "/"
        removed = check(JAIL, "-f", str(conf), "-r", "foo", "bar")
        assert "rc.shutdown: httpd stopped (jail)" in removed.stdout, removed.stdout
        assert "foo: removed" in removed.stdout and "bar: removed" in removed.stdout
    finally:
        remove_all(str(conf), "foo", "bar")
    assert not new_leaks()


HANDBOOK = """\
# STARTUP/LOGGING
exec.start = "/bin/sh /etc/rc";
exec.stop = "/bin/sh /etc/rc.shutdown";
exec.consolelog = "{logs}/jail_console_${{name}}.log";

# PERMISSIONS
allow.raw_sockets;
exec.clean;
mount.devfs;

# HOSTNAME/PATH
host.hostname = "${{name}}";
path = "{containers}/${{name}}";

# NETWORK
.include "{conf_d}/*.conf";
"""
HANDBOOK_CLASSIC = """\
classic {{
  ip4.addr = {ip};
  {interface}
}}
"""


def test_handbook_style_with_globals_and_includes(busybox_root, tmp_path):
    """The Handbook's layout: defaults in jail.conf, each jail in jail.conf.d; the console
    log gets the rc's output. With `interface = em0` (dropped), one line of refusal: the
    Handbook's allow.raw_sockets on a jail on the LAN, where nothing would check a raw
    packet's source address."""
    containers, logs, conf_d = (tmp_path / d for d in ("containers", "log", "jail.conf.d"))
    logs.mkdir()
    conf_d.mkdir()
    rc_root(busybox_root, str(containers / "classic"))
    ip = fresh_ip()
    conf = tmp_path / "jail.conf"
    conf.write_text(HANDBOOK.format(logs=logs, containers=containers, conf_d=conf_d))
    classic = conf_d / "classic.conf"
    classic.write_text(HANDBOOK_CLASSIC.format(ip=ip, interface="interface = em0;"))
    refused = run(JAIL, "-f", str(conf), "-c", "classic")
    assert refused.returncode == 1 and refused.stderr.startswith(
        "jail: allow.raw_sockets with interface=em0"), refused.stderr
    assert refused.stderr.count("\n") == 1 and not running("classic")
    classic.write_text(HANDBOOK_CLASSIC.format(ip=ip, interface=""))
    try:
        assert check(JAIL, "-f", str(conf), "-c", "classic").stdout == "classic: created\n"
        serves("classic", ip, "classic")
        assert "rc: httpd started" in (logs / "jail_console_classic.log").read_text()
        assert check(JAIL, "-f", str(conf), "-r", "classic").stdout == "classic: removed\n"
        assert "rc.shutdown: httpd stopped" in (logs / "jail_console_classic.log").read_text()
    finally:
        remove_all(str(conf), "classic")
    assert not new_leaks()


IMPORTED = """\
$bastille_jailsdir = "{jails}";
$release = "13.2-RELEASE";
$jail_ip = "{ip}";

imported {{
  devfs_ruleset = 4;
  enforce_statfs = 2;
  exec.clean;
  exec.consolelog = "{logs}/${{name}}_console.log";
  exec.start = '/bin/sh /etc/rc';
  exec.stop = '/bin/sh /etc/rc.shutdown';
  host.hostname = "${{name}}";
  mount.devfs;
  path = "${{bastille_jailsdir}}/${{name}}/root";
  securelevel = 2;
  osrelease = "$release";
  ip4.addr = "$jail_ip";
  ip6 = disable;
}}
"""


@needs("R2:ptrace@trace")
def test_bastille_import_with_variables(busybox_root, tmp_path):
    """An imported jail whose file defines `$variables` and uses them in strings; its
    osrelease is what uname says inside (the tracer answers it: a hybrid jail)."""
    jails, logs = tmp_path / "jails", tmp_path / "log"
    logs.mkdir()
    rc_root(busybox_root, str(jails / "imported" / "root"))
    ip = fresh_ip()
    conf = tmp_path / "jail.conf"
    conf.write_text(IMPORTED.format(jails=jails, logs=logs, ip=ip))
    try:
        assert check(JAIL, "-f", str(conf), "-c", "imported").stdout == "imported: created\n"
        serves("imported", ip, "imported")
        assert check(os.path.join(BIN, "jexec"), "imported", "uname", "-r").stdout == \
            "13.2-RELEASE\n"
        assert check(JLS, "-j", "imported", "osrelease").stdout == "13.2-RELEASE\n"
        assert check(JAIL, "-f", str(conf), "-r", "imported").stdout == "imported: removed\n"
    finally:
        remove_all(str(conf), "imported")
    assert not new_leaks()


BLUEPRINT = """\
# HOSTNAME/PATH
host.hostname = "${{name}}.example.com";
path = "{jails}/${{name}}";

# STARTUP/LOGGING
exec.start     = "/bin/sh /etc/rc";
exec.stop      = "/bin/sh /etc/rc.shutdown";
exec.consolelog = "{logs}/jail_console_${{name}}.log";

# PERMISSIONS
exec.clean;
mount.devfs;
mount.fdescfs;
mount.procfs;
enforce_statfs = 1;

# The base, read-only from the template, mounted by the hooks
exec.prestart  = "mount --bind -o ro {template}/usr/sbin {jails}/${{name}}/usr/sbin";
exec.prestart += "logger -t jail ${{name}} pre-started";
exec.poststop  = "umount {jails}/${{name}}/usr/sbin";

blueprint {{
  ip4.addr = {ip};
}}
"""


def test_blueprint_with_read_only_base_mounted_by_hooks(busybox_root, tmp_path):
    """A blueprint jail: exec.prestart bind-mounts the template's usr/sbin (httpd) read-only
    over the jail's (empty) one on the host, exec.poststop unmounts it; the jail sees the
    mount (its root is bound with everything under it) and cannot write it."""
    jails, logs, template = tmp_path / "jails", tmp_path / "log", tmp_path / "template"
    logs.mkdir()
    root = rc_root(busybox_root, str(jails / "blueprint"))
    shutil.copytree(os.path.join(root, "usr", "sbin"), template / "usr" / "sbin", symlinks=True)
    shutil.rmtree(os.path.join(root, "usr", "sbin"))
    os.mkdir(os.path.join(root, "usr", "sbin"))  # the mount point, empty until prestart
    ip = fresh_ip()
    conf = tmp_path / "jail.conf"
    conf.write_text(BLUEPRINT.format(jails=jails, logs=logs, template=template, ip=ip))
    try:
        assert check(JAIL, "-f", str(conf), "-c", "blueprint").stdout == \
            "blueprint: created\n"
        serves("blueprint", ip, "blueprint.example.com")
        write = run(os.path.join(BIN, "jexec"), "blueprint", "touch", "/usr/sbin/x")
        assert write.returncode != 0 and "Read-only" in write.stderr, write.stderr
        assert check(JAIL, "-f", str(conf), "-r", "blueprint").stdout == \
            "blueprint: removed\n"
        assert os.listdir(os.path.join(root, "usr", "sbin")) == []  # poststop unmounted
    finally:
        remove_all(str(conf), "blueprint")
        subprocess.run(["umount", os.path.join(root, "usr", "sbin")], capture_output=True)
    assert not new_leaks()


THIN = """\
{name} {{
  devfs_ruleset = 4;
  enforce_statfs = 2;
  exec.clean;
  exec.consolelog = {logs}/{name}_console.log;
  exec.start = '/bin/sh /etc/rc';
  exec.stop = '/bin/sh /etc/rc.shutdown';
  host.hostname = {name};
  mount.devfs;
  mount.fstab = {jails}/{name}/fstab;
  path = {jails}/{name}/root;
  securelevel = 2;
  {interface}
  ip4.addr = {ip};
  ip6 = disable;
}}
"""
THIN_FSTAB = "{releases}/13.2-RELEASE {jails}/{name}/root/.bastille nullfs ro 0 0\n"


def test_bastille_thin_jail_template(busybox_root, tmp_path):
    """Bastille's thin jail: its root holds only etc, var, tmp and the like of its own, and
    symlinks (bin -> /.bastille/bin, ...) into the release, which mount.fstab nullfs-mounts
    read-only at /.bastille. The release is shared, never written; nothing is mounted on the
    host."""
    releases, jails, logs = (tmp_path / d for d in ("releases", "jails", "log"))
    logs.mkdir()
    releases.mkdir()
    release = releases / "13.2-RELEASE"
    subprocess.run(["cp", "-a", busybox_root, str(release)], check=True)
    name = "thin"
    root = jails / name / "root"
    root.mkdir(parents=True)
    for own in (".bastille", "dev", "proc", "tmp", "var", "root"):
        (root / own).mkdir()
    shutil.copytree(release / "etc", root / "etc", symlinks=True)
    for name_ in ("rc", "rc.shutdown"):
        (root / "etc" / name_).write_text(RC if name_ == "rc" else RC_SHUTDOWN)
    for linked in ("bin", "sbin", "usr"):
        (root / linked).symlink_to(f"/.bastille/{linked}")
    (jails / name / "fstab").write_text(THIN_FSTAB.format(releases=releases, jails=jails,
                                                          name=name))
    ip = fresh_ip()
    conf = tmp_path / "jail.conf"
    for interface in ("interface = bastille0;", ""):
        conf.write_text(THIN.format(name=name, logs=logs, jails=jails, ip=ip,
                                    interface=interface))
        if interface:  # FreeBSD's interface: one line of refusal, nothing made
            refused = run(JAIL, "-f", str(conf), "-c", name)
            assert refused.returncode == 1 and refused.stderr.startswith("jail: interface")
            assert not running(name)
    try:
        assert check(JAIL, "-f", str(conf), "-c", name).stdout == f"{name}: created\n"
        serves(name, ip, name)
        write = run(os.path.join(BIN, "jexec"), name, "touch", "/.bastille/x")
        assert write.returncode != 0 and "Read-only" in write.stderr, write.stderr
        with open("/proc/self/mountinfo") as f:
            assert str(root) not in f.read()  # the release is mounted in the jail's only
        assert check(JAIL, "-f", str(conf), "-r", name).stdout == f"{name}: removed\n"
        assert "rc.shutdown: httpd stopped" in (logs / f"{name}_console.log").read_text()
    finally:
        remove_all(str(conf), name)
    assert not os.path.exists(release / "x") and os.listdir(root / ".bastille") == []
    assert not new_leaks()
