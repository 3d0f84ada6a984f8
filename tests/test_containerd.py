"""Real containerd running an image through its runc shim (containerd-shim-runc-v2) with
hyjail-oci as the runc binary, driven by `ctr` (issue 18's done-when).

The containerd here is the test's own: a daemon on a socket, root, state and config in a
temporary directory (with the CRI plugin off: no Kubernetes, no CNI), killed with its
shims at the end; its image is a docker archive of a busybox root, made by podman (no
registry). The runc shim keeps its runtime's state under /run/containerd/runc/NAMESPACE,
removed with the test's namespace.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from hyjail import cgroups

from conftest import needs_jails

pytestmark = [*needs_jails, pytest.mark.skipif(
    shutil.which("containerd") is None or shutil.which("ctr") is None
    or shutil.which("podman") is None,
    reason="containerd, ctr or podman is not installed (script/bootstrap installs them)")]
OCI = os.path.join(os.path.dirname(sys.executable), "hyjail-oci")
NAMESPACE = f"hyjail-test-{os.getpid()}"
IMAGE = "localhost/hyjail-busybox:ctr"


class Containerd:
    def __init__(self, top: str):
        self.top = top
        os.makedirs(top)
        self.host_had_run_dir = os.path.exists("/run/containerd")
        self.socket = os.path.join(top, "containerd.sock")
        config = os.path.join(top, "config.toml")
        with open(config, "w") as f:
            f.write(f"""version = 2
root = "{top}/root"
state = "{top}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
""")
        self.log = os.path.join(top, "containerd.log")
        with open(self.log, "w") as log:
            self.daemon = subprocess.Popen(["containerd", "--config", config], stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while self.ctr("version").returncode != 0:
            assert self.daemon.poll() is None and time.monotonic() < deadline, self.logged()
            time.sleep(0.1)

    def logged(self) -> str:
        with open(self.log) as f:
            return f.read()

    def ctr(self, *args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        return subprocess.run(["ctr", "--address", self.socket, "--namespace", NAMESPACE,
                               *args], text=True, timeout=timeout, **kwargs)

    def close(self) -> None:
        for task in self.ctr("tasks", "list", "-q").stdout.split():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task)
            self.ctr("tasks", "delete", "--force", task)
        for container in self.ctr("containers", "list", "-q").stdout.split():
            self.ctr("containers", "delete", container)
        self.ctr("images", "remove", IMAGE)
        self.daemon.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.daemon.wait(timeout=20)
        if self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()
        for entry in os.listdir("/proc"):  # a shim left running is the test's too
            if entry.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                    if self.top.encode() in f.read():
                        os.kill(int(entry), signal.SIGKILL)
        with open("/proc/self/mounts") as f:
            for point in reversed([line.split()[1] for line in f]):
                if point.startswith(self.top):
                    subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(os.path.join("/run/containerd/runc", NAMESPACE), ignore_errors=True)
        cgroups.remove_empty_groups(NAMESPACE)  # its containers' cgroupsPath: /NAMESPACE/ID
        if not self.host_had_run_dir:  # the shims' sockets and fifos, made for us alone
            shutil.rmtree("/run/containerd", ignore_errors=True)


@pytest.fixture(scope="module")
def containerd():
    from hyjail.rootfs import busybox
    # Short paths: podman refuses a run root over 50 characters, and containerd's socket
    # paths must fit a sockaddr_un.
    top = pathlib.Path(tempfile.mkdtemp(prefix="hj-ctr-"))
    root = busybox.build(str(top / "rootfs"))
    archive = str(top / "image.tar")
    podman = ["podman", "--root", str(top / "podman"), "--runroot", str(top / "podman-run")]
    tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
    made = subprocess.run([*podman, "import", "-", IMAGE], stdin=tar.stdout,
                          capture_output=True, text=True, timeout=120)
    tar.stdout.close()
    tar.wait()
    assert made.returncode == 0, made.stderr
    saved = subprocess.run([*podman, "save", "--format", "docker-archive", "-o", archive,
                            IMAGE], capture_output=True, text=True, timeout=120)
    subprocess.run([*podman, "system", "reset", "--force"], capture_output=True, timeout=120)
    assert saved.returncode == 0, saved.stderr
    daemon = Containerd(str(top / "c"))
    try:
        imported = daemon.ctr("images", "import", archive)
        assert imported.returncode == 0, imported.stderr
        yield daemon
    finally:
        daemon.close()
        shutil.rmtree(top, ignore_errors=True)


def test_ctr_runs_an_image_through_the_shim(containerd):
    done = containerd.ctr("run", "--rm", "--runc-binary", OCI, IMAGE, "c1", "/bin/sh", "-c",
                          "echo hello from $(hostname); ls /sys/class/net; exit 4")
    assert done.returncode == 4, done.stderr
    assert done.stdout.split() == ["hello", "from", "c1", "lo"], done.stdout


def test_ctr_exec_and_kill(containerd):
    started = containerd.ctr("run", "--detach", "--runc-binary", OCI, IMAGE, "c2", "sleep",
                             "60")
    assert started.returncode == 0, started.stderr
    try:
        done = containerd.ctr("tasks", "exec", "--exec-id", "e1", "c2", "/bin/sh", "-c",
                              "echo exec; id -u")
        assert done.stdout.split() == ["exec", "0"], done.stderr
        assert "RUNNING" in containerd.ctr("tasks", "list").stdout
        assert containerd.ctr("tasks", "kill", "--signal", "SIGKILL", "c2").returncode == 0
        deadline = time.monotonic() + 20
        while "STOPPED" not in containerd.ctr("tasks", "list").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        containerd.ctr("tasks", "delete", "--force", "c2")
        containerd.ctr("containers", "delete", "c2")
