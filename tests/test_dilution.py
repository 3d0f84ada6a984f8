"""R5: root inside a jail is diluted, for the x86_64 ABI and for int 0x80 alike, and the
allow.* permissions open exactly their part. Every attempt is a real system call made by
hyjail/check/probe.c (hjprobe), as root inside a real jail."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from conftest import (
    HOST_IP,
    abis,
    connect_to_jail,
    fresh_ip,
    host_plan,
    host_probe,
    hyjail,
    jail_ip,
    jail_record,
    needs,
    needs_jails,
    running,
)

pytestmark = needs_jails

# What each attempt must get. EPERM from the capability set, the seccomp filter or both;
# EROFS where the file system is read-only; ENOSYS for SysV IPC without allow.sysvipc, as on
# FreeBSD.
DENIED = {
    "mount": "EPERM", "mount_bind": "EPERM", "umount": "EPERM", "pivot_root": "EPERM",
    "mknod_chr": "EPERM", "mknod_blk": "EPERM",
    "init_module": "EPERM", "delete_module": "EPERM", "kexec_load": "EPERM",
    "reboot": "EPERM", "clock_settime": "EPERM", "settimeofday": "EPERM",
    "swapon": "EPERM", "acct": "EPERM", "syslog": "EPERM",
    "unshare_mnt": "EPERM", "unshare_user": "EPERM", "unshare_net": "EPERM",
    "setns_own": "EPERM", "open_by_handle_at": "EPERM", "tiocsti": "EPERM",
    "raw_socket": "EPERM", "packet_socket": "EPERM",
    "bpf": "EPERM", "perf_event_open": "EPERM", "userfaultfd": "EPERM", "keyctl": "EPERM",
    "iopl": "EPERM", "ioperm": "EPERM",
    "write_proc_sys": "EROFS", "write_sys": "EROFS",
    "mlock": "EPERM", "shmget": "ENOSYS",
}
# Ordinary root work that must still succeed.
ALLOWED = {"chown": "ok", "chroot": "ok", "sethostname": "ok"}
# socketcall's socket creation: its family sits in memory, where the filter cannot judge it,
# so it is refused outright (ENOSYS) without allow.socket_af (see tests/test_families.py).
ONLY_ABI = {"64": {"tiocsti_high_bits": "EPERM"}, "int80": {"socketcall_raw": "ENOSYS"}}


def r5_answers(chosen, abi: str) -> dict[str, str]:
    """What each attempt gets in a jail of this plan (hyjail.plan.Plan), and why it differs
    from the ns backend's where it does."""
    expected = {**DENIED, **ALLOWED, **ONLY_ABI[abi]}
    if chosen.uses("R1", "ptrace"):
        # A chroot has no /proc or /sys to write (absent, not read-only), and root may not
        # chroot again (a second chroot is how a chroot is escaped): no CAP_SYS_CHROOT.
        expected.update(write_proc_sys="ENOENT", write_sys="ENOENT", chroot="EPERM")
    elif chosen.uses("R4", "ptrace"):
        # Without a pid namespace of its own the jail has no /proc at all (one would show the
        # host's processes).
        expected["write_proc_sys"] = "ENOENT"
    if abi == "int80" and chosen.uses("R3", "ptrace"):
        # The supervisor judges socketcall from its copy of the arguments and makes it the
        # direct call: a raw socket then meets the missing CAP_NET_RAW, not the filter's ENOSYS.
        expected["socketcall_raw"] = "EPERM"
    return expected


def run_probe(root: str, abi: str, ops, *options: str) -> dict[str, str]:
    # sethostname goes last: the probe refuses to run once the hostname is not the jail's.
    ops = sorted(ops, key=lambda op: op == "sethostname")
    result = hyjail("run", *options, root, "r5", "127.0.0.1", "/bin/hjprobe", "r5", abi, *ops)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_root_inside_cannot_do_what_r5_forbids(probe_root, abi):
    expected = r5_answers(host_plan("auto"), abi)
    assert run_probe(probe_root, abi, expected) == expected


