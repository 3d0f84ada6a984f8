"""An OCI bundle's config.json and an exec's process.json, read into frozen typed data: a
podman-like config in full, each refusal one SetupError line naming the field's path, the
file read safely (no symlink, no FIFO, no giant file), and no input that raises anything but
SetupError. Pure: no root, no kernel but tmp_path files."""

from __future__ import annotations

import copy
import json
import os
import resource

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyjail.errors import SetupError
from hyjail.frozen import FrozenInstanceError
from hyjail.oci import config as oci
from hyjail.oci.config import (
    OciCapabilities,
    OciDevice,
    OciDeviceRule,
    OciHook,
    OciIdMapping,
    OciMount,
    OciNamespace,
    OciProcess,
)

CID = "34f6b5ed6c5fb7d700b8bd63ae3a854a0e7f9c21a976b747ebc0118c9dca8f29"
USERDATA = f"/run/containers/storage/overlay-containers/{CID}/userdata"
CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
        "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID",
        "CAP_SYS_CHROOT"]

# What `podman run` hands its runtime (trimmed: a shorter seccomp profile and env).
PODMAN = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "user": {"uid": 0, "gid": 0, "umask": 18, "additionalGids": [10]},
        "args": ["/bin/sleep", "100"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm", "container=podman", "HOME=/root", "HOSTNAME=34f6b5ed6c5f"],
        "cwd": "/",
        "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576},
                    {"type": "RLIMIT_NPROC", "hard": 4194304, "soft": 4194304}],
        "oomScoreAdj": 0,
    },
    "root": {"path": f"/var/lib/containers/storage/overlay/{CID[:12]}/merged"},
    "hostname": "34f6b5ed6c5f",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/etc/hostname", "type": "bind", "source": f"{USERDATA}/hostname",
         "options": ["bind", "rprivate"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": f"{USERDATA}/resolv.conf",
         "options": ["bind", "rprivate"]},
        {"destination": "/etc/hosts", "type": "bind", "source": f"{USERDATA}/hosts",
         "options": ["bind", "rprivate"]},
        {"destination": "/dev/shm", "type": "bind", "source": f"{USERDATA}/shm",
         "options": ["bind", "rprivate", "nosuid", "noexec", "nodev"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["rprivate", "nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "annotations": {
        "io.podman.annotations.init": "FALSE",
        "io.container.manager": "libpod",
        "org.opencontainers.image.stopSignal": "15",
    },
    "linux": {
        "sysctl": {"net.ipv4.ping_group_range": "0 0"},
        "resources": {"devices": [{"allow": False, "access": "rwm"}], "pids": {"limit": 2048}},
        "cgroupsPath": f"machine.slice:libpod:{CID}",
        "namespaces": [{"type": "pid"},
                       {"type": "network", "path": "/run/netns/netns-a11a99d0-7da6"},
                       {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
        "seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["kexec_load", "vmsplice"], "action": "SCMP_ACT_ERRNO",
                 "errnoRet": 1},
                {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            ],
        },
        "maskedPaths": ["/proc/acpi", "/proc/kcore", "/sys/firmware"],
        "readonlyPaths": ["/proc/asound", "/proc/sys"],
    },
}

BUNDLE = "/var/lib/containers/b"


DELETE = object()


def config(**changes) -> dict:
    """PODMAN, deep-copied, with changes at dotted paths ("process.user.uid")."""
    data = copy.deepcopy(PODMAN)
    for path, value in changes.items():
        set_at(data, path, value)
    return data


def set_at(data: dict, path: str, value) -> None:
    """data's field at a dotted path ("mounts.3.destination") set; DELETE removes it."""
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(last)] = value
    elif value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value


def refusal(data) -> str:
    with pytest.raises(SetupError) as caught:
        oci.parse(data, BUNDLE)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---- a real config, typed ----------------------------------------------------------------------

