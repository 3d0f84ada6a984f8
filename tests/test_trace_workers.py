"""The trace tracer's workers (`hyjail.trace.tracer._Workers`): Deferred calls run on threads
kept for the next call, and a call that blocks never holds up another."""

from __future__ import annotations

import threading
import time

from hyjail.trace.sockets import Deferred
from hyjail.trace.tracer import _Workers


def _pool():
    done: dict[int, int] = {}
    finished = threading.Condition()

    def run(tid: int, deferred: Deferred) -> None:
        result = deferred.work()
        with finished:
            done[tid] = result
            finished.notify_all()

    def wait_for(tid: int) -> int:
        with finished:
            assert finished.wait_for(lambda: tid in done, timeout=10), f"call {tid} never ran"
            return done[tid]
    return _Workers(run), wait_for


def test_a_blocked_call_does_not_hold_up_the_next():
    workers, wait_for = _pool()
    release = threading.Event()
    workers.submit(1, Deferred(lambda: 1 if release.wait(10) else -1))
    workers.submit(2, Deferred(lambda: 2))
    assert wait_for(2) == 2  # while call 1 still blocks
    release.set()
    assert wait_for(1) == 1


def test_workers_are_kept_for_the_next_calls():
    workers, wait_for = _pool()
    threads: set[int] = set()
    for tid in range(1, 50):
        workers.submit(tid, Deferred(lambda: threading.get_ident()))
        threads.add(wait_for(tid))
        deadline = time.monotonic() + 10
        while workers._idle == 0 and time.monotonic() < deadline:  # back from its call
            time.sleep(0.001)
    assert len(threads) == 1  # one call at a time: one thread, reused