@needs("R3:kernel")  # a veth
def test_root_inside_cannot_change_the_network(busybox_root):
    ip = fresh_ip()
    script = """
        ip link add hjprobe0 type dummy; echo "link_add=$?"
        ip addr add 10.77.250.1/32 dev eth0; echo "addr_add=$?"
        ip link set eth0 down; echo "link_down=$?"
        ip route add 10.77.250.0/24 dev eth0; echo "route_add=$?"
        ip -o addr show eth0 | awk '{print "addr=" $4}'
    """
    result = hyjail("run", busybox_root, "net", ip, "/bin/sh", "-c", script)
    assert result.stdout.split() == ["link_add=2", "addr_add=2", "link_down=2", "route_add=2",
                                     f"addr={ip}/32"], result.stderr
    assert result.stderr.count("Operation not permitted") == 4, result.stderr


def test_probe_refuses_outside_a_jail(probe_root):
    result = subprocess.run([os.path.join(probe_root, "bin", "hjprobe"), "r5", "64", "mount"],
                            capture_output=True, text=True)
    assert result.returncode == 99 and result.stdout == ""


@needs("R5:kernel", "R4:kernel")  # sys_admin in a userns of the jail's, read in its /proc
def test_capabilities_and_filter_as_seen_from_inside(busybox_root):
    script = "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status; id -u"
    result = hyjail("run", busybox_root, "caps", "127.0.0.1", "/bin/sh", "-c", script)
    status = dict(line.split(":\t") for line in result.stdout.splitlines()[:-1])
    assert result.stdout.splitlines()[-1] == "0"
    # chown, dac_override, fowner, fsetid, kill, setgid, setuid, net_bind_service,
    # sys_chroot, sys_admin (in the jail's user namespace only), audit_write.
    assert status["CapBnd"] == status["CapPrm"] == status["CapEff"] == "00000000202404fb"
    assert status["CapInh"] == status["CapAmb"] == "0000000000000000"
    assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")


@needs("R3:kernel")  # port 80 at the jail's address on its veth
def test_ordinary_root_work_still_succeeds(busybox_root):
    ip = fresh_ip()
    script = """
        echo data > /root/file && chown 1000:1000 /root/file && ls -ln /root/file
        su -s /bin/sh -c 'id -u' nobody 2>&1 || echo su failed
        echo served | nc -l -p 80
    """
    with running("run", busybox_root, "work", ip, "/bin/sh", "-c", script) as jail:
        with connect_to_jail(ip, 80) as conn:  # port 80, reached at the jail's address
            assert conn.recv(64) == b"served\n"
        out, err = jail.communicate(timeout=20)
    assert jail.returncode == 0, err
    words = out.split()
    assert words[2:4] == ["1000", "1000"], out  # chown
    assert "65534" in words and "su failed" not in out  # setuid to another user


@needs("R5:kernel", "R4:kernel")  # the same capabilities, read in the jail's /proc
def test_jexec_is_confined_like_the_command(probe_root):
    ip = jail_ip()
    with running("run", "--name", "entered", probe_root, "entered", ip, "/bin/sleep", "60"):
        jail_record(ip)
        result = hyjail("exec", "entered", "/bin/hjprobe", "entered", "64", "mount",
                        "unshare_user", "raw_socket", "chown")
        assert result.stdout.split() == ["mount=EPERM", "unshare_user=EPERM",
                                         "raw_socket=EPERM", "chown=ok"], result.stderr
        caps = hyjail("exec", "entered", "/bin/grep", "CapBnd", "/proc/self/status")
        assert caps.stdout.split() == ["CapBnd:", "00000000202404fb"]


def test_ptrace_of_another_jails_process_finds_no_such_process(probe_root):
    ip = jail_ip()
    with running("run", probe_root, "victim", ip, "/bin/sleep", "60"):
        victim = jail_record(ip)["init_pid"]
        script = f"hjprobe attacker 64 ptrace:{victim}"
        result = hyjail("run", probe_root, "attacker", "127.0.0.1", "/bin/sh", "-c", script)
        assert result.stdout.strip() == f"ptrace:{victim}=ESRCH", result.stderr


# ---- allow.* gates, each both ways -------------------------------------------------------

