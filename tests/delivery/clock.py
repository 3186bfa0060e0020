"""A virtual clock for the retry policy and the auth gate: waits take milliseconds."""

from __future__ import annotations

import threading

from daemon.delivery.retry import Waitable

#: Real seconds a virtual wait lasts: long enough for another thread to notify it.
REAL_SLICE_SECONDS = 0.001


class VirtualClock:
    """Time that passes only when someone waits: a wait that nobody cuts short (a notify,
    a set event) within :data:`REAL_SLICE_SECONDS` lets its whole timeout pass at once."""

    def __init__(self, wall: float = 1_800_000_000.0) -> None:
        self._lock = threading.Lock()
        self._now = 0.0
        self._wall = wall

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def time(self) -> float:
        with self._lock:
            return self._wall + self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def wait(self, waitable: Waitable, seconds: float) -> bool:
        if waitable.wait(REAL_SLICE_SECONDS):
            return True
        self.advance(seconds)
        return False
