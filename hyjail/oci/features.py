"""What `hyjail-oci features` reports (the runtime spec's features document) and the
config.json `hyjail-oci spec` writes.

Owns the two documents, read from the tables the mapping itself uses
(`hyjail.oci.mapping`), so what is advertised is what is accepted.
"""

from __future__ import annotations

from hyjail import apparmor
from hyjail.oci import hooks, mapping
from hyjail.oci.state import OCI_VERSION

ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
           "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRAP")
OPERATORS = ("SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
             "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE")
ARCHES = ("SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32")


def document() -> dict:
    from hyjail import __version__
    caps = sorted(f"CAP_{name.upper()}" for name in mapping.GRANTABLE_CAPS)
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": list(hooks.HELD),
        "mountOptions": sorted(mapping.IGNORED_OPTIONS | {"ro", "noexec"}
                               | {f"{key}=" for key in mapping.TMPFS_DATA}),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False},
            "seccomp": {"enabled": True, "actions": list(ACTIONS), "operators": list(OPERATORS),
                        "archs": list(ARCHES)},
            "apparmor": {"enabled": apparmor.enabled()},
            "selinux": {"enabled": False},
        },
        "annotations": {"org.hyjail.version": __version__,
                        "org.hyjail.backends": "ns,trace,hybrid"},
    }


DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]  # runc spec's


def default_config(rootless: bool = False) -> dict:
    """runc spec's starting point, as hyjail runs it: sh in a rootfs/ beside config.json,
    loopback only."""
    namespaces = [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount")]
    config = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {kind: list(DEFAULT_CAPS)
                             for kind in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "hyjail",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/sched_debug", "/sys/firmware",
                            "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1 << 30,
                                           "size": 65536}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 1 << 30,
                                           "size": 65536}]
    return config