def test_set_hostname_on_by_default_and_off_when_taken_away(probe_root):
    assert run_probe(probe_root, "64", ["sethostname"]) == {"sethostname": "ok"}
    off = run_probe(probe_root, "int80", ["sethostname"], "--allow", "noset_hostname")
    assert off == {"sethostname": "EPERM"}
    result = hyjail("run", "--allow", "set_hostname=0", probe_root, "h", "127.0.0.1",
                    "/bin/sh", "-c", "hostname x; hostname")
    assert result.stdout.strip() == "h" and "hostname" in result.stderr


@needs("R3:kernel")  # a veth
def test_raw_sockets_gate_and_the_source_stays_the_jail_ip(probe_root):
    ip = fresh_ip()
    assert run_probe(probe_root, "64", ["raw_socket", "packet_socket"],
                     "--allow", "raw_sockets") == {"raw_socket": "ok", "packet_socket": "ok"}
    # A raw ICMP echo to the host end of the veth arrives from the jail's address.
    listener = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    listener.settimeout(10)
    with listener, running("run", "--allow", "raw_sockets", "--host-ip", HOST_IP, probe_root,
                           "pinger", ip, "/bin/sh", "-c", "sleep 1; ping -c 3 " + HOST_IP):
        record = jail_record(ip)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                            record["host_link"].encode())
        packet, _ = listener.recvfrom(2048)
        assert socket.inet_ntoa(packet[12:16]) == ip
        assert packet[20] == 8  # an echo request


@needs("R3:kernel")  # a veth
def test_raw_sockets_cannot_forge_the_ipv4_source(probe_root):
    """IP_HDRINCL lets root with a raw socket write any source; the host end of the veth
    drops what does not come from the jail's address (strict reverse-path filtering)."""
    ip, forged = fresh_ip(), fresh_ip()
    listener = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    listener.settimeout(10)
    script = (f"sleep 1; /bin/hjprobe spoofer 64 spoof:{forged}:{HOST_IP} spoof:{ip}:{HOST_IP}"
              f"; sleep 2")
    with listener, running("run", "--allow", "raw_sockets", "--host-ip", HOST_IP, probe_root,
                           "spoofer", ip, "/bin/sh", "-c", script) as jail:
        record = jail_record(ip)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                            record["host_link"].encode())
        packet, _ = listener.recvfrom(2048)
        # The forged one went first, yet the first echo of ours to arrive is the honest one.
        assert (socket.inet_ntoa(packet[12:16]), packet[24:26]) == (ip, b"JJ")
        assert jail.stdout.read().split() == [f"spoof:{forged}:{HOST_IP}=ok",
                                              f"spoof:{ip}:{HOST_IP}=ok"]


@needs("abi.i386")
def test_sysvipc_gate(probe_root):
    assert run_probe(probe_root, "int80", ["shmget"]) == {"shmget": "ENOSYS"}
    chosen = host_plan("auto")
    # The jail's own IPC namespace: a chroot gets one with the kernel's R3 (its network
    # namespace), a namespace jail wherever the host has them.
    if chosen.uses("R3", "kernel") if chosen.kind == "trace" else host_probe().has("ns.ipc"):
        assert run_probe(probe_root, "int80", ["shmget"], "--allow", "sysvipc") == {
            "shmget": "ok"}
    else:  # the host's own SysV IPC is never shared: refused in one line
        result = hyjail("run", "--allow", "sysvipc", probe_root, "r5", "127.0.0.1", "/bin/true")
        assert (result.returncode, result.stderr.count("\n")) == (125, 1), result.stderr
        assert result.stderr.startswith("hyjail: allow.sysvipc: without an IPC namespace")


@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_chflags_gate(probe_root, abi):
    assert run_probe(probe_root, abi, ["chattr_immutable"]) == {"chattr_immutable": "EPERM"}
    assert run_probe(probe_root, abi, ["chattr_immutable"], "--allow", "chflags") == {
        "chattr_immutable": "ok"}


@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_with_chflags_root_is_still_diluted(probe_root, abi):
    expected = r5_answers(host_plan("auto"), abi)
    assert run_probe(probe_root, abi, expected, "--allow", "chflags") == expected