def test_a_podman_config_becomes_typed_data():
    c = oci.parse(PODMAN, BUNDLE)
    assert c.oci_version == "1.0.2-dev"
    assert c.root_path == PODMAN["root"]["path"] and not c.root_readonly
    assert c.hostname == "34f6b5ed6c5f" and c.domainname is None
    p = c.process
    assert p.args == ("/bin/sleep", "100") and p.cwd == "/" and not p.terminal
    assert (p.uid, p.gid, p.umask, p.additional_gids) == (0, 0, 0o22, (10,))
    assert p.env[1] == ("TERM", "xterm") and dict(p.env)["HOME"] == "/root"
    assert p.capabilities.bounding[:3] == ("chown", "dac_override", "fowner")
    assert "net_bind_service" in p.capabilities.effective
    assert p.capabilities.inheritable == () and p.capabilities.ambient == ()
    assert p.rlimits == (("nofile", 1048576, 1048576), ("nproc", 4194304, 4194304))
    assert p.oom_score_adj == 0 and not p.no_new_privileges and p.console_size is None

    assert [m.destination for m in c.mounts][:3] == ["/proc", "/dev", "/sys"]
    proc, _, sys_, pts, _, hostname, *_ , shm, cgroup = c.mounts
    assert proc == OciMount("/proc", "proc", "proc", ("nosuid", "noexec", "nodev"))
    assert sys_.read_only and not proc.read_only and cgroup.read_only
    assert pts.flag("newinstance") and not pts.is_bind
    assert hostname.is_bind and not hostname.recursive and hostname.source.endswith("/hostname")
    assert shm.flag("nodev") and shm.is_bind

    assert c.annotations[0] == ("io.container.manager", "libpod")  # sorted
    assert c.annotation("org.opencontainers.image.stopSignal") == "15"
    assert c.annotation("absent") is None

    linux = c.linux
    assert linux.sysctl == (("net.ipv4.ping_group_range", "0 0"),)
    assert linux.resources.pids_limit == 2048
    assert linux.resources.device_rules == (OciDeviceRule(allow=False, type="a", access="rwm"),)
    assert linux.resources.memory_limit is None and linux.resources.other == ()
    assert linux.cgroups_path.startswith("machine.slice:libpod:")
    assert [ns.type for ns in linux.namespaces] == ["pid", "network", "ipc", "uts", "mount"]
    assert linux.namespace("network") == OciNamespace("network", "/run/netns/netns-a11a99d0-7da6")
    assert linux.namespace("pid").path is None and linux.namespace("user") is None
    assert linux.seccomp == PODMAN["linux"]["seccomp"]
    assert linux.masked_paths == ("/proc/acpi", "/proc/kcore", "/sys/firmware")
    assert linux.readonly_paths == ("/proc/asound", "/proc/sys")
    assert linux.uid_mappings == () and linux.devices == () and linux.rootfs_propagation is None
    assert c.hooks == oci.OciHooks()
    assert c.raw == PODMAN


def test_the_least_config_has_empty_defaults():
    c = oci.parse({"ociVersion": "1.2.0", "root": {"path": "rootfs"}}, "/b")
    assert c.root_path == "/b/rootfs" and c.process is None and c.mounts == ()
    assert c.linux == oci.OciLinux() and c.hooks == oci.OciHooks() and c.annotations == ()
    assert c.linux.resources == oci.OciResources()


def test_results_are_frozen_and_share_nothing_with_the_input():
    data = config()
    c = oci.parse(data, BUNDLE)
    with pytest.raises(FrozenInstanceError):
        c.hostname = "x"  # type: ignore[misc]
    data["hostname"] = "changed"
    data["linux"]["seccomp"]["defaultAction"] = "SCMP_ACT_ALLOW"
    assert c.raw["hostname"] == "34f6b5ed6c5f"
    assert c.linux.seccomp["defaultAction"] == "SCMP_ACT_ERRNO"
    c.raw["linux"]["seccomp"]["syscalls"].clear()
    assert c.linux.seccomp["syscalls"]  # raw and seccomp are copies of their own
    assert "raw" not in repr(c) and c == oci.parse(config(), BUNDLE)


def test_unknown_properties_are_ignored_and_null_is_absent():
    c = oci.parse(config(**{
        "future": {"anything": [1]}, "process.ioPriority": {"class": "IOPRIO_CLASS_RT"},
        "process.user.extra": "x", "mounts.0": dict(PODMAN["mounts"][0], fancy=True),
        "linux.netDevices": {"eth1": {}}, "linux.resources.memory": {"limit": None},
        "domainname": None, "linux.seccomp.syscalls.0": {"names": ["x"], "action": "A",
                                                         "comment": "ok"},
    }), BUNDLE)
    assert c.process.args == ("/bin/sleep", "100") and c.domainname is None
    assert c.linux.resources.memory_limit is None and c.mounts[0].flag("nodev")


def test_root_path_is_resolved_against_the_bundle():
    assert oci.parse(config(**{"root.path": "rootfs/../rootfs/"}), "/b").root_path == "/b/rootfs"
    assert oci.parse(config(**{"root.path": "//abs//root"}), "/b").root_path == "/abs/root"
    assert oci.parse(config(**{"root.readonly": True}), "/b").root_readonly


