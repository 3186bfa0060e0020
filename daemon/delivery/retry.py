"""The retry policy: backoff with jitter, ``Retry-After``, the give-up clock, and the
gate that holds every file.

Transient errors (network, timeouts, 429, 5xx) are retried until ``retry.give_up_after``
seconds have passed since the file's first failed attempt: a failure after that gives the
file up, a failure before it is followed by another attempt. A reply that is the same for
every file fails no file: refused credentials (401/403) and a deployment mistake
(:class:`~daemon.errors.ApiMisconfigured`: a redirect, a wrong path, an untrusted
certificate) close the :class:`ApiGate` for that :class:`Hold`; one thread probes the API
with backoff while every other API call waits, and time spent behind the closed gate does
not count towards giving up. The gate opens when the API answers properly again.

Three extension points, each a small typed object rather than a bundle of callables:
:class:`RetryEvents` hears what the policy does to one file (the daemon journals and logs
it, ``send`` logs it), :class:`RunPolicy` says what a run does when it cannot go on (the
daemon waits, ``run --once`` and ``send`` stop), and :class:`Clock` is where the policy and
the gate read the time and wait (tests replace it, so retry paths run in milliseconds).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from daemon.errors import (
    ApiMisconfigured,
    AuthError,
    AuthRefused,
    FileRejected,
    RequestRejected,
    Stopped,
    TransientError,
)
from daemon.states import Reason

T = TypeVar("T")

#: While a file waits behind the closed gate, the time it waited is handed to
#: :meth:`RetryEvents.clock_moved` (the journal) at least this often, in seconds: a SIGKILL
#: loses at most this much of it.
CLOCK_SAVE_SECONDS = 10.0
#: A failure this close to ``give_up_after`` is at the deadline (a timer never fires to the
#: microsecond, and the give-up clock is wall-clock time), in seconds.
DEADLINE_TOLERANCE_SECONDS = 0.01
#: How often a thread waiting at the gate looks whether the run stops, in seconds.
GATE_POLL_SECONDS = 0.5


class Waitable(Protocol):
    """Something a thread can wait on: a :class:`threading.Event`, or a held
    :class:`threading.Condition`."""

    def wait(self, timeout: float | None = None) -> bool: ...


class Clock(Protocol):
    """Where the retry policy and the gate read the time and wait."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for waits)."""
        ...

    def time(self) -> float:
        """Wall-clock Unix time (the give-up clock, which survives restarts)."""
        ...

    def wait(self, waitable: Waitable, seconds: float) -> bool:
        """Wait on ``waitable`` for at most ``seconds``; what its ``wait`` returns."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time`, real waits."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def wait(self, waitable: Waitable, seconds: float) -> bool:
        return waitable.wait(seconds)


SYSTEM_CLOCK = SystemClock()


@dataclass(frozen=True)
class RunPolicy:
    """What a run does when it cannot go on with a file: the difference between the
    daemon (:data:`WATCH`) and a run that must end (:data:`ONCE`: ``run --once``, ``send``)."""

    stop_when_held: bool = False
    """True: what would close the gate ends the run instead: a 401/403 raises
    :class:`AuthRefused` (exit 3), a deployment mistake its
    :class:`~daemon.errors.ApiMisconfigured` (exit 2). False: the gate closes, one thread
    probes the API with backoff and every file waits until the API answers properly."""
    retry_unexpected_errors: bool = True
    """True: a file whose step hit an unexpected error (a bug, an odd OS error) is tried
    again later, with a growing wait. False: it stays claimed, with the rest of its
    conversation, for the next run (which then exits 1)."""


#: The daemon: wait for working credentials and a usable API, try broken files again later.
WATCH = RunPolicy()
#: ``run --once`` and ``send``: stop on refused credentials or a deployment mistake, leave
#: broken files claimed.
ONCE = RunPolicy(stop_when_held=True, retry_unexpected_errors=False)


class RetryEvents(Protocol):
    """What the retry policy tells about one file (the shape of stamina's hooks: each call
    receives everything it needs). Called on the thread that runs the file's step."""

    def retry_scheduled(self, attempts: Attempts, delay: float, error: TransientError) -> None:
        """After a failed attempt, before the wait of ``delay`` seconds. ``attempts.count``
        counts the attempt that failed; ``attempts.first_failure`` is set."""
        ...

    def auth_failed(self, error: AuthError) -> None:
        """The API refused the credentials: said once per closing of the gate (and again
        after a reload's new credentials are refused too), by the thread that probes."""
        ...

    def auth_restored(self) -> None:
        """The credentials work again: the gate opened."""
        ...

    def api_misconfigured(self, error: ApiMisconfigured) -> None:
        """``api.url`` (or the TLS trust) does not reach the API as it should: said once per
        distinct cause (endpoint, status or error, hint), and again after a reload, by the
        thread that probes."""
        ...

    def api_restored(self) -> None:
        """The API answers properly again (a success, its own error, a busy server): the
        hold for a deployment mistake ended."""
        ...

    def clock_moved(self, attempts: Attempts) -> None:
        """``attempts.first_failure`` moved forward by time spent behind the closed gate
        (which does not count towards giving up): keep it."""
        ...


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