@needs("R1:kernel", "R4:kernel")  # the jail's own /proc, to read them from
def test_with_chflags_root_stays_in_the_host_userns_with_no_sys_admin(probe_root):
    result = hyjail("run", "--allow", "chflags", probe_root, "c", "127.0.0.1", "/bin/sh", "-c",
                    "cat /proc/self/uid_map; grep CapEff /proc/self/status")
    uid_map, caps = result.stdout.split("\n")[:2]
    assert uid_map.split() == ["0", "0", "4294967295"]
    assert int(caps.split()[1], 16) & (1 << 9)  # CAP_LINUX_IMMUTABLE
    assert not int(caps.split()[1], 16) & (1 << 21)  # never CAP_SYS_ADMIN there


def test_mlock_gate(probe_root):
    assert run_probe(probe_root, "64", ["mlock"], "--allow", "mlock") == {"mlock": "ok"}


@needs("R1:kernel", "R4:kernel")  # netstat reads the jail's own /proc/net
def test_reserved_ports_gate(busybox_root):
    script = "nc -l -p 80 & sleep 0.3; netstat -ltn | grep -c ':80 '; kill $! 2>/dev/null"
    off = hyjail("run", "--allow", "noreserved_ports", busybox_root, "p", "127.0.0.1",
                 "/bin/sh", "-c", script)
    assert off.stdout.strip() == "0" and "ermission denied" in off.stderr
    high = hyjail("run", "--allow", "noreserved_ports", busybox_root, "p", "127.0.0.1",
                  "/bin/sh", "-c", script.replace("80", "8080"))
    assert high.stdout.strip() == "1"


@needs("R5:kernel")  # allow.mount: a user namespace of the jail's
@pytest.mark.parametrize("abi", abis("64", "int80"))
def test_mount_gate_opens_only_the_granted_kinds(probe_root, abi):
    ops = ["mount", "mount_bind"]
    assert run_probe(probe_root, abi, ops, "--allow", "mount") == {
        "mount": "EPERM", "mount_bind": "EPERM"}
    assert run_probe(probe_root, abi, ops, "--allow", "mount", "--allow", "mount.tmpfs") == {
        "mount": "ok", "mount_bind": "EPERM"}
    assert run_probe(probe_root, abi, ops, "--allow", "mount", "--allow", "mount.nullfs") == {
        "mount": "EPERM", "mount_bind": "ok"}


@needs("R5:kernel")  # allow.mount: a user namespace of the jail's
def test_mounting_root_cannot_undo_the_jails_own_mounts(busybox_root):
    script = """
        mount -t tmpfs scratch /tmp && touch /tmp/made && echo tmpfs=$?
        mount -o remount,rw /proc/sys; echo remount_proc_sys=$?
        umount /proc/sys; echo umount_proc_sys=$?
        umount -l /proc/kcore; echo umount_mask=$?
        mkdir /tmp/p; mount -t proc proc /tmp/p; echo proc=$?
        mount -t sysfs sysfs /tmp/p; echo sysfs_rw=$?
        mount -t sysfs -o ro sysfs /tmp/p && mount -o remount,rw /tmp/p; echo sysfs_to_rw=$?
        mount -t cgroup2 none /tmp/p; echo cgroup2=$?
        mount -t mqueue none /tmp/p; echo mqueue=$?
        echo x > /proc/sys/kernel/hostname; echo write_proc_sys=$?
    """
    result = hyjail("run", "--allow", "mount", "--allow", "mount.tmpfs", "--allow",
                    "mount.nullfs", busybox_root, "mnt", "127.0.0.1", "/bin/sh", "-c", script)
    answers = dict(line.split("=") for line in result.stdout.split())
    assert answers.pop("tmpfs") == "0", result.stderr
    assert set(answers.values()) == {"1"}, answers
    with open("/proc/self/mountinfo") as f:  # none of it reached the host
        assert busybox_root not in f.read()


@pytest.mark.parametrize("option, message", [
    ("nosuch", "allow.nosuch: unknown permission"),
    ("chflags,mount", "allow.chflags and allow.mount: allow.mount needs the jail's own user"),
    ("mount.procfs", "allow.mount.procfs: cannot be granted"),
    ("mount.tmpfs", "allow.mount.tmpfs: needs allow.mount too"),
    ("mount.ext4", "allow.mount.ext4: unknown file system type"),
    ("raw_sockets=maybe", "allow.raw_sockets=maybe: not a boolean"),
])
def test_bad_or_ungrantable_permissions_are_refused(busybox_root, option, message):
    allows = [arg for one in option.split(",") for arg in ("--allow", one)]
    result = hyjail("run", *allows, busybox_root, "b", "127.0.0.1", "/bin/true")
    assert result.returncode == 125
    assert result.stderr.startswith(f"hyjail: {message}") and len(result.stderr.splitlines()) == 1


