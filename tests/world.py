"""A network of the test's own (SPEC section 4): network namespaces that play the host, a
machine on its LAN and a server beyond it (the "internet"), linked by veths, with hyjail run
inside the "host". Everything is in 10.77.0.0/16 and fd77::/16; nothing of the real host's
network is touched, and every namespace (with what runs in it) is removed at the end.

    host  uplink 10.77.100.1/24, fd77:100::1/64 ---- lan0 10.77.100.2/24 (LAN machine "lan")
          wan    10.77.200.1/24               ---- inet0 10.77.200.2/24 (server "inet")
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time

from hyjail.check.jailrun import HYJAIL  # the installed command, as users run it

LAN, LAN_HOST, LAN_MACHINE = "10.77.100.0/24", "10.77.100.1", "10.77.100.2"
LAN6_HOST = "fd77:100::1"
WAN_HOST, INTERNET = "10.77.200.1", "10.77.200.2"
_count = itertools.count(1)


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)


class World:
    def __init__(self) -> None:
        tag = f"hjworld{os.getpid() % 100000}x{next(_count)}"
        self.host, self.lan, self.inet = (f"{tag}{role}" for role in ("h", "l", "i"))
        self._made: list[str] = []

    # ---- making and unmaking ------------------------------------------------------------

    def __enter__(self) -> World:
        try:
            for name in (self.host, self.lan, self.inet):
                _ip("netns", "add", name)
                self._made.append(name)
                self.sh(name, "ip link set lo up")
            self._link("uplink", self.host, "lan0", self.lan)
            self._link("wan", self.host, "inet0", self.inet)
            self.sh(self.host, f"ip addr add {LAN_HOST}/24 dev uplink; "
                               f"ip addr add {LAN6_HOST}/64 dev uplink nodad; "
                               f"ip addr add {WAN_HOST}/24 dev wan")
            self.sh(self.lan, f"ip addr add {LAN_MACHINE}/24 dev lan0; "
                              f"ip addr add fd77:100::2/64 dev lan0 nodad")
            self.sh(self.inet, f"ip addr add {INTERNET}/24 dev inet0")
        except BaseException:
            self.close()
            raise
        return self

    def _link(self, near: str, near_ns: str, far: str, far_ns: str) -> None:
        _ip("link", "add", near, "netns", near_ns, "type", "veth", "peer", "name", far,
            "netns", far_ns)
        self.sh(near_ns, f"ip link set {near} up")
        self.sh(far_ns, f"ip link set {far} up")

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        """Every process left in the world's namespaces (a lingering network helper too)
        killed, then the namespaces, with every interface and rule in them, deleted."""
        for name in self._made:
            for turn in range(60):  # SIGTERM first: a network helper removes its socket
                pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                      text=True).stdout.split()
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGTERM if turn < 20 else signal.SIGKILL)
                time.sleep(0.05)
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._made.clear()

    # ---- acting in it ---------------------------------------------------------------------

    @staticmethod
    def enter(where: str) -> list[str]:
        """argv's prefix that runs a command in a namespace of the world's: its network
        only (nsenter; `ip netns exec` would also remount /sys, and hide the cgroups)."""
        return ["nsenter", f"--net=/var/run/netns/{where}"]

    def sh(self, where: str, script: str, check: bool = True, timeout: float = 60
           ) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.enter(where), "/bin/sh", "-c", script],
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"in {where}: {script}: {done.stderr.strip()}")
        return done

    def hyjail(self, *args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        """hyjail, run on the world's host."""
        return self.run(*HYJAIL, *args, timeout=timeout, **kwargs)

    def run(self, *argv: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        """A command on the world's host (argv may start with enter(): it is not repeated)."""
        if list(argv[:2]) != self.enter(self.host):
            argv = (*self.enter(self.host), *argv)
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              **kwargs)

    @staticmethod
    def hyjail_argv(*args: str) -> list[str]:
        return [*HYJAIL, *args]

    def popen(self, where: str, *argv: str, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen([*self.enter(where), *argv], text=True, **kwargs)

    def fetch(self, where: str, url: str, timeout: float = 10) -> str:
        """What a machine of the world gets from url (busybox wget), or '' if nothing."""
        # (timeout(1), not wget's -T, which makes Debian's busybox 1.35 crash)
        done = self.sh(where, f"timeout {int(timeout)} busybox wget -q -O - {url}", check=False,
                       timeout=timeout + 20)
        return done.stdout if done.returncode == 0 else ""
