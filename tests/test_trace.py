"""The trace backend: the same rules held by a ptrace supervisor, and the plan that picks it.

Behaviours shared with the ns backend run once per backend. On this host the kernel has
every namespace, so `--backend trace` takes ptrace's providers for R1, R2, R4-R7 and the
kernel's network namespace for R3 (whose ptrace provider is not built yet); a run under a
seccomp filter that denies namespaces shows what `auto` does on a host without them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import (
    HERE,
    HYJAIL,
    SLOW,
    abis,
    backends,
    fresh_loopback_ip,
    guard,
    hyjail,
    needs,
    needs_jails,
    require_denied,
    running,
    sigkill_leaves_no_jailed_process,
)
from test_dilution import ALLOWED, DENIED, ONLY_ABI

pytestmark = needs_jails
# Tests of the trace backend alone; those of ptrace's R3 (the supervisor performs the socket
# calls) also need the trace plan to take it, where a network namespace could hold it instead.
trace = needs("backend:trace")
trace_r3 = needs("backend:trace", "R3:ptrace@trace")

BACKENDS = backends("ns", "trace")
# Where a chroot answers otherwise than the ns backend's jail, and why: there is no /proc or
# /sys to write (absent, not read-only), and root may not chroot again (a second chroot is
# how a chroot is escaped), so CAP_SYS_CHROOT is never kept.
TRACE = {"write_proc_sys": "ENOENT", "write_sys": "ENOENT", "chroot": "EPERM"}


@pytest.fixture
def host_process():
    """A process of the host's (same uid as the jail's root) that the jail must not reach."""
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    assert process.poll() is None, "the host's process was reached from the jail"
    process.kill()
    process.wait()


def probe_ops(root: str, backend: str, abi: str, *ops: str, options=()) -> dict[str, str]:
    result = hyjail("run", "--backend", backend, *options, root, "tj", "127.0.0.1",
                    "/bin/hjprobe", "tj", abi, *ops)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_of_a_host_pid_says_no_such_process(busybox_root, backend, host_process):
    result = hyjail("run", "--backend", backend, busybox_root, "tj", "127.0.0.1", "/bin/sh",
                    "-c", guard("tj") + f"kill {host_process}")
    assert result.returncode == 1
    assert "No such process" in result.stderr


@needs("abi.i386")
@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_of_a_host_pid_from_a_32_bit_root(i386_root, backend, host_process):
    """The seed's emulation example: 32-bit binaries get the same protection."""
    with open(os.path.join(i386_root, "bin", "busybox"), "rb") as f:
        assert f.read(5) == b"\x7fELF\x01"  # ELFCLASS32: an i386 program
    result = hyjail("run", "--backend", backend, i386_root, "tj32", "127.0.0.1", "/bin/sh",
                    "-c", guard("tj32") + f"kill {host_process}; echo $?; hostname")
    assert (result.returncode, result.stdout) == (0, "1\ntj32\n")
    assert "No such process" in result.stderr


@pytest.mark.parametrize("abi", abis("64", "int80"))
@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_of_a_host_pid_is_esrch_for_every_abi(probe_root, backend, abi, host_process):
    assert probe_ops(probe_root, backend, abi, f"kill:{host_process}") == {
        f"kill:{host_process}": "ESRCH"}


PID_CALLS = ("capget", "getpgid", "getaffinity", "getpriority", "prlimit")


@pytest.mark.parametrize("abi", abis("64", "int80"))
@pytest.mark.parametrize("backend", BACKENDS)
def test_calls_that_name_a_host_pid_find_no_such_process(probe_root, backend, abi,
                                                         host_process):
    ops = [f"pid:{call}:{pid}" for pid in (host_process, 0) for call in PID_CALLS]
    result = probe_ops(probe_root, backend, abi, *ops)
    assert result == {op: ("ESRCH" if op.endswith(f":{host_process}") else "ok")
                      for op in ops}