# ---- --userns ----------------------------------------------------------------------------

@needs("R5:kernel", "R4:kernel")  # --userns; its map read in the jail's /proc
def test_userns_root_inside_is_an_unprivileged_range_outside(busybox_root):
    ip = fresh_ip()
    made = os.path.join(busybox_root, "tmp", f"userns-{ip}")
    script = f"id -u; touch /tmp/userns-{ip}; echo ready; sleep 30"
    try:
        with running("run", "--userns", "--name", "mapped", busybox_root, "mapped", ip,
                     "/bin/sh", "-c", script) as jail:
            assert jail.stdout.readline() == "0\n"  # root inside
            assert jail.stdout.readline() == "ready\n"
            jid = jail_record(ip)["jid"]
            owner = os.stat(made).st_uid  # the root is a bind mount of the host's directory
            assert owner == 2**30 + jid * 65536
            entered = hyjail("exec", "mapped", "/bin/sh", "-c", "id -u; cat /proc/self/uid_map")
            assert entered.stdout.split() == ["0", "0", str(owner), "65536"], entered.stderr
    finally:
        if os.path.exists(made):
            os.unlink(made)


def test_userns_and_chflags_do_not_go_together(busybox_root):
    result = hyjail("run", "--userns", "--allow", "chflags", busybox_root, "u", "127.0.0.1",
                    "/bin/true")
    assert (result.returncode, result.stderr) == (125, (
        "hyjail: --userns with allow.chflags: immutable flags need jailed root to stay in the "
        "host's user namespace\n"))


@needs("R5:kernel", "R4:kernel")  # --userns; its map read in the jail's /proc
def test_userns_base_is_honoured_and_needs_userns(busybox_root):
    result = hyjail("run", "--userns", "--userns-base", "3000000000", busybox_root, "b",
                    "127.0.0.1", "/bin/cat", "/proc/self/uid_map")
    assert result.stdout.split() == ["0", "3000000000", "65536"], result.stderr
    alone = hyjail("run", "--userns-base", "5", busybox_root, "b", "127.0.0.1", "/bin/true")
    assert alone.returncode == 2 and "--userns-base needs --userns" in alone.stderr
    too_high = hyjail("run", "--userns", "--userns-base", str(2**32 - 2), busybox_root, "b",
                      "127.0.0.1", "/bin/true")
    assert too_high.returncode == 125 and "--userns 4294967294" in too_high.stderr


# ---- the filter for an ABI this kernel lacks (x32: CONFIG_X86_X32_ABI is off here) ----

def filter_text(allowed: frozenset[str]) -> str:
    import tempfile

    from hyjail.ns import syscall_filter
    with tempfile.TemporaryFile("w+") as out:
        syscall_filter.build(allowed).export_pfc(out)
        out.seek(0)
        return out.read()


def test_the_filter_covers_x32_like_x86_64_and_kills_other_abis():
    """x32 cannot run on this kernel, so this reads the filter libseccomp generated: x32's
    calls are x86_64's numbers with bit 30 set, and each gets the same action."""
    text = filter_text(frozenset({"set_hostname"}))
    x86_64, rest = text.split("# filter for arch x86 ", 1)
    i386, x32 = rest.split("# filter for arch x32 ", 1)
    for name, number in (("mount", 165), ("init_module", 175), ("open_by_handle_at", 304),
                         ("reboot", 169), ("bpf", 321), ("setns", 308)):
        assert f'syscall "{name}" ({number})' in x86_64
        assert f'syscall "{name}" ({0x40000000 + number})' in x32
    assert x32.count("ERRNO(1)") == x86_64.count("ERRNO(1)")
    assert "$a1 & 0xffffffff == 21522" in x32  # TIOCSTI, on the low 32 bits
    assert "# invalid architecture action\naction KILL_PROCESS;" in text  # any other ABI
    assert "ERRNO" in i386
