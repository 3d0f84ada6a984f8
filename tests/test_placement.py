"""A jail's first process (or one entering it) is moved into the jail's cgroups from the
host side while it sets itself up (`foreground.place_in_cgroups`); it goes on only after
PLACED, and a placement that fails ends it with the failure named."""

from __future__ import annotations

import os

import pytest

from hyjail import cgroups
from hyjail.errors import EXIT_SETUP, SetupError
from hyjail.foreground import place_in_cgroups, wait_ready
from hyjail.limits import Limits
from hyjail.ns import control
from hyjail.ns.handshake import wait_placed

JID = 9377  # a group of the test's own, removed at its end


@pytest.fixture
def groups():
    paths = cgroups.create(JID, Limits())
    try:
        yield paths
    finally:
        cgroups.remove(paths)


def _child(body) -> tuple[int, object]:
    ours, theirs = control.pair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        try:
            body(theirs)
        finally:
            os._exit(0)
    theirs.close()
    return pid, ours


def _groups_of(pid: int) -> set[str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return {line.rstrip("\n").split(":", 2)[2] for line in f}


def test_the_child_goes_on_in_the_groups_only_after_placed(groups):
    def body(channel):
        wait_placed(channel, groups)
        channel.send(b"in " + " ".join(sorted(_groups_of(os.getpid()))).encode())
        channel.recv(16)
    pid, channel = _child(body)
    try:
        place_in_cgroups(pid, channel, groups)
        said = channel.recv(4096).decode()
        assert said.startswith("in ") and f"/hyjail/{JID}" in said
        channel.send(b"bye")
    finally:
        assert os.waitpid(pid, 0)[1] == 0


def test_a_failed_placement_is_named_and_the_child_gives_up(groups):
    pid, channel = _child(lambda channel: wait_placed(channel, groups))
    try:
        with pytest.raises(SetupError, match=r"cgroup .*/hyjail/9377/gone/cgroup.procs"):
            place_in_cgroups(pid, channel, [*groups, os.path.join(groups[0], "gone")])
    finally:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == EXIT_SETUP


def test_a_child_that_failed_first_has_its_own_failure_reported(groups):
    def body(channel):
        control.send_fail(channel, 126, "jail setup: it went wrong first")
        os._exit(126)
    pid, channel = _child(body)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    try:
        with pytest.raises(SetupError, match="it went wrong first") as raised:
            place_in_cgroups(pid, channel, groups)
        assert raised.value.exit_code == 126
    finally:
        os.waitpid(pid, 0)


def test_a_child_that_failed_while_being_placed_has_its_failure_reported(groups):
    """It sent FAIL and left with PLACED unread: the kernel reports the reset before the
    FAIL, which is still the one reported (not a ConnectionResetError)."""
    go_read, go_write = os.pipe()

    def body(channel):
        os.close(go_write)
        control.send_fail(channel, 125, "jail setup: refused before placed")
        os.read(go_read, 1)
        os._exit(125)
    pid, channel = _child(body)
    os.close(go_read)
    try:
        place_in_cgroups(pid, channel, groups)  # PLACED is sent: it is still there
        os.close(go_write)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # gone, PLACED unread
        with pytest.raises(SetupError, match="refused before placed"):
            wait_ready(channel)
    finally:
        os.waitpid(pid, 0)
