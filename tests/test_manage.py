"""R7 from the host: `hyjail ls` and `hyjail ps` map jails and their processes; and from
inside, pid 1 shows nothing of the host."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time

from conftest import (
    auto_kind,
    descendants,
    guard,
    hyjail,
    jail_ip,
    jail_record,
    needs,
    needs_jails,
    running,
    veth_args,
)

pytestmark = needs_jails


@needs("R4:kernel")  # pid 1 of the jail's own: hyjail-init
def test_ps_and_ls_map_every_jailed_process(busybox_root):
    ips = [jail_ip(), jail_ip()]
    with running("run", "--name", "alpha", *veth_args(ips[0]), busybox_root, "alpha", ips[0],
                 "/bin/sh", "-c", guard("alpha") + "sleep 100 & echo up; wait") as alpha, \
         running("run", "--name", "beta", *veth_args(ips[1]), busybox_root, "beta", ips[1],
                 "/bin/sh", "-c",
                 guard("beta") + "echo up; sleep 100") as beta:
        assert alpha.stdout.readline() == "up\n" and beta.stdout.readline() == "up\n"
        jids = {"alpha": jail_record(ips[0])["jid"], "beta": jail_record(ips[1])["jid"]}
        listed = json.loads(hyjail("ps", "--json").stdout)
        by_pid = {p["pid"]: p for p in listed}
        for name, supervisor in (("alpha", alpha), ("beta", beta)):
            jailed = [pid for pid, _start in descendants(supervisor.pid)]
            assert {by_pid[pid]["jid"] for pid in jailed} == {jids[name]}
        assert sorted(p["command"] for p in listed if p["jid"] == jids["alpha"]) == [
            "/bin/sh -c " + guard("alpha") + "sleep 100 & echo up; wait", "hyjail-init",
            "sleep 100"]
        only_beta = json.loads(hyjail("ps", "-j", "beta", "--json").stdout)
        assert {p["jid"] for p in only_beta} == {jids["beta"]}
        assert [p["jail_pid"] for p in only_beta][:1] == [1]
        jails = {j["name"]: j for j in json.loads(hyjail("ls", "--json").stdout)}
        assert jails["alpha"]["processes"] == 3 and jails["beta"]["processes"] == 2
        assert jails["alpha"]["addresses"] == [ips[0]] and jails["beta"]["backend"] == auto_kind()
        # every jail parameter, as jls names and types them (the one table)
        shown = jails["alpha"]["parameters"]
        assert (shown["name"], shown["ip4.addr"], shown["persist"], shown["securelevel"],
                shown["allow.set_hostname"]) == ("alpha", [ips[0]], False, -1, True)
        assert "alpha" in hyjail("ls").stdout
    missing = hyjail("ps", "-j", "alpha")
    assert (missing.returncode, missing.stderr) == (1, 'hyjail: jail "alpha" not found\n')


@needs("R4:kernel")  # pid 1 of the jail's own, in its /proc
def test_pid_1_shows_no_host_paths_inside(busybox_root):
    result = hyjail("run", busybox_root, "clean", "127.0.0.1", "/bin/sh", "-c",
                    "cat /proc/1/cmdline; echo; cat /proc/1/comm")
    # (/proc/1/exe is guarded by pid 1 being non-dumpable, which holds once root inside
    # loses CAP_SYS_PTRACE: the R5 issue tests it.)
    lines = result.stdout.splitlines()
    assert lines[0].strip("\0 ") == "hyjail-init" and lines[1] == "hyjail-init"
    assert "python" not in result.stdout


def test_stop_terms_then_kills_and_tears_down(busybox_root):
    ip = jail_ip()
    with running("run", "--name", "stubborn", *veth_args(ip), busybox_root, "st", ip,
                 "/bin/sh", "-c", 'trap "" TERM; sleep 100 & echo up; wait; wait') as jail:
        assert jail.stdout.readline() == "up\n"
        jail_record(ip)
        result = hyjail("stop", "--timeout", "0.5", "stubborn")
        assert result.returncode == 0, result.stderr
        assert jail.wait(timeout=5) == 128 + 9  # the shell ignored SIGTERM: SIGKILL after 0.5 s
        assert hyjail("ps", "-j", "stubborn").returncode == 1


def test_jail_r_stops_by_jid_and_all(busybox_root):
    jail_r = [sys.executable, "-c", "from hyjail.commands import jail_main; jail_main()", "-r"]
    ips = [jail_ip(), jail_ip(), jail_ip()]
    with contextlib.ExitStack() as stack:
        jails = [stack.enter_context(running("run", busybox_root, f"r{i}", ip, "/bin/sh", "-c",
                                             "echo up; sleep 100"))
                 for i, ip in enumerate(ips)]
        for j in jails:
            assert j.stdout.readline() == "up\n"
        first = jail_record(ips[0])["jid"]
        assert subprocess.run([*jail_r, str(first)], timeout=30).returncode == 0
        assert jails[0].wait(timeout=5) == 128 + 15
        assert jails[1].poll() is None
        assert subprocess.run([*jail_r, "*"], timeout=30).returncode == 0
        assert [j.wait(timeout=5) for j in jails[1:]] == [128 + 15, 128 + 15]
    missing = subprocess.run([*jail_r, "nosuch"], capture_output=True, text=True, timeout=30)
    assert (missing.returncode, missing.stderr) == (1, 'jail: "nosuch" not found\n')


def test_persistent_jail_outlives_its_command_until_stopped(busybox_root):
    ip = jail_ip()
    started = hyjail("run", "--persist", "--name", "keep", *veth_args(ip), busybox_root, "keep",
                     ip, "/bin/sh", "-c", "exit 3")
    try:
        assert started.returncode == 0, started.stderr
        jid = int(started.stdout)
        assert jail_record(ip)["jid"] == jid
        time.sleep(0.3)  # its command has exited by now; the jail must still be there
        listed = {j["name"]: j for j in json.loads(hyjail("ls", "--json").stdout)}
        assert listed["keep"]["params"]["persist"] == "1"
        assert listed["keep"]["processes"] == 1  # pid 1 (a trace jail's holder) alone
        entered = subprocess.run([sys.executable, "-m", "hyjail", "exec", "keep", "hostname"],
                                 capture_output=True, text=True, timeout=30)
        assert (entered.returncode, entered.stdout) == (0, "keep\n")
        assert hyjail("stop", "keep").returncode == 0
        assert hyjail("ps", "-j", "keep").returncode == 1
    finally:
        hyjail("stop", "--timeout", "1", "keep")


def test_persistent_jail_without_command_and_bad_input(busybox_root):
    started = hyjail("run", "--persist", busybox_root, "empty", "127.0.0.1")
    assert started.returncode == 0, started.stderr
    jid = started.stdout.strip()
    try:
        # pid 1 alone (in a trace jail, which has none, the process that holds it)
        init = "hyjail-hold" if auto_kind() == "trace" else "hyjail-init"
        assert hyjail("ps", "-j", jid).stdout.count(init) == 1
    finally:
        assert hyjail("stop", jid).returncode == 0
    bad = hyjail("run", "--persist", busybox_root, "bad_host", "127.0.0.1")
    assert (bad.returncode, bad.stderr) == (125, "hyjail: 'bad_host': not a valid host name "
                                                 "(letters, digits, '-' and '.')\n")
    assert hyjail("run", busybox_root, "nocommand", "127.0.0.1").returncode == 2


def test_ps_shows_no_control_characters_of_a_jail(busybox_root):
    """A jailed process's argv is the jail's to choose: `hyjail ps` must not pass escape
    sequences (a terminal title, a clipboard write) through to the host's terminal."""
    ip = jail_ip()
    script = "/tmp/x\x1b]0;owned\x07\x9b2J"
    with running("run", busybox_root, "esc", ip, "/bin/sh", "-c",
                 guard("esc") + f"printf 'sleep 100\\n' > '{script}'; /bin/sh '{script}' & "
                 "echo up; wait") as jail:
        assert jail.stdout.readline() == "up\n"
        jid = jail_record(ip)["jid"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shown = hyjail("ps", "-j", str(jid)).stdout
            if "owned" in shown:
                break
            time.sleep(0.05)
        assert "/tmp/x?]0;owned??2J" in shown
        assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in shown)
