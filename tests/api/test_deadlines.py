"""The deadline watchdog: it cuts a request in flight at its deadline, also one due before
the moment it meant to look next, and never one that finished."""

from __future__ import annotations

import time
from collections.abc import Callable

from daemon.api.deadlines import Cut, InFlight, Watchdog


def _wait_for(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.01)
    return False


def test_a_request_due_sooner_than_the_one_watched_is_cut_at_its_own_deadline() -> None:
    """The thread sleeps until the earliest deadline it knows; a request added later with
    an earlier deadline wakes it, and is cut then, not when the other one is due."""
    watchdog = Watchdog()
    later = InFlight(time.monotonic() + 60)
    watchdog.watch(later)  # the thread now sleeps for about a minute
    time.sleep(0.1)
    sooner = InFlight(time.monotonic() + 0.2)
    started = time.monotonic()
    watchdog.watch(sooner)
    assert _wait_for(lambda: sooner.cut_by is not None)
    assert sooner.cut_by == Cut.DEADLINE
    assert time.monotonic() - started < 2.0
    assert later.cut_by is None


def test_a_request_that_finished_is_never_cut() -> None:
    """finish() and forget() before the deadline: nothing is cut when it passes."""
    watchdog = Watchdog()
    done = InFlight(time.monotonic() + 0.2)
    watchdog.watch(done)
    done.finish()
    watchdog.forget(done)
    still = InFlight(time.monotonic() + 0.4)
    watchdog.watch(still)
    assert _wait_for(lambda: still.cut_by is not None)
    assert done.cut_by is None
