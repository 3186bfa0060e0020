"""The retry policy: backoff with jitter, ``Retry-After``, the give-up clock, and the
credentials gate.

Transient errors (network, timeouts, 429, 5xx) are retried until ``retry.give_up_after``
seconds have passed since the file's first failed attempt. 401/403 fail no file: the
:class:`AuthGate` closes, one thread probes the API with backoff while every other API call
waits, and time spent behind the closed gate does not count towards giving up.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from daemon.errors import AuthError, FileRejected, RequestRejected, TransientError

T = TypeVar("T")


class Stopped(Exception):
    """The daemon is stopping: leave the file where it is, it will be resumed."""


class AuthRefused(Exception):
    """``--once``: the API refused the credentials; stop the run (exit 3)."""

    def __init__(self, error: AuthError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter."""

    initial_delay: float
    """Seconds before the first retry."""
    max_delay: float
    """The longest wait between two attempts, in seconds."""

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        base = min(self.max_delay, self.initial_delay * 2.0 ** max(0, attempt - 1))
        # "Equal jitter": never less than half the base, so a crowd of retries spreads
        # out without any of them coming back almost at once.
        jittered = base / 2 + random.uniform(0, base / 2)  # noqa: S311 - not crypto
        if retry_after is not None and retry_after > 0:
            return retry_after
        return jittered


class AuthGate:
    """Open while the API accepts the credentials; closed after a 401/403."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = True
        self._prober: int | None = None
        self._wakeups = 0
        self.last_error: AuthError | None = None

    @property
    def is_open(self) -> bool:
        with self._cond:
            return self._open

    def close(self, error: AuthError) -> bool:
        """Close the gate; True when the caller becomes the one thread that probes."""
        with self._cond:
            self.last_error = error
            was_open = self._open
            self._open = False
            if self._prober is None:
                self._prober = threading.get_ident()
                return True
            return self._prober == threading.get_ident() and not was_open

    def open(self) -> bool:
        """The credentials work (again); True when the gate was closed."""
        with self._cond:
            was_closed = not self._open
            self._open = True
            self._prober = None
            self.last_error = None
            self._cond.notify_all()
            return was_closed

    def wake(self) -> None:
        """New credentials arrived (reload): cut the prober's wait short."""
        with self._cond:
            self._wakeups += 1
            self._cond.notify_all()

    def wait_open(self, stop: threading.Event, poll: float = 0.5) -> float:
        """Block until the gate is open; return the seconds waited. Raises :class:`Stopped`."""
        started = time.monotonic()
        with self._cond:
            while not self._open:
                if stop.is_set():
                    raise Stopped
                if self._prober is None:  # the prober gave up (stopped): take its place
                    self._prober = threading.get_ident()
                    break
                self._cond.wait(poll)
        return time.monotonic() - started

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        """The prober's wait: ends early on stop (raises) or on :meth:`wake`."""
        deadline = time.monotonic() + seconds
        with self._cond:
            seen = self._wakeups
            while (remaining := deadline - time.monotonic()) > 0 and self._wakeups == seen:
                if stop.is_set():
                    self._release_prober()
                    raise Stopped
                self._cond.wait(min(remaining, 0.5))

    def _release_prober(self) -> None:
        if self._prober == threading.get_ident():
            self._prober = None
            self._cond.notify_all()


@dataclass
class Attempts:
    """The retry state of one file, kept in the journal between runs."""

    count: int = 0
    """API attempts made so far."""
    first_failure: float | None = None
    """Wall-clock time of the first transient failure."""


class RetryPolicy:
    """Runs one API call with the full policy: transient retries, auth gate, give-up."""

    def __init__(
        self,
        backoff: Backoff,
        give_up_after: float,
        gate: AuthGate,
        stop: threading.Event,
        *,
        once: bool = False,
        on_retry: Callable[[int, float, Exception], None] | None = None,
        on_auth_failed: Callable[[AuthError], None] | None = None,
        on_auth_ok: Callable[[], None] | None = None,
    ) -> None:
        self.backoff = backoff
        self.give_up_after = give_up_after
        self.gate = gate
        self.stop = stop
        self.once = once
        self.on_retry = on_retry
        self.on_auth_failed = on_auth_failed
        self.on_auth_ok = on_auth_ok

    def sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped

    def call(self, fn: Callable[[], T], attempts: Attempts) -> T:
        """``fn()`` until it succeeds, fails for good (:class:`FileRejected`) or we stop."""
        auth_failures = transient_failures = 0
        probing = False
        while True:
            if self.stop.is_set():
                raise Stopped
            if not probing:
                waited = self.gate.wait_open(self.stop)
                if attempts.first_failure is not None:
                    attempts.first_failure += waited  # waiting out a 401 does not count
            attempts.count += 1
            try:
                result = fn()
            except AuthError as error:
                attempts.count -= 1  # the file was not tried: the credentials were
                auth_failures += 1
                probing = self._auth_failed(error, auth_failures, attempts)
                continue
            except RequestRejected as error:
                self._auth_ok()
                raise FileRejected(error.reason, error.detail, error.status) from None
            except TransientError as error:
                self._auth_ok()
                probing = False
                transient_failures += 1
                self.sleep(self._retry_delay(error, transient_failures, attempts))
                continue
            self._auth_ok()
            return result

    def _auth_failed(self, error: AuthError, failures: int, attempts: Attempts) -> bool:
        """Close the gate; the one prober waits out its backoff. True for the prober."""
        if self.once:
            raise AuthRefused(error)
        started = time.monotonic()
        probing = self.gate.close(error)
        if probing:
            if failures == 1 and self.on_auth_failed:
                self.on_auth_failed(error)
            self.gate.sleep(self.backoff.delay(failures), self.stop)
        if attempts.first_failure is not None:
            attempts.first_failure += time.monotonic() - started
        return probing

    def _retry_delay(self, error: TransientError, failures: int, attempts: Attempts) -> float:
        """The wait before the next attempt, or :class:`FileRejected` when it is time to
        give up."""
        now = time.time()
        if attempts.first_failure is None:
            attempts.first_failure = now
        delay = self.backoff.delay(failures, error.retry_after)
        if now - attempts.first_failure + delay > self.give_up_after:
            raise FileRejected(
                "retries_exhausted",
                f"gave up after {attempts.count} attempts: {error}",
                error.status,
            )
        if self.on_retry:
            self.on_retry(attempts.count, delay, error)
        return delay

    def _auth_ok(self) -> None:
        if self.gate.open() and self.on_auth_ok:
            self.on_auth_ok()