@pytest.mark.parametrize("abi", abis("64", "int80"))
@pytest.mark.parametrize("backend", BACKENDS)
def test_hostname_is_the_jails_and_changes_only_there(probe_root, backend, abi):
    host = socket.gethostname()
    result = probe_ops(probe_root, backend, abi, "nodename", "sethostname", "nodename")
    assert result == {"nodename": "hjprobe", "sethostname": "ok"}  # the second one wins
    assert socket.gethostname() == host
    off = probe_ops(probe_root, backend, abi, "sethostname", "nodename",
                    options=("--allow", "noset_hostname"))
    assert off == {"sethostname": "EPERM", "nodename": "tj"}


@trace
def test_nothing_outside_the_root_is_reachable_under_trace(busybox_root):
    secret = os.path.join(os.path.dirname(busybox_root), "secret-of-trace")
    with open(secret, "w") as f:
        f.write("host secret\n")
    script = guard("inside") + f"""
        cd / && cat ../secret-of-trace ../../secret-of-trace /../secret-of-trace {secret} \
            /proc/self/root/../secret-of-trace /proc/1/root/../secret-of-trace 2>/dev/null \
            && echo LEAKED
        mkdir -p /tmp/deeper && cd /tmp/deeper && chroot . /bin/true 2>/dev/null; echo "chroot=$?"
        cd / && echo "root=$(ls / | tr '\n' ' ')"
    """
    try:
        result = hyjail("run", "--backend", "trace", busybox_root, "inside", "127.0.0.1",
                        "/bin/sh", "-c", script)
    finally:
        os.unlink(secret)
    assert result.returncode == 0, result.stderr
    assert "LEAKED" not in result.stdout and "host secret" not in result.stdout
    # No second chroot, the classic way out of a first: root has no CAP_SYS_CHROOT.
    assert "chroot=1" in result.stdout.splitlines()
    assert f"root={' '.join(sorted(os.listdir(busybox_root)))} " in result.stdout.splitlines()


@trace
@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_root_in_a_trace_jail_cannot_do_what_r5_forbids(probe_root, abi):
    expected = {**DENIED, **ALLOWED, **ONLY_ABI[abi], **TRACE}
    if abi == "int80":  # the supervisor judges socketcall and makes it the direct call:
        expected["socketcall_raw"] = "EPERM"  # a raw socket then meets the missing net_raw
    ops = sorted(expected, key=lambda op: op == "sethostname")
    assert probe_ops(probe_root, "trace", abi, *ops) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_minus_one_reaches_only_the_jail(busybox_root, backend, host_process):
    script = guard("tj") + "sleep 30 & sleep 30 & sleep 0.2; kill -9 -1; wait; echo survived"
    result = hyjail("run", "--backend", backend, busybox_root, "tj", "127.0.0.1", "/bin/sh",
                    "-c", script)
    assert (result.returncode, result.stdout) == (0, "survived\n"), result.stderr


@trace
@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_threads_and_a_fork_heavy_pipeline_work_under_trace(probe_root, abi):
    assert probe_ops(probe_root, "trace", abi, "threads") == {"threads": "ok"}
    script = ("i=0; while [ $i -lt 200 ]; do echo $i | cat | tr 0-9 a-j >/dev/null; "
              "i=$((i+1)); done; echo $i")
    result = hyjail("run", "--backend", "trace", probe_root, "tj", "127.0.0.1", "/bin/sh",
                    "-c", script)
    assert (result.returncode, result.stdout) == (0, "200\n"), result.stderr


@trace_r3
def test_busybox_httpd_serves_under_trace(busybox_root):
    ip = fresh_loopback_ip()
    script = ("mkdir -p /tmp/www && echo traced > /tmp/www/index.html && "
              "exec httpd -f -p 8080 -h /tmp/www")
    with running("run", "--backend", "trace", busybox_root, "web", ip, "/bin/sh", "-c",
                 script):
        for _ in range(3):
            with connect_retrying(ip, 8080) as client:
                client.sendall(b"GET / HTTP/1.0\r\n\r\n")
                reply = b""
                while chunk := client.recv(4096):
                    reply += chunk
            assert reply.startswith(b"HTTP/1.") and reply.endswith(b"traced\n")