class Hold(StrEnum):
    """Why the gate holds every file; each value is the log event that says so."""

    CREDENTIALS = "auth_failed"
    """The API refused the credentials (401/403)."""
    MISCONFIGURED = "api_misconfigured"
    """``api.url`` or the TLS trust does not reach the API as it should."""


#: What closes the gate: a reply that is the same for every file.
HoldError = AuthError | ApiMisconfigured


def hold_of(error: HoldError) -> Hold:
    """The :class:`Hold` that ``error`` closes the gate for."""
    return Hold.CREDENTIALS if isinstance(error, AuthError) else Hold.MISCONFIGURED


def _cause(error: HoldError) -> tuple[object, ...]:
    """What makes two holds the same for the log: refused credentials are one cause
    (whatever the status), a deployment mistake is one per endpoint, status or error, and
    hint."""
    if isinstance(error, AuthError):
        return (Hold.CREDENTIALS,)
    return (Hold.MISCONFIGURED, error.endpoint, error.status, error.error, error.hint)


class ApiGate:
    """Open while the API can be used; closed (holding every file) after refused
    credentials or a deployment mistake, until the API answers properly again."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._hold: Hold | None = None
        self._prober: int | None = None
        self._wakeups = 0
        #: ``(_wakeups, cause)`` when the hold was last said; None: not since it opened.
        self._announced: tuple[int, tuple[object, ...]] | None = None
        self.last_error: HoldError | None = None

    @property
    def is_open(self) -> bool:
        with self._cond:
            return self._hold is None

    @property
    def hold(self) -> Hold | None:
        """Why the gate is closed now; None while it is open."""
        with self._cond:
            return self._hold

    def holding(self) -> tuple[Hold, HoldError | None] | None:
        """Why the gate is closed and the last error that closed it, read together; None
        while it is open."""
        with self._cond:
            return None if self._hold is None else (self._hold, self.last_error)

    def close(self, error: HoldError) -> bool:
        """Close the gate, or switch its hold to ``error``'s; True when the caller becomes
        the one thread that probes.

        Once closed, the gate holds for what the prober hears: an error heard by a thread
        whose request was already in flight does not change the hold."""
        me = threading.get_ident()
        with self._cond:
            if self._prober is None:
                self._prober = me
            if self._prober == me:
                self.last_error = error
                self._hold = hold_of(error)
                return True
            return False

    def open(self, only: Hold | None = None) -> Hold | None:
        """The API answered properly: open the gate (when ``only`` is given, only a hold
        for that reason). The hold that ended, or None when none did.

        A deployment mistake can be one endpoint's (a proxy that routes only
        ``/attachments``), so only the prober, which repeats the very request that was
        held, ends that hold; a reply to another request, in flight when the gate closed,
        says nothing about it. Any proper reply shows the credentials work."""
        with self._cond:
            ended = self._hold
            if ended is None or (only is not None and ended != only):
                return None
            if ended is Hold.MISCONFIGURED and self._prober not in (None, threading.get_ident()):
                return None
            self._hold = None
            self._prober = None
            self._announced = None
            self.last_error = None
            self._cond.notify_all()
            return ended

    def announce(self, error: HoldError | None = None) -> bool:
        """True once per closing of the gate and cause (``error``, else the last error),
        and once more after each :meth:`wake`: a deployment mistake is said again when its
        cause changes, a refusal when a reload's new credentials are refused too."""
        with self._cond:
            shown = error if error is not None else self.last_error
            said = (self._wakeups, _cause(shown) if shown is not None else ())
            if self._announced == said:
                return False
            self._announced = said
            return True

    def wake(self) -> None:
        """A new configuration arrived (reload: credentials, URL, CA): cut the prober's
        wait short."""
        with self._cond:
            self._wakeups += 1
            self._cond.notify_all()

    def wait_open(self, stop: threading.Event, timeout: float | None = None) -> bool:
        """Block until the gate is open or this thread takes over probing (True), or until
        ``timeout`` seconds have passed (False). Raises :class:`Stopped`."""
        clock = self._clock
        deadline = None if timeout is None else clock.monotonic() + timeout
        with self._cond:
            while self._hold is not None:
                if stop.is_set():
                    raise Stopped
                if self._prober is None:  # the prober left (stopped): take its place
                    self._prober = threading.get_ident()
                    break
                wait = GATE_POLL_SECONDS
                if deadline is not None:
                    if (remaining := deadline - clock.monotonic()) <= 0:
                        return False
                    wait = min(wait, remaining)
                clock.wait(self._cond, wait)
        return True

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        """The prober's wait: ends early on stop (raises) or on :meth:`wake`."""
        clock = self._clock
        deadline = clock.monotonic() + seconds
        with self._cond:
            seen = self._wakeups
            while (remaining := deadline - clock.monotonic()) > 0 and self._wakeups == seen:
                if stop.is_set():
                    self._release_prober()
                    raise Stopped
                clock.wait(self._cond, min(remaining, GATE_POLL_SECONDS))

    def release(self) -> None:
        """The prober leaves without the API's verdict: another thread probes."""
        with self._cond:
            self._release_prober()

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
    """Wall-clock time of the first transient failure, moved forward by the time spent
    behind the closed gate (so that time does not count towards giving up)."""