def test_process_fields():
    p = oci.parse(config(**{
        "process.terminal": True, "process.consoleSize": {"height": 25, "width": 80},
        "process.env": ["A=1", "B=x=y", "A=2", "EMPTY="],
        "process.cwd": "/srv//app/", "process.noNewPrivileges": True,
        "process.oomScoreAdj": -1000, "process.apparmorProfile": "containers-default",
        "process.selinuxLabel": "system_u:system_r:container_t:s0",
        "process.user": {"uid": 1000, "gid": 1000, "username": "me"},
        "process.capabilities": {"bounding": ["CAP_KILL", "cap_kill", "CAP_CHECKPOINT_RESTORE"],
                                 "ambient": ["CAP_NET_RAW"]},
        "process.rlimits": [{"type": "RLIMIT_CORE", "soft": 0, "hard": 2**64 - 1},
                            {"type": "RLIMIT_MEMLOCK", "soft": 2**64 - 1, "hard": 2**64 - 1}],
    }), BUNDLE).process
    assert p.terminal and p.console_size == (25, 80)
    assert p.env == (("A", "2"), ("B", "x=y"), ("EMPTY", ""))  # a later A replaces, in place
    assert p.cwd == "/srv/app" and p.no_new_privileges and p.oom_score_adj == -1000
    assert (p.uid, p.gid, p.umask, p.user_name) == (1000, 1000, None, "me")
    assert p.capabilities == OciCapabilities(bounding=("kill", "checkpoint_restore"),
                                             ambient=("net_raw",))
    inf = resource.RLIM_INFINITY  # hyjail.limits' spelling of the spec's 2**64-1
    assert p.rlimits == (("core", 0, inf), ("memlock", inf, inf))
    assert p.apparmor_profile == "containers-default" and p.selinux_label.endswith(":s0")


def test_an_empty_user_is_root_as_in_runc():
    p = oci.parse(config(**{"process.user": {}}), BUNDLE).process
    assert (p.uid, p.gid, p.additional_gids) == (0, 0, ())


def test_mount_flags():
    def mount(*options, type=None):
        return OciMount("/m", type, "/src", options)
    assert mount("rbind").is_bind and mount("rbind").recursive
    assert mount(type="bind").is_bind and not mount(type="bind").recursive
    assert not mount("nosuid", type="tmpfs").is_bind
    assert mount("ro", "rw").read_only is False and mount("rw", "ro").read_only is True
    assert mount("nosuid").flag("nosuid") and not mount("nosuid").flag("nodev")
    parsed = oci.parse(config(**{"mounts": [{"destination": "/data/./x/../y/",
                                             "options": ["rbind", "ro"], "source": "/h"}]}),
                       BUNDLE).mounts
    assert parsed == (OciMount("/data/y", None, "/h", ("rbind", "ro")),)
    assert parsed[0].is_bind and parsed[0].recursive and parsed[0].read_only


def test_linux_fields():
    linux = oci.parse(config(**{
        "linux.namespaces": [{"type": "user"}, {"type": "time"}, {"type": "cgroup"}],
        "linux.uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "linux.gidMappings": [{"containerID": 0, "hostID": 2**32 - 1, "size": 1}],
        "linux.devices": [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o20666,
             "uid": 0, "gid": 0},
            {"path": "/dev/fifo", "type": "p"}],
        "linux.rootfsPropagation": "rslave", "linux.mountLabel": "system_u:object_r:x:s0",
        "linux.cgroupsPath": "", "linux.personality": {"domain": "LINUX32"},
        "linux.intelRdt": {"closID": "guaranteed_group"},
    }), BUNDLE).linux
    assert linux.namespace("user") == OciNamespace("user") and len(linux.namespaces) == 3
    assert linux.uid_mappings == (OciIdMapping(0, 100000, 65536),)
    assert linux.gid_mappings == (OciIdMapping(0, 2**32 - 1, 1),)
    assert linux.devices == (OciDevice("/dev/fuse", "c", 10, 229, 0o666, 0, 0),
                             OciDevice("/dev/fifo", "p"))
    assert linux.rootfs_propagation == "rslave" and linux.mount_label.endswith(":s0")
    assert linux.cgroups_path is None  # "" is runc's "not given"
    assert linux.personality == {"domain": "LINUX32"}
    assert linux.intel_rdt == {"closID": "guaranteed_group"} and linux.time_offsets is None


