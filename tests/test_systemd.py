"""Jails at boot: the units `hyjail systemd install` writes (checked by systemd-analyze
verify), and the commands they run, on a jail.conf and a jail_list of the test's own (never
the host's /etc): start and stop in dependency order, and one jail in the foreground that
tells systemd it is up (sd_notify) and is removed, hooks and all, on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess

import pytest

from hyjail import systemd

from conftest import HYJAIL, hyjail, needs_jails, new_leaks


def test_the_units_verify_and_run_this_hyjail(tmp_path):
    written = hyjail("systemd", "install", "--unit-dir", str(tmp_path / "units"),
                     "--defaults", str(tmp_path / "default-hyjail"))
    assert written.returncode == 0, written.stderr
    assert written.stdout.split() == [str(tmp_path / "units/hyjail.service"),
                                      str(tmp_path / "units/hyjail@.service"),
                                      str(tmp_path / "default-hyjail")]
    template = (tmp_path / "units/hyjail@.service").read_text()
    start = next(line for line in template.splitlines() if line.startswith("ExecStart="))
    command, _, rest = start.removeprefix("ExecStart=").partition(" ")
    # this hyjail (a test box reaches its venv at two paths)
    assert os.path.samefile(command, systemd.executable()) and rest == "systemd run %i"
    assert "Type=notify" in template and "Delegate=yes" in template
    assert "Environment=HYJAIL_CGROUPS=delegated" in template  # its jail's groups: the unit's
    assert "Restart=on-failure" in template
    assert systemd.jail_list(str(tmp_path / "default-hyjail")) == []
    (tmp_path / "default-hyjail").write_text("# mine\njail_list=\"web  db\"\n")
    hyjail("systemd", "install", "--unit-dir", str(tmp_path / "units"),
           "--defaults", str(tmp_path / "default-hyjail"))  # never overwrites the list
    assert systemd.jail_list(str(tmp_path / "default-hyjail")) == ["web", "db"]
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze on this host")
    verified = subprocess.run(["systemd-analyze", "verify",
                               str(tmp_path / "units/hyjail.service"),
                               str(tmp_path / "units/hyjail@.service")],
                              capture_output=True, text=True)
    assert (verified.returncode, verified.stderr) == (0, ""), verified.stderr


CONF = """\
path = "{root}";
persist;
exec.poststop = 'echo $JNAME gone >> {trail}';
db {{ host.hostname = db; }}
web {{ host.hostname = web; depend = db; }}
other {{ host.hostname = other; }}
"""


def _running(name: str) -> bool:
    return hyjail("exec", name, "/bin/true").returncode == 0


@needs_jails[0]
@needs_jails[1]
def test_start_and_stop_follow_jail_list_and_dependencies(tmp_path, busybox_root):
    conf, defaults, trail = tmp_path / "jail.conf", tmp_path / "hyjail", tmp_path / "trail"
    conf.write_text(CONF.format(root=busybox_root, trail=trail))
    defaults.write_text('jail_list="web"\n')
    try:
        started = hyjail("systemd", "start", "-f", str(conf), "--defaults", str(defaults))
        assert started.returncode == 0, started.stderr
        assert started.stdout == "db: created\nweb: created\n"  # its dependency first
        assert _running("web") and _running("db") and not _running("other")
        defaults.write_text('jail_list=""\n')  # every configured jail: those that run
        stopped = hyjail("systemd", "stop", "-f", str(conf), "--defaults", str(defaults))
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout == "web: removed\ndb: removed\n"  # dependents first
        assert trail.read_text() == "web gone\ndb gone\n"
    finally:
        for name in ("web", "db", "other"):
            hyjail("stop", name)
    assert not new_leaks()


@needs_jails[0]
@needs_jails[1]
def test_run_holds_one_jail_in_the_foreground_for_systemd(tmp_path, busybox_root):
    conf, trail = tmp_path / "jail.conf", tmp_path / "trail"
    conf.write_text(CONF.format(root=busybox_root, trail=trail))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(60)
    unit = subprocess.Popen([*HYJAIL, "systemd", "run", "-f", str(conf), "other"],
                            env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = listener.recv(4096).decode()
        assert ready.startswith("READY=1\n") and f"MAINPID={unit.pid}" in ready, ready
        assert _running("other")
        unit.send_signal(signal.SIGTERM)  # systemctl stop hyjail@other
        out, err = unit.communicate(timeout=60)
        assert unit.returncode == 0, err
        assert out == "other: created\nother: removed\n"
        assert listener.recv(4096) == b"STOPPING=1"
        assert not _running("other") and trail.read_text() == "other gone\n"
        # A jail that ends by itself fails the unit, which Restart=on-failure restarts.
        again = subprocess.Popen([*HYJAIL, "systemd", "run", "-f", str(conf), "other"],
                                 env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert listener.recv(4096).startswith(b"READY=1\n")
        assert hyjail("stop", "other").returncode == 0
        out, err = again.communicate(timeout=60)
        assert (again.returncode, err) == (1, "hyjail: jail other ended by itself\n")
    finally:
        if unit.poll() is None:
            unit.kill()
            unit.wait()
        listener.close()
        hyjail("stop", "other")
    assert not new_leaks()