class RetryPolicy:
    """Runs one API call with the full policy: transient retries, the gate, give-up.

    :class:`~daemon.errors.FileChanged` (and any error that is not the API's) goes out to
    the caller as it is: a file written to during its upload is not a failed attempt.
    """

    def __init__(
        self,
        backoff: Backoff,
        give_up_after: float,
        gate: ApiGate,
        stop: threading.Event,
        events: RetryEvents,
        *,
        run: RunPolicy = WATCH,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.backoff = backoff
        self.give_up_after = give_up_after
        self.gate = gate
        self.stop = stop
        self.events = events
        self.run = run
        self.clock = clock

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; raises :class:`Stopped` when the run stops meanwhile."""
        if self.clock.wait(self.stop, seconds):
            raise Stopped

    def call(self, fn: Callable[[], T], attempts: Attempts) -> T:
        """``fn()`` until it succeeds, fails for good (:class:`FileRejected`) or we stop."""
        try:
            return self._call(fn, attempts)
        except BaseException:
            # Whatever ends the call (a stop, a file that changed, a bug) while this thread
            # probes leaves the API's verdict unknown: another thread probes.
            self.gate.release()
            raise

    def _call(self, fn: Callable[[], T], attempts: Attempts) -> T:
        holds = transient_failures = 0
        probing = False
        while True:
            if self.stop.is_set():
                raise Stopped
            if not probing:
                self._wait_gate(attempts)
            attempts.count += 1
            try:
                result = fn()
            except (AuthError, ApiMisconfigured) as error:
                # The file was not tried: the credentials or the deployment were.
                attempts.count -= 1
                if isinstance(error, AuthError):  # the API's own answer: the URL is right
                    self._answered(only=Hold.MISCONFIGURED)
                holds += 1
                probing = self._held(error, holds, attempts)
                continue
            except RequestRejected as error:
                self._answered()
                raise FileRejected(error.reason, error.detail, error.status) from None
            except TransientError as error:
                self._answered()
                probing = False
                transient_failures += 1
                self.sleep(self._retry_delay(error, transient_failures, attempts))
                continue
            self._answered()
            return result

    def _wait_gate(self, attempts: Attempts) -> None:
        """Wait while the gate is closed; that time does not count towards giving up."""
        if self.gate.is_open:
            return
        while True:
            started = self.clock.monotonic()
            try:
                through = self.gate.wait_open(self.stop, timeout=CLOCK_SAVE_SECONDS)
            finally:
                self._pause_clock(attempts, self.clock.monotonic() - started)
            if through:
                return

    def _held(self, error: HoldError, failures: int, attempts: Attempts) -> bool:
        """Close the gate; the one prober waits out its backoff. True for the prober."""
        if self.run.stop_when_held:
            if isinstance(error, AuthError):
                raise AuthRefused(error)
            raise error
        started = self.clock.monotonic()
        try:
            probing = self.gate.close(error)
            if probing:
                if self.gate.announce(error):
                    if isinstance(error, AuthError):
                        self.events.auth_failed(error)
                    else:
                        self.events.api_misconfigured(error)
                self.gate.sleep(self.backoff.delay(failures), self.stop)
        finally:
            self._pause_clock(attempts, self.clock.monotonic() - started)
        return probing

    def _pause_clock(self, attempts: Attempts, seconds: float) -> None:
        """Take ``seconds`` spent behind the closed gate off the give-up clock.

        The clock is a wall-clock ``first_failure`` kept in the journal, so the credit is
        kept by moving it forward and journaling it (:meth:`RetryEvents.clock_moved`) after
        every wait: on a stop, when the gate opens, after each probe (at most
        ``max_delay``) and at least every :data:`CLOCK_SAVE_SECONDS` while a file waits
        behind the gate. A SIGKILL loses only the wait in progress, bounded by those. Time
        the daemon is not running at all counts like any other time, also after
        ``--once`` exits on refused credentials or a deployment mistake (it waits out
        nothing): the give-up window is wall-clock time.
        """
        if attempts.first_failure is None or seconds <= 0:
            return
        attempts.first_failure += seconds
        self.events.clock_moved(attempts)

    def _retry_delay(self, error: TransientError, failures: int, attempts: Attempts) -> float:
        """The wait before the next attempt, or :class:`FileRejected` when
        ``give_up_after`` has passed since the first failure."""
        now = self.clock.time()
        if attempts.first_failure is None:
            attempts.first_failure = now
        left = self.give_up_after - (now - attempts.first_failure)
        if left <= DEADLINE_TOLERANCE_SECONDS:
            raise FileRejected(
                Reason.RETRIES_EXHAUSTED,
                f"gave up after {attempts.count} attempts: {error}",
                error.status,
            )
        # A wait that would end past the deadline is cut short so the last attempt comes
        # right at it: an operator who sets give_up_after: 3600 expects the file to be
        # tried until the hour is up and to be in failed/ then, not after one more wait of
        # up to max_delay (5 min by default). Never sooner than the API's Retry-After,
        # though: an earlier attempt would only earn another 429, so the file waits it out
        # and is tried once more, even past the deadline.
        retry_after = error.retry_after or 0.0
        delay = max(min(self.backoff.delay(failures, error.retry_after), left), retry_after)
        self.events.retry_scheduled(attempts, delay, error)
        return delay

    def _answered(self, only: Hold | None = None) -> None:
        """The API answered properly: open the gate (``only`` a hold for that reason),
        and say which hold ended."""
        ended = self.gate.open(only)
        if ended is Hold.CREDENTIALS:
            self.events.auth_restored()
        elif ended is Hold.MISCONFIGURED:
            self.events.api_restored()