def test_resources():
    r = oci.parse(config(**{"linux.resources": {
        "memory": {"limit": 268435456, "swap": 536870912, "reservation": -1,
                   "swappiness": 60, "disableOOMKiller": False},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-3,6", "mems": "",
                "realtimeRuntime": 0},
        "pids": {"limit": -1},
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "wr"},
                    {"allow": True, "type": "b", "major": -1, "minor": -1, "access": "m"},
                    {"allow": True, "type": "c", "major": 136}],
        "unified": {"memory.high": "max", "io.weight": "100"},
        "blockIO": {"weight": 10}, "hugepageLimits": [], "network": {"classID": 1},
    }}), BUNDLE).linux.resources
    assert (r.memory_limit, r.memory_swap, r.memory_reservation) == (2**28, 2**29, None)
    assert (r.cpu_shares, r.cpu_quota, r.cpu_period) == (1024, 50000, 100000)
    assert (r.cpus, r.mems, r.pids_limit) == ("0-3,6", None, None)
    assert r.device_rules == (
        OciDeviceRule(False, "a", None, None, "rwm"), OciDeviceRule(True, "c", 1, 3, "rw"),
        OciDeviceRule(True, "b", None, None, "m"), OciDeviceRule(True, "c", 136, None, "rwm"))
    assert r.unified == (("io.weight", "100"), ("memory.high", "max"))
    # what asks for something hyjail has no field for; an empty list or false asks nothing
    assert r.other == ("blockIO", "network", "memory.swappiness", "cpu.realtimeRuntime")


@pytest.mark.parametrize("limit, swap, pids, expect", [
    (-1, -1, 0, (None, None, None)), (0, 0, 1, (None, None, 1)), (5, None, 2**62, (5, None,
                                                                                   2**62))])
def test_unset_values_become_none(limit, swap, pids, expect):
    memory = {"limit": limit} if swap is None else {"limit": limit, "swap": swap}
    r = oci.parse(config(**{"linux.resources": {"memory": memory, "pids": {"limit": pids}}}),
                  BUNDLE).linux.resources
    assert (r.memory_limit, r.memory_swap, r.pids_limit) == expect


def test_hooks():
    hooks = oci.parse(config(hooks={
        "prestart": [{"path": "/usr/bin/hook", "args": ["hook", "prestart"], "timeout": 5}],
        "createRuntime": [{"path": "/bin/a", "env": ["X=1"]}],
        "poststop": [{"path": "/bin/b"}, {"path": "/bin/c"}],
    }), BUNDLE).hooks
    assert hooks.prestart == (OciHook("/usr/bin/hook", ("hook", "prestart"), (), 5),)
    assert hooks.create_runtime == (OciHook("/bin/a", (), ("X=1",)),)
    assert [h.path for h in hooks.poststop] == ["/bin/b", "/bin/c"]
    assert hooks.create_container == hooks.start_container == hooks.poststart == ()


# ---- refusals, each naming its field -----------------------------------------------------------