def connect_retrying(ip: str, port: int, timeout: float = 20) -> socket.socket:
    """A connection to a jail's loopback address (the trace backend's), once it listens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((ip, port), timeout=5)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@trace
def test_exit_codes_under_trace(busybox_root):
    def run(*argv: str) -> subprocess.CompletedProcess:
        return hyjail("run", "--backend", "trace", busybox_root, "tj", "127.0.0.1", *argv)
    assert run("/bin/sh", "-c", "exit 7").returncode == 7
    missing = run("/nonexistent")
    assert (missing.returncode, missing.stderr) == (
        127, "hyjail: /nonexistent: command not found in the jail\n")
    assert run("/bin/sh", "-c", "kill -TERM $$").returncode == 143


@trace
def test_killing_the_supervisor_kills_every_tracee(busybox_root):
    with running("run", "--backend", "trace", busybox_root, "tj", "127.0.0.1", "/bin/sh",
                 "-c", "sleep 60 & sleep 60 & echo up; wait") as jail:
        assert jail.stdout.readline() == "up\n"
        sigkill_leaves_no_jailed_process(jail)


@trace
def test_ps_maps_traced_processes_to_their_jail(busybox_root):
    with running("run", "--backend", "trace", "--name", "traced", busybox_root, "tj",
                 "127.0.0.1", "/bin/sh", "-c", "sleep 60 & echo up; wait") as jail:
        assert jail.stdout.readline() == "up\n"
        listed = json.loads(hyjail("ps", "--json").stdout)
        commands = sorted(p["command"] for p in listed)
        assert commands == ["/bin/sh -c sleep 60 & echo up; wait", "sleep 60"]
        jls = hyjail("ls", "--json")
        assert json.loads(jls.stdout)[0]["backend"] == "trace"


@trace
@pytest.mark.parametrize(("options", "path", "message"), [
    (("--allow", "mount"), None, "allow.mount: needs a user namespace of the jail's"),
    ((), "/", "R4 (processes): //proc is a mounted proc that shows the host's processes"),
])
def test_what_trace_cannot_hold_is_refused(busybox_root, options, path, message):
    result = hyjail("run", "--backend", "trace", *options, path or busybox_root, "tj",
                    "127.0.0.1", "/bin/true")
    assert result.returncode == 125
    assert result.stderr.startswith(f"hyjail: {message}") and result.stderr.count("\n") == 1


@trace_r3
def test_jexec_enters_a_trace_jail_under_all_its_rules(probe_root, host_process):
    ip = fresh_loopback_ip()
    with running("run", "--backend", "trace", "--name", "entered", probe_root, "tj", ip,
                 "/bin/sh", "-c", "echo up; sleep 600") as jail:
        assert jail.stdout.readline() == "up\n"
        result = hyjail("exec", "entered", "/bin/hjprobe", "tj", "int80", "nodename",
                        f"kill:{host_process}", "mount", "bind:0.0.0.0", "unshare_user")
        assert (result.returncode, result.stdout.split()) == (0, [
            "nodename=tj", f"kill:{host_process}=ESRCH", "mount=EPERM", f"bind:0.0.0.0={ip}",
            "unshare_user=EPERM"]), result.stderr
        as_nobody = hyjail("exec", "-u", "nobody", "entered", "/bin/sh", "-c", "id -u; exit 9")
        assert (as_nobody.returncode, as_nobody.stdout) == (9, "65534\n")
        # (in before the jail ends: a jexec that came after would find no jail)
        lingering = subprocess.Popen([*HYJAIL, "exec", "entered", "/bin/sh", "-c",
                                      "echo in; exec sleep 600"], stdout=subprocess.PIPE,
                                     text=True)
        try:
            assert lingering.stdout.readline() == "in\n"
            jail.terminate()  # the jail ends: so does what was let into it
            assert lingering.wait(timeout=20) == 137
        finally:
            lingering.kill()
            lingering.wait()
            lingering.stdout.close()


@trace
def test_a_persistent_trace_jail_outlives_its_command_until_stopped(busybox_root):
    ip = fresh_loopback_ip()
    started = hyjail("run", "--backend", "trace", "--persist", "--name", "kept", busybox_root,
                     "tj", ip, "/bin/sh", "-c", "exit 3")
    assert started.returncode == 0, started.stderr
    try:
        time.sleep(0.5)  # the command is long gone; the jail is not
        listed = json.loads(hyjail("ls", "--json").stdout)
        assert [(j["name"], j["backend"]) for j in listed] == [("kept", "trace")]
        assert [p["command"] for p in json.loads(hyjail("ps", "--json").stdout)] == [
            "hyjail-hold"]
        entered = hyjail("exec", "kept", "/bin/sh", "-c", "hostname; kill -0 1; echo $?")
        assert entered.stdout == "tj\n1\n"
    finally:
        stopped = hyjail("stop", "kept")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(hyjail("ls", "--json").stdout) == []


@trace
def test_a_persistent_trace_jail_stops_after_many_jexecs(busybox_root):
    """Issue 13's unstoppable jail: a task whose exit the supervisor took before its parent's
    fork event stayed in the jail's set for ever. 36 jexecs of short-lived forks, some run to
    the end, some killed mid-way (SIGKILL to jexec), some still running at the stop."""
    ip = fresh_loopback_ip()
    started = hyjail("run", "--backend", "trace", "--persist", "--name", "busy", busybox_root,
                     "tj", ip)
    assert started.returncode == 0, started.stderr
    forks = guard("tj") + "i=0; while [ $i -lt 20 ]; do ( exit ) & i=$((i+1)); done; wait"
    lingering: list[subprocess.Popen] = []
    stopped = None
    try:
        for i in range(36):
            argv = [*HYJAIL, "exec", "busy", "/bin/sh", "-c"]
            if i % 3 == 0:
                finished = subprocess.run([*argv, forks], capture_output=True, text=True,
                                          timeout=60)
                assert finished.returncode == 0, finished.stderr[-1500:]
            elif i % 3 == 1:  # killed mid-way, forking
                killed = subprocess.Popen([*argv, f"echo up; while :; do {forks}; done"],
                                          stdout=subprocess.PIPE, text=True)
                assert killed.stdout.readline() == "up\n"
                time.sleep(0.1)
                killed.kill()
                killed.wait()
                killed.stdout.close()
            else:  # still running when the jail is stopped
                lingering.append(subprocess.Popen(
                    # (sleeps no slow host outlasts: the 36 jexecs took over a minute
                    # under emulation, and a first lingering one then exited 0 by itself)
                    [*argv, f"{forks}; echo up; sleep 3600 & sleep 3600"],
                    stdout=subprocess.PIPE,
                    text=True))
                assert lingering[-1].stdout.readline() == "up\n"
        stopped = hyjail("stop", "--timeout", "10", "busy")
    finally:
        if stopped is None or stopped.returncode != 0:  # a stuck supervisor must not stay
            from hyjail.registry import Registry
            for record in Registry().live():
                if record.name == "busy":
                    os.kill(record.supervisor_pid, signal.SIGKILL)
            hyjail("gc")
        for process in lingering:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
    assert stopped.returncode == 0, stopped.stderr
    assert all(process.returncode != 0 for process in lingering)
    assert json.loads(hyjail("ls", "--json").stdout) == []


@trace
def test_the_door_traces_only_the_askers_own_child(busybox_root):
    from hyjail.registry import Registry
    with running("run", "--backend", "trace", "--name", "doored", busybox_root, "tj",
                 "127.0.0.1", "/bin/sh", "-c", "echo up; sleep 60") as jail:
        assert jail.stdout.readline() == "up\n"
        record = next(r for r in Registry().live() if r.name == "doored")
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as door:
            door.connect(Registry().door_path(record.jid))
            door.send(f"TRACE {os.getppid()}".encode())  # not our child
            assert door.recv(256) == b"FAIL not the asker's own child"


def under_denied_namespaces(*args: str) -> subprocess.CompletedProcess:
    """hyjail as on a locked-down container host: namespaces refused by a parent filter."""
    return subprocess.run([sys.executable, os.path.join(HERE, "deny_namespaces.py"), *HYJAIL,
                           *args], capture_output=True, text=True, timeout=60)


def test_without_namespaces_auto_picks_ptrace_for_every_rule(probe_root, host_process):
    require_denied(kind="trace")
    plan = json.loads(under_denied_namespaces("features", "--json").stdout)
    probe = {check["name"]: check["ok"] for check in plan["probe"]}
    assert not any(ok for name, ok in probe.items() if name.startswith("ns."))
    picked = {row["rule"]: row["provider"] for row in plan["plan"]
              if "auto" in row["picked_by"]}
    assert picked == {rule: "ptrace" for rule in ("R1", "R2", "R3", "R4", "R5", "R6", "R7")}
    ip = fresh_loopback_ip()
    result = under_denied_namespaces("run", probe_root, "tj", ip, "/bin/hjprobe", "tj", "64",
                                     "nodename", f"kill:{host_process}", "bind:0.0.0.0",
                                     "unshare_net", "mount")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["nodename=tj", f"kill:{host_process}=ESRCH",
                                     f"bind:0.0.0.0={ip}", "unshare_net=EPERM", "mount=EPERM"]
    listed = json.loads(hyjail("ls", "--json").stdout)
    assert listed == []


# ---- R3 without a network namespace: the supervisor performs the socket calls ---------------

@trace_r3
@pytest.mark.parametrize("abi", abis("64", "int80", "int80s"))  # int80s: by socketcall
def test_binds_follow_freebsds_rules(probe_root, abi):
    ip = fresh_loopback_ip()
    ops = ["bind:0.0.0.0", "bind:127.0.0.1", f"bind:{ip}", "bind:127.0.0.2"]
    result = hyjail("run", "--backend", "trace", probe_root, "tj", ip, "/bin/hjprobe", "tj",
                    abi, *ops)
    assert result.stdout.split() == [f"bind:0.0.0.0={ip}", f"bind:127.0.0.1={ip}",
                                     f"bind:{ip}={ip}", "bind:127.0.0.2=EADDRNOTAVAIL"]


@trace_r3
def test_connect_af_unspec_dissolves_an_association(probe_root):
    ip = fresh_loopback_ip()
    result = hyjail("run", "--backend", "trace", probe_root, "tj", ip, "/bin/hjprobe", "tj",
                    "64", f"unspec:{ip}:9")
    assert result.stdout.split() == [f"unspec:{ip}:9=ok"], result.stderr


@trace_r3
def test_a_server_on_any_address_answers_at_the_jail_ip_only(busybox_root):
    ip = fresh_loopback_ip()
    with running("run", "--backend", "trace", busybox_root, "srv", ip, "/bin/sh", "-c",
                 "nc -l -p 8081 -e /bin/echo served"):
        with connect_retrying(ip, 8081) as client:
            assert client.recv(64) == b"served\n"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", 8081), timeout=5).close()


@trace_r3
@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_traffic_leaves_from_the_jail_ip_and_localhost_stays_inside(probe_root, abi):
    ip, peer = fresh_loopback_ip(), fresh_loopback_ip()  # peer: this test's own address
    with socket.socket() as listener, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket() as localhost:
        listener.bind((peer, 0))
        listener.listen()
        listener.settimeout(20)
        udp.bind((peer, 0))
        udp.settimeout(20)
        localhost.bind(("127.0.0.1", 0))  # a host service the jail must never reach
        localhost.listen()
        localhost.setblocking(False)
        tcp_port, udp_port = listener.getsockname()[1], udp.getsockname()[1]
        script = (f"echo tcp | nc {peer} {tcp_port}; "
                  f"nc 127.0.0.1 {localhost.getsockname()[1]} </dev/null; echo $?; "
                  f"/bin/hjprobe udp {abi} sendto:{peer}:{udp_port} sendmsg:{peer}:{udp_port}")
        with running("run", "--backend", "trace", probe_root, "udp", ip, "/bin/sh", "-c",
                     script) as jail:
            connection, source = listener.accept()
            with connection:
                assert source[0] == ip and connection.recv(16) == b"tcp\n"
            for _ in range(2):
                data, source = udp.recvfrom(16)
                assert (data, source[0]) == (b"udp\n", ip)
            # 127.0.0.1 meant the jail's own address, where nothing listens: refused.
            assert jail.stdout.read().split() == ["1", f"sendto:{peer}:{udp_port}=ok",
                                                  f"sendmsg:{peer}:{udp_port}=ok"]
        with pytest.raises(BlockingIOError):
            localhost.accept()


@trace_r3
def test_the_sockaddr_race_never_escapes(probe_root):
    """sysjail's hole: a thread rewrites the address between the check and the kernel's use.
    50,000 rounds of bind and connect, 100,000 judged calls, while another thread flips the
    bind address to a host address and the connect address to 127.0.0.1, where this test
    listens. (On an emulated host, HYJAIL_CHECK_SLOW, the rounds paced down as the battery's:
    50,000 took more than 300 s there.)"""
    ip = fresh_loopback_ip()
    rounds = max(2000, int(50000 / SLOW))
    with socket.socket() as localhost:
        localhost.bind(("127.0.0.1", 0))
        localhost.listen(128)
        localhost.setblocking(False)
        port = localhost.getsockname()[1]
        result = hyjail("run", "--backend", "trace", probe_root, "tj", ip, "/bin/hjprobe",
                        "tj", "64", f"race:{ip}:127.0.0.2:{port}:{rounds}", timeout=300)
        lines = dict(line.split("=", 1) for line in result.stdout.split())
        assert lines.pop(f"race:{ip}:127.0.0.2:{port}:{rounds}") == "ok", result.stderr
        # the flips did land on both sides
        assert rounds // 10 < int(lines["race_bound"]) < rounds - rounds // 10
        with pytest.raises(BlockingIOError):
            localhost.accept()


FD_SWAPPED = ("connect", "bind", "listen", "sendto", "sendmsg", "sendmmsg")


@trace_r3
@pytest.mark.parametrize("weakened", [False, True], ids=["held", "weakened"])
def test_a_descriptor_swapped_under_a_judged_call_never_escapes(probe_root, weakened):
    """Issue 13's fd swap: a thread dup2()s an internet socket over a unix socket's fd while
    another makes each judged call on it, with the host's 127.0.0.1 (where this test listens)
    as the destination, or 0.0.0.0 to bind and listen on. 2,000 rounds per call; weakened to
    the old pass-through, every call escapes (the probe sees its socket connected, or bound
    or listening on 0.0.0.0): a race, so a call that lost it gets two more runs. (Not the
    weakened proof on an emulated host: there connect and sendto lost 6,000 rounds.)"""
    if weakened and SLOW > 1:
        pytest.skip(f"the escape's proof is a race, for a host of normal speed (this one is "
                    f"paced {SLOW:g}x slower: HYJAIL_CHECK_SLOW)")
    ip = fresh_loopback_ip()
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))  # host services the jail must never reach
        tcp.listen(128)
        tcp.setblocking(False)
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        target = {"connect": f"127.0.0.1:{tcp.getsockname()[1]}", "bind": "0.0.0.0:0",
                  "listen": "0.0.0.0:0"}
        ops = [f"fdswap:{call}:{target.get(call, f'127.0.0.1:{udp.getsockname()[1]}')}:2000"
               for call in FD_SWAPPED]
        env = {**os.environ, "HYJAIL_UNSAFE_WEAKEN": "judged-fd-passthrough" if weakened else ""}
        lines: dict[str, str] = {}
        for _ in range(3 if weakened else 1):
            tried = [op for op in ops if not lines.get(op, "").startswith("escaped:")]
            if not tried:
                break
            result = hyjail("run", "--backend", "trace", probe_root, "tj", ip, "/bin/hjprobe",
                            "tj", "64", *tried, timeout=300, env=env)
            got = dict(line.split("=", 1) for line in result.stdout.split())
            assert list(got) == tried, result.stderr
            lines.update(got)
        reached = []
        for listener in (tcp, udp):
            with contextlib.suppress(BlockingIOError):
                reached.append(listener.accept() if listener is tcp else listener.recv(16))
    if weakened:
        assert all(lines[op].startswith("escaped:") for op in ops), lines
        assert len(reached) == 2  # a connection and a datagram reached the host's services
    else:
        assert set(lines.values()) == {"ok"}, lines
        assert reached == []
    for got in reached:
        if isinstance(got, tuple):
            got[0].close()