REFUSED = [
    ({"ociVersion": DELETE}, "config.json: ociVersion: required"),
    ({"ociVersion": "0.6.0"}, "config.json: ociVersion: '0.6.0': hyjail reads runtime-spec 1.x"),
    ({"ociVersion": 1.0}, "config.json: ociVersion: must be a string"),
    ({"root": None}, "config.json: root: required"),
    ({"root": "rootfs"}, "config.json: root: must be an object"),
    ({"root.path": ""}, "config.json: root.path: must be a non-empty path"),
    ({"root.path": DELETE}, "config.json: root.path: required"),
    ({"root.readonly": "yes"}, "config.json: root.readonly: must be true or false"),
    ({"process": ["sh"]}, "config.json: process: must be an object, not a list"),
    ({"process.args": []}, "config.json: process.args: must be a non-empty list of strings"),
    ({"process.args": "sh"}, "config.json: process.args: must be a non-empty list of strings"),
    ({"process.args": ["sh", 1]}, "config.json: process.args: must be a non-empty list"),
    ({"process.args": None}, "config.json: process.args: must be a non-empty list of strings"),
    ({"process.args": [""]}, "config.json: process.args[0]: must not be empty"),
    ({"process.args": ["/bin/sh", "a\0b"]}, "config.json: process.args[1]: 'a\\x00b': "
                                           "contains NUL"),
    ({"process.env": ["A=1", "NOEQUALS"]}, "config.json: process.env[1]: 'NOEQUALS': must be"),
    ({"process.env": ["=x"]}, "config.json: process.env[0]: '=x': must be NAME=VALUE"),
    ({"process.env": "A=1"}, "config.json: process.env: must be a list of strings"),
    ({"process.env": ["A=\0"]}, "config.json: process.env[0]: 'A=\\x00': contains NUL"),
    ({"process.cwd": DELETE}, "config.json: process.cwd: required"),
    ({"process.cwd": "srv"}, "config.json: process.cwd: 'srv': must be an absolute path"),
    ({"process.terminal": 1}, "config.json: process.terminal: must be true or false"),
    ({"process.consoleSize": {"height": -1, "width": 80}},
     "config.json: process.consoleSize.height: must be an integer in 0..65535, not -1"),
    ({"process.consoleSize": {"height": 25}}, "config.json: process.consoleSize.width: required"),
    ({"process.user": 0}, "config.json: process.user: must be an object"),
    ({"process.user.uid": True}, "config.json: process.user.uid: must be an integer in "
                                 "0..4294967294, not True"),
    ({"process.user.uid": 1.0}, "config.json: process.user.uid: must be an integer"),
    ({"process.user.uid": -1}, "config.json: process.user.uid: must be an integer"),
    ({"process.user.gid": 2**32 - 1}, "config.json: process.user.gid: must be an integer"),
    ({"process.user.umask": 0o1000}, "config.json: process.user.umask: must be an integer in "
                                     "0..511"),
    ({"process.user.additionalGids": [1, "2"]},
     "config.json: process.user.additionalGids[1]: must be an integer"),
    ({"process.user.username": 7}, "config.json: process.user.username: must be a string"),
    ({"process.capabilities.bounding": CAPS + ["CAP_FLY"]},
     "config.json: process.capabilities.bounding[11]: 'CAP_FLY': not a Linux capability"),
    ({"process.capabilities.effective": ["CHOWN"]},
     "config.json: process.capabilities.effective[0]: 'CHOWN': not a Linux capability"),
    ({"process.capabilities.ambient": ["CAP_41"]},
     "config.json: process.capabilities.ambient[0]: 'CAP_41'"),
    ({"process.capabilities.permitted": "CAP_CHOWN"},
     "config.json: process.capabilities.permitted: must be a list of strings"),
    ({"process.rlimits": [{"type": "RLIMIT_FLY", "soft": 1, "hard": 1}]},
     "config.json: process.rlimits[0].type: 'RLIMIT_FLY': not one of RLIMIT_AS"),
    ({"process.rlimits": [{"type": "nofile", "soft": 1, "hard": 1}]},
     "config.json: process.rlimits[0].type: 'nofile'"),
    ({"process.rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}] * 2},
     "config.json: process.rlimits[1].type: RLIMIT_NOFILE given twice"),
    ({"process.rlimits": [{"type": "RLIMIT_NOFILE", "soft": 2, "hard": 1}]},
     "config.json: process.rlimits[0]: RLIMIT_NOFILE: soft 2 is above hard 1"),
    ({"process.rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2**64}]},
     "config.json: process.rlimits[0].hard: must be an integer in 0..18446744073709551615"),
    ({"process.rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1}]},
     "config.json: process.rlimits[0].soft: required"),
    ({"process.rlimits": {"RLIMIT_NOFILE": 1}}, "config.json: process.rlimits: must be a list"),
    ({"process.oomScoreAdj": 1001}, "config.json: process.oomScoreAdj: must be an integer in "
                                    "-1000..1000"),
    ({"process.noNewPrivileges": "true"}, "config.json: process.noNewPrivileges: must be true"),
    ({"hostname": 5}, "config.json: hostname: must be a string, not a number"),
    ({"hostname": "a\0b"}, "config.json: hostname: 'a\\x00b': contains NUL"),
    ({"hostname": "\ud800"}, "config.json: hostname: '\\ud800': not valid Unicode"),
    ({"mounts": {"/proc": {}}}, "config.json: mounts: must be a list"),
    ({"mounts.3.destination": "dev/pts"},
     "config.json: mounts[3].destination: 'dev/pts': must be an absolute path"),
    ({"mounts.3.destination": DELETE}, "config.json: mounts[3].destination: required"),
    ({"mounts.1": "tmpfs"}, "config.json: mounts[1]: must be an object, not a string"),
    ({"mounts.0.options": "ro"}, "config.json: mounts[0].options: must be a list of strings"),
    ({"mounts.0.source": ["proc"]}, "config.json: mounts[0].source: must be a string"),
    ({"mounts.0.uidMappings": [{"containerID": 0, "hostID": 0, "size": 0}]},
     "config.json: mounts[0].uidMappings[0].size: must be an integer in 1.."),
    ({"annotations": {"a": 1}}, "config.json: annotations['a']: must be a string"),
    ({"annotations": {"": "x"}}, "config.json: annotations: a name is empty"),
    ({"annotations": ["a=b"]}, "config.json: annotations: must be an object"),
    ({"hooks": []}, "config.json: hooks: must be an object"),
    ({"hooks": {"prestart": [{"path": "hook"}]}},
     "config.json: hooks.prestart[0].path: 'hook': must be an absolute path"),
    ({"hooks": {"poststop": [{"path": "/h", "timeout": 0}]}},
     "config.json: hooks.poststop[0].timeout: must be an integer in 1.."),
    ({"hooks": {"startContainer": [{"path": "/h", "args": [1]}]}},
     "config.json: hooks.startContainer[0].args[0]: must be a string"),
    ({"linux": "yes"}, "config.json: linux: must be an object"),
    ({"linux.namespaces.1": {"type": "net"}},
     "config.json: linux.namespaces[1].type: 'net': not one of pid, network"),
    ({"linux.namespaces.2": {"type": "pid"}}, "config.json: linux.namespaces[2].type: pid given"),
    ({"linux.namespaces.1": {"type": "network", "path": "netns"}},
     "config.json: linux.namespaces[1].path: 'netns': must be an absolute path"),
    ({"linux.namespaces.0": {}}, "config.json: linux.namespaces[0].type: required"),
    ({"linux.uidMappings": [{"containerID": 0, "hostID": 1, "size": 0}]},
     "config.json: linux.uidMappings[0].size: must be an integer in 1..4294967295"),
    ({"linux.gidMappings": [{"containerID": 2**32, "hostID": 1, "size": 1}]},
     "config.json: linux.gidMappings[0].containerID: must be an integer"),
    ({"linux.uidMappings": [{"containerID": 0, "hostID": 2**32 - 10, "size": 11}]},
     "config.json: linux.uidMappings[0]: 0+11 or 4294967286+11 ends beyond 32 bits"),
    ({"linux.uidMappings": [{"containerID": 0, "size": 1}]},
     "config.json: linux.uidMappings[0].hostID: required"),
    ({"linux.maskedPaths": ["/proc/kcore", "proc/keys"]},
     "config.json: linux.maskedPaths[1]: 'proc/keys': must be an absolute path"),
    ({"linux.readonlyPaths": "/proc/sys"}, "config.json: linux.readonlyPaths: must be a list"),
    ({"linux.sysctl": {"net.x": 1}}, "config.json: linux.sysctl['net.x']: must be a string"),
    ({"linux.rootfsPropagation": "recursive"},
     "config.json: linux.rootfsPropagation: 'recursive': not one of shared"),
    ({"linux.cgroupsPath": ["/a"]}, "config.json: linux.cgroupsPath: must be a string"),
    ({"linux.resources": []}, "config.json: linux.resources: must be an object"),
    ({"linux.resources.memory": {"limit": -2}},
     "config.json: linux.resources.memory.limit: must be an integer in -1.."),
    ({"linux.resources.memory": {"limit": 1.5e9}},
     "config.json: linux.resources.memory.limit: must be an integer"),
    ({"linux.resources.memory": {"limit": 2**30, "swap": 2**29}},
     "config.json: linux.resources.memory.swap: 536870912 is below memory.limit"),
    ({"linux.resources.cpu": {"quota": -5}},
     "config.json: linux.resources.cpu.quota: must be an integer in -1.."),
    ({"linux.resources.cpu": {"cpus": "0-a"}},
     "config.json: linux.resources.cpu.cpus: '0-a': must be a list such as 0-3,6"),
    ({"linux.resources.pids": {"limit": "10"}},
     "config.json: linux.resources.pids.limit: must be an integer"),
    ({"linux.resources.devices.0": {"allow": False, "access": "rwx"}},
     "config.json: linux.resources.devices[0].access: 'rwx': letters of r, w, m only"),
    ({"linux.resources.devices.0": {"access": "rwm"}},
     "config.json: linux.resources.devices[0].allow: required"),
    ({"linux.resources.devices.0": {"allow": True, "type": "u"}},
     "config.json: linux.resources.devices[0].type: 'u': not one of a, c, b"),
    ({"linux.resources.devices.0": {"allow": True, "major": -2}},
     "config.json: linux.resources.devices[0].major: must be an integer in -1.."),
    ({"linux.resources.unified": {"memory.max": 5}},
     "config.json: linux.resources.unified['memory.max']: must be a string"),
    ({"linux.resources.blockIO": "heavy"},
     "config.json: linux.resources.blockIO: must be an object"),
    ({"linux.resources.hugepageLimits": {}},
     "config.json: linux.resources.hugepageLimits: must be a list"),
    ({"linux.devices": [{"path": "/dev/x", "type": "x", "major": 1, "minor": 1}]},
     "config.json: linux.devices[0].type: 'x': not one of c, b, u, p"),
    ({"linux.devices": [{"path": "/dev/x", "type": "c", "minor": 1}]},
     "config.json: linux.devices[0].major: required for a device of type c"),
    ({"linux.devices": [{"path": "dev/x", "type": "b", "major": 8, "minor": 0}]},
     "config.json: linux.devices[0].path: 'dev/x': must be an absolute path"),
    ({"linux.devices": [{"path": "/dev/x", "type": "c", "major": 1, "minor": 1, "uid": -1}]},
     "config.json: linux.devices[0].uid: must be an integer"),
    ({"linux.seccomp.defaultAction": DELETE}, "config.json: linux.seccomp.defaultAction: required"),
    ({"linux.seccomp.architectures": "x86_64"},
     "config.json: linux.seccomp.architectures: must be a list of strings"),
    ({"linux.seccomp.syscalls.0.names": []},
     "config.json: linux.seccomp.syscalls[0].names: must be a non-empty list of strings"),
    ({"linux.seccomp.syscalls.1.action": 0},
     "config.json: linux.seccomp.syscalls[1].action: must be a string"),
    ({"linux.seccomp.syscalls.2.args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]},
     "config.json: linux.seccomp.syscalls[2].args[0].index: must be an integer in 0..5"),
    ({"linux.seccomp.syscalls.2.args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]},
     "config.json: linux.seccomp.syscalls[2].args[0].value: must be an integer"),
    ({"linux.seccomp.syscalls.2.args": [{"index": 0, "value": 1}]},
     "config.json: linux.seccomp.syscalls[2].args[0].op: required"),
    ({"linux.personality": "LINUX32"}, "config.json: linux.personality: must be an object"),
]


@pytest.mark.parametrize("changes, message", REFUSED,
                         ids=[next(iter(c)) + f"#{i}" for i, (c, _) in enumerate(REFUSED)])
def test_refusals_name_the_field(changes, message):
    assert refusal(config(**changes)).startswith(message)


def test_data_that_is_not_an_object_is_refused():
    assert refusal(["ociVersion"]) == "config.json: must be an object, not a list"


# ---- a process on its own (exec) ---------------------------------------------------------------

def test_parse_process_names_fields_under_where():
    p = oci.parse_process({"args": ["sh"], "cwd": "/", "env": ["A=1"]})
    assert p == OciProcess(args=("sh",), cwd="/", env=(("A", "1"),))
    with pytest.raises(SetupError, match=r"^process\.args: must be a non-empty list"):
        oci.parse_process({"cwd": "/"})
    with pytest.raises(SetupError, match=r"^exec\.cwd: required$"):
        oci.parse_process({"args": ["sh"]}, where="exec")
    with pytest.raises(SetupError, match=r"^process: must be an object"):
        oci.parse_process("sh")  # type: ignore[arg-type]


def test_load_process(tmp_path):
    exec_process = {"terminal": True, "consoleSize": {"height": 40, "width": 120},
                    "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
                    "args": ["/bin/sh", "-l"], "env": ["TERM=xterm"], "cwd": "/home/u",
                    "capabilities": {"bounding": ["CAP_KILL"]}, "noNewPrivileges": True,
                    "apparmorProfile": "containers-default-0.50.1"}
    path = tmp_path / "process.json"
    path.write_text(json.dumps(exec_process))
    p = oci.load_process(str(path))
    assert p.args == ("/bin/sh", "-l") and p.console_size == (40, 120) and p.terminal
    assert (p.uid, p.additional_gids, p.cwd) == (1000, (5,), "/home/u")
    assert p.capabilities.bounding == ("kill",) and p.no_new_privileges
    # The engine names the file: a link to it (as /proc/self/fd/N is) is followed.
    (tmp_path / "link").symlink_to(path)
    assert oci.load_process(str(tmp_path / "link")) == p

    path.write_text(json.dumps(dict(exec_process, args=[])))
    with pytest.raises(SetupError) as caught:
        oci.load_process(str(path))
    assert str(caught.value) == "process.json: args: must be a non-empty list of strings"
    path.write_text(json.dumps(dict(exec_process, user={"uid": "0"})))
    with pytest.raises(SetupError, match=r"^process\.json: user\.uid: must be an integer"):
        oci.load_process(str(path))
    path.write_text("[]")
    with pytest.raises(SetupError, match=r"/process\.json: must be a JSON object, not a list$"):
        oci.load_process(str(path))


# ---- load_bundle: the file, read safely --------------------------------------------------------

def bundle(tmp_path, data=None, root="rootfs"):
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    text = data if isinstance(data, (str, bytes)) else json.dumps(
        data or config(**{"root.path": root}))
    target = tmp_path / "config.json"
    target.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(tmp_path)


def load_refused(path: str) -> str:
    with pytest.raises(SetupError) as caught:
        oci.load_bundle(path)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_load_bundle_resolves_a_relative_root(tmp_path, monkeypatch):
    c = oci.load_bundle(bundle(tmp_path))
    assert c.root_path == str(tmp_path / "rootfs") and c.raw["root"]["path"] == "rootfs"
    assert oci.load_bundle(bundle(tmp_path, root=str(tmp_path / "rootfs"))).root_path == \
        str(tmp_path / "rootfs")
    monkeypatch.chdir(tmp_path.parent)  # a relative bundle is taken from the cwd
    assert oci.load_bundle(tmp_path.name).root_path == str(tmp_path / "rootfs")


def test_load_bundle_needs_the_root_to_be_a_directory(tmp_path):
    assert load_refused(bundle(tmp_path, root="missing")) == \
        f"config.json: root.path: {tmp_path}/missing: No such file or directory"
    (tmp_path / "file").write_text("")
    assert load_refused(bundle(tmp_path, root="file")) == \
        f"config.json: root.path: {tmp_path}/file: not a directory"


def test_load_bundle_refuses_a_symlinked_config(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    bundle(real)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "rootfs").mkdir()
    (tmp_path / "b" / "config.json").symlink_to(real / "config.json")
    assert load_refused(str(tmp_path / "b")).endswith(
        "config.json: a symbolic link (refused: it could point anywhere)")


def test_load_bundle_refuses_what_is_not_a_small_json_object_file(tmp_path):
    where = bundle(tmp_path)
    target = tmp_path / "config.json"
    with open(target, "wb") as f:
        f.truncate(oci.MAX_FILE + 1)
    assert load_refused(where).endswith("config.json: larger than 4 MiB")
    target.write_text('["not", "an", "object"]')
    assert load_refused(where).endswith("config.json: must be a JSON object, not a list")
    target.write_bytes(b'{"ociVersion": "1.0.0", "hostname": "\xff"}')
    assert load_refused(where).endswith("config.json: not UTF-8 (at byte 37)")
    target.write_text('{"ociVersion": ')
    assert "config.json: not JSON: Expecting value" in load_refused(where)
    target.write_text('{"ociVersion": "1.0.0", "process": {"oomScoreAdj": NaN}}')
    assert "not JSON: NaN is not a JSON number" in load_refused(where)
    target.write_text("[" * 100000 + "]" * 100000)
    assert load_refused(where).endswith("JSON nested too deeply")
    target.unlink()
    assert load_refused(where).endswith("config.json: No such file or directory")
    os.mkfifo(target)  # opened without blocking, then refused
    assert load_refused(where).endswith("config.json: not a regular file")
    target.unlink()
    target.mkdir()
    assert load_refused(where).endswith("config.json: not a regular file")


def test_load_bundle_names_fields_like_parse(tmp_path):
    where = bundle(tmp_path, config(**{"process.args": [], "root.path": "rootfs"}))
    assert load_refused(where) == "config.json: process.args: must be a non-empty list of strings"


# ---- nothing but SetupError, whatever the values -----------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["/", "/a", "rw", "ro", "bind", "CAP_KILL", "RLIMIT_NOFILE", "pid", "c"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "path", "names", "action", "allow", "limit", "destination",
                         "options", "soft", "hard", "x"]) | st.text(max_size=4), inner,
        max_size=4),
    max_leaves=12)
FIELDS = [
    "ociVersion", "root", "root.path", "root.readonly", "process", "process.args",
    "process.env", "process.cwd", "process.user", "process.user.uid", "process.user.umask",
    "process.user.additionalGids", "process.consoleSize", "process.capabilities",
    "process.capabilities.bounding", "process.rlimits", "process.rlimits.0",
    "process.oomScoreAdj", "hostname", "mounts", "mounts.0", "mounts.5.options",
    "mounts.0.uidMappings", "annotations", "hooks", "hooks.prestart", "linux",
    "linux.namespaces", "linux.namespaces.1", "linux.uidMappings", "linux.devices",
    "linux.sysctl", "linux.resources", "linux.resources.memory", "linux.resources.cpu",
    "linux.resources.devices", "linux.resources.devices.0", "linux.resources.unified",
    "linux.resources.blockIO", "linux.resources.hugepageLimits", "linux.seccomp",
    "linux.seccomp.syscalls", "linux.seccomp.syscalls.2.args", "linux.maskedPaths",
    "linux.rootfsPropagation", "linux.personality",
]


@settings(max_examples=400, deadline=None)
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_any_value_in_any_field_is_parsed_or_refused_in_one_line(field, value):
    data = copy.deepcopy(PODMAN)
    set_at(data, field, value)
    try:
        oci.parse(data, BUNDLE)
    except SetupError as e:
        assert str(e).startswith("config.json: ") and "\n" not in str(e)


@settings(max_examples=200, deadline=None)
@given(value=JSON)
def test_any_process_object_is_parsed_or_refused(value):
    try:
        oci.parse_process(value)
    except SetupError as e:
        assert "\n" not in str(e)
