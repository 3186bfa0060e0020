"""The retry policy and the gate on a virtual clock: each test runs in milliseconds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from daemon.delivery.retry import (
    CLOCK_SAVE_SECONDS,
    DEADLINE_TOLERANCE_SECONDS,
    ONCE,
    ApiGate,
    Attempts,
    Backoff,
    Hold,
    RetryPolicy,
)
from daemon.errors import (
    ApiMisconfigured,
    AuthError,
    AuthRefused,
    FileChanged,
    FileRejected,
    ServerBusy,
    Stopped,
    TransientError,
    TransportError,
)
from daemon.states import Reason
from tests.delivery.clock import VirtualClock

#: Real seconds a test waits for a thread it started.
JOIN_SECONDS = 10.0
#: 1 s doubling up to 10 s (virtual seconds).
BACKOFF = Backoff(1.0, 10.0)


@dataclass
class Heard:
    """A RetryEvents that writes down what it hears."""

    retries: list[tuple[int, float, TransientError]] = field(default_factory=list)
    refusals: list[AuthError] = field(default_factory=list)
    restored: int = 0
    clock: list[float | None] = field(default_factory=list)
    refused: threading.Event = field(default_factory=threading.Event)
    misconfigured: list[ApiMisconfigured] = field(default_factory=list)
    api_restored_count: int = 0
    said: list[str] = field(default_factory=list)
    """Every hold and restore said, in order (event names)."""

    def retry_scheduled(self, attempts: Attempts, delay: float, error: TransientError) -> None:
        self.retries.append((attempts.count, delay, error))

    def auth_failed(self, error: AuthError) -> None:
        self.refusals.append(error)
        self.said.append("auth_failed")
        self.refused.set()

    def auth_restored(self) -> None:
        self.restored += 1
        self.said.append("auth_restored")

    def api_misconfigured(self, error: ApiMisconfigured) -> None:
        self.misconfigured.append(error)
        self.said.append("api_misconfigured")

    def api_restored(self) -> None:
        self.api_restored_count += 1
        self.said.append("api_restored")

    def clock_moved(self, attempts: Attempts) -> None:
        self.clock.append(attempts.first_failure)


def refused() -> AuthError:
    return AuthError("Invalid token", status=401, endpoint="attachments")


def wrong_path(endpoint: str = "attachments", status: int = 404) -> ApiMisconfigured:
    return ApiMisconfigured(
        "api.url should end in /api/v1",
        endpoint=endpoint,
        url=f"https://api.example.org/{endpoint}",
        status=status,
    )


def replies(*sequence: Exception | None) -> Callable[[], str]:
    """An API that answers with ``sequence`` (an error raised, None: "ok"), then "ok"."""
    queue = list(sequence)

    def api() -> str:
        reply = queue.pop(0) if queue else None
        if reply is not None:
            raise reply
        return "ok"

    return api


def policy(
    clock: VirtualClock,
    gate: ApiGate | None = None,
    *,
    backoff: Backoff = BACKOFF,
    give_up_after: float = 60.0,
    stop: threading.Event | None = None,
    heard: Heard | None = None,
) -> tuple[RetryPolicy, Heard]:
    heard = heard if heard is not None else Heard()
    return RetryPolicy(
        backoff,
        give_up_after,
        gate if gate is not None else ApiGate(clock),
        stop if stop is not None else threading.Event(),
        heard,
        clock=clock,
    ), heard


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``target`` in a thread; the list gets its result or the exception it raised."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def joined(thread: threading.Thread) -> None:
    thread.join(JOIN_SECONDS)
    assert not thread.is_alive(), "the thread is still waiting"


# -- backoff --------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(1, 12))
def test_backoff_waits_between_half_and_all_of_its_capped_base(attempt: int) -> None:
    """Equal jitter: half the base up to the base, the base doubling up to max_delay."""
    backoff = Backoff(0.5, 30.0)
    base = min(30.0, 0.5 * 2 ** (attempt - 1))
    delays = [backoff.delay(attempt) for _ in range(200)]
    assert all(base / 2 <= delay <= base for delay in delays)
    assert max(delays) - min(delays) > 0  # jittered, not a fixed wait


def test_backoff_takes_the_apis_retry_after_as_it_is() -> None:
    """A Retry-After from the API is the wait, longer or shorter than the backoff."""
    backoff = Backoff(1.0, 10.0)
    assert backoff.delay(1, retry_after=120.0) == 120.0
    assert backoff.delay(5, retry_after=0.25) == 0.25
    assert 0.5 <= backoff.delay(1, retry_after=0.0) <= 1.0


# -- the give-up clock ----------------------------------------------------------------


@pytest.mark.parametrize("request_seconds", [0.0, 0.7])
def test_gives_up_exactly_at_give_up_after_never_earlier(request_seconds: float) -> None:
    """Attempts go on until give_up_after has passed since the first failure; the last
    wait is cut short so that the final attempt comes right at the deadline."""
    clock = VirtualClock()
    retry, heard = policy(clock, give_up_after=60.0)
    started_at: list[float] = []
    failed_at: list[float] = []

    def down() -> None:
        started_at.append(clock.time())
        clock.advance(request_seconds)
        failed_at.append(clock.time())
        raise TransportError("connection refused", endpoint="attachments")

    attempts = Attempts()
    with pytest.raises(FileRejected) as given_up:
        retry.call(down, attempts)
    assert given_up.value.reason == Reason.RETRIES_EXHAUSTED
    first = failed_at[0]
    assert attempts.first_failure == first
    assert all(at - first < 60.0 for at in failed_at[:-1])
    assert failed_at[-1] - first >= 60.0 - DEADLINE_TOLERANCE_SECONDS
    # The last attempt starts at the deadline at the latest (a wait is never longer than
    # what is left); when a request takes no time, right at it.
    assert started_at[-1] - first <= 60.0 + DEADLINE_TOLERANCE_SECONDS
    if request_seconds == 0.0:
        assert started_at[-1] - first == pytest.approx(60.0, abs=DEADLINE_TOLERANCE_SECONDS)
    assert len(heard.retries) == len(failed_at) - 1 == attempts.count - 1
    assert [count for count, _, _ in heard.retries] == list(range(1, attempts.count))


def test_a_retry_after_longer_than_what_is_left_is_still_honoured() -> None:
    """A 429 asking for more time than the give-up clock has left: the file waits all of
    it and is tried once more (an earlier attempt would only earn another 429)."""
    clock = VirtualClock()
    retry, heard = policy(clock, give_up_after=10.0)
    tried_at: list[float] = []

    def busy_then_fine() -> str:
        tried_at.append(clock.monotonic())
        if len(tried_at) == 1:
            raise ServerBusy("slow down", status=429, retry_after=30.0)
        return "msg_1"

    assert retry.call(busy_then_fine, Attempts()) == "msg_1"
    [(_, delay, _)] = heard.retries
    assert delay == 30.0
    assert tried_at[1] - tried_at[0] == pytest.approx(30.0, abs=0.01)


def test_the_probers_time_behind_the_closed_gate_does_not_count() -> None:
    """The give-up clock moves forward by every probe's wait, and says so each time."""
    clock = VirtualClock()
    retry, heard = policy(clock, backoff=Backoff(20.0, 20.0), give_up_after=60.0)
    replies: list[Exception | None] = [TransportError("reset"), *[refused()] * 3, None]

    def api() -> str:
        reply = replies.pop(0)
        if reply is not None:
            raise reply
        return "att_1"

    attempts = Attempts()
    assert retry.call(api, attempts) == "att_1"
    [(_, first_wait, _)] = heard.retries
    assert attempts.first_failure is not None
    # 3 probes of 10-20 s each: far past give_up_after, yet only the first wait counted.
    assert clock.time() - attempts.first_failure == pytest.approx(first_wait)
    assert len(heard.clock) == 3
    assert heard.clock[-1] == attempts.first_failure
    assert len(heard.refusals) == 1
    assert heard.restored == 1
    assert attempts.count == 2  # refused calls are not attempts at the file


def test_a_file_waiting_behind_the_closed_gate_keeps_its_clock_journaled() -> None:
    """A thread that waits for another's probe moves its give-up clock forward at least
    every CLOCK_SAVE_SECONDS, and by exactly the time it waited."""
    clock = VirtualClock()
    gate = ApiGate(clock)
    assert gate.close(refused())  # this thread probes; the worker below waits
    retry, heard = policy(clock, gate)
    attempts = Attempts(count=1, first_failure=clock.time())
    worker, outcome = in_thread(lambda: retry.call(lambda: "msg_1", attempts))
    while clock.monotonic() < 3 * CLOCK_SAVE_SECONDS:
        assert worker.is_alive()
        threading.Event().wait(0.005)
    gate.open()
    joined(worker)
    assert outcome == ["msg_1"]
    assert len(heard.clock) >= 3
    assert attempts.first_failure == pytest.approx(clock.time(), abs=0.01)
    assert heard.clock[-1] == attempts.first_failure


def test_file_changed_goes_out_to_the_caller_untouched() -> None:
    """A file written to during its upload is not a failed attempt: no retry, no clock."""
    clock = VirtualClock()
    retry, heard = policy(clock)

    def changed() -> None:
        raise FileChanged("size changed")

    attempts = Attempts()
    with pytest.raises(FileChanged):
        retry.call(changed, attempts)
    assert heard.retries == []
    assert attempts.first_failure is None


def test_the_once_policy_stops_on_refused_credentials() -> None:
    """run --once and send: a 401 ends the run instead of closing the gate."""
    clock = VirtualClock()
    gate = ApiGate(clock)
    heard = Heard()
    retry = RetryPolicy(
        Backoff(1.0, 1.0), 60.0, gate, threading.Event(), heard, run=ONCE, clock=clock
    )

    def no() -> None:
        raise refused()

    with pytest.raises(AuthRefused):
        retry.call(no, Attempts())
    assert gate.is_open
    assert heard.refusals == []


# -- the auth gate --------------------------------------------------------------------


def test_one_thread_probes_while_the_others_wait() -> None:
    """After a 401 only one thread calls the API; auth_failed is said once; all go on
    when the credentials work again."""
    clock = VirtualClock()
    gate = ApiGate(clock)
    heard = Heard()
    accepted = threading.Event()
    callers: list[int] = []
    lock = threading.Lock()

    def api() -> str:
        with lock:
            callers.append(threading.get_ident())
        if not accepted.is_set():
            raise refused()
        return "ok"

    threads = []
    for _ in range(3):
        retry, _ = policy(clock, gate, backoff=Backoff(1.0, 1.0), heard=heard)
        threads.append(in_thread(lambda retry=retry: retry.call(api, Attempts())))
    while len(callers) < 20:
        threading.Event().wait(0.005)
    with lock:
        probers = set(callers[-10:])
    accepted.set()
    for thread, outcome in threads:
        joined(thread)
        assert outcome == ["ok"]
    assert len(probers) == 1
    assert len(heard.refusals) == 1
    assert heard.restored == 1


@pytest.mark.parametrize("leaves_by", ["stop", "error"])
def test_a_prober_that_leaves_hands_probing_to_another_thread(leaves_by: str) -> None:
    """The prober stops (or its file hits an unexpected error): a waiting thread takes
    over probing, rather than waiting for a verdict that never comes."""
    clock = VirtualClock()
    gate = ApiGate(clock)
    first_stop = threading.Event()
    first, _ = policy(clock, gate, stop=first_stop)
    second, _ = policy(clock, gate)
    probes = {"first": 0}

    def first_api() -> None:
        probes["first"] += 1
        if leaves_by == "error" and probes["first"] > 1:
            raise OSError("the claimed file went away")
        raise refused()

    prober, prober_outcome = in_thread(lambda: first.call(first_api, Attempts()))
    while gate.is_open:
        threading.Event().wait(0.002)
    waiter, waiter_outcome = in_thread(lambda: second.call(lambda: "ok", Attempts()))
    if leaves_by == "stop":
        first_stop.set()
    joined(prober)
    joined(waiter)
    expected = Stopped if leaves_by == "stop" else OSError
    assert isinstance(prober_outcome[0], expected)
    assert waiter_outcome == ["ok"]
    assert gate.is_open


def test_a_reload_cuts_the_probe_wait_short() -> None:
    """wake() (new credentials) ends the prober's backoff: the new token is tried now."""
    clock = VirtualClock()
    gate = ApiGate(clock)
    retry, heard = policy(clock, gate, backoff=Backoff(3600.0, 3600.0))
    replies: list[Exception | None] = [refused(), None]

    def api() -> str:
        reply = replies.pop(0)
        if reply is not None:
            raise reply
        return "ok"

    prober, outcome = in_thread(lambda: retry.call(api, Attempts()))
    assert heard.refused.wait(JOIN_SECONDS)
    while prober.is_alive():  # until the prober is in its wait to hear it
        gate.wake()
        prober.join(0.005)
    assert outcome == ["ok"]
    assert clock.monotonic() < 1800.0  # at least half the backoff, had it waited it out


def test_auth_failed_is_said_once_per_closing_and_again_after_a_wake() -> None:
    """announce(): once per closing; a reload's refused credentials are said again."""
    gate = ApiGate(VirtualClock())
    gate.close(refused())
    assert gate.announce()
    assert not gate.announce()
    gate.wake()
    assert gate.announce()
    assert not gate.announce()
    assert gate.open()
    assert not gate.open()
    gate.close(refused())
    assert gate.announce()


# -- the gate holding for a deployment mistake ----------------------------------------


def test_a_deployment_mistake_holds_the_file_without_charging_it() -> None:
    """ApiMisconfigured fails no file: not an attempt, no retry_scheduled, no time off the
    give-up clock; said once however many probes; api_restored when the API answers."""
    clock = VirtualClock()
    retry, heard = policy(clock, backoff=Backoff(20.0, 20.0), give_up_after=60.0)
    api = replies(TransportError("reset"), *[wrong_path()] * 5)
    attempts = Attempts()
    assert retry.call(api, attempts) == "ok"
    [(_, first_wait, _)] = heard.retries
    assert attempts.first_failure is not None
    # 5 probes of 10-20 s each: far past give_up_after, yet only the first wait counted.
    assert clock.time() - attempts.first_failure == pytest.approx(first_wait)
    assert attempts.count == 2  # the held calls were not attempts at the file
    assert heard.said == ["api_misconfigured", "api_restored"]
    assert heard.misconfigured[0].hint == "api.url should end in /api/v1"
    assert heard.refusals == []
    assert heard.restored == 0


def test_one_thread_probes_a_deployment_mistake_while_the_others_wait() -> None:
    """Held for a deployment mistake, only one thread calls the API; all go on once it
    answers properly."""
    clock = VirtualClock()
    gate = ApiGate(clock)
    heard = Heard()
    fixed = threading.Event()
    callers: list[int] = []
    lock = threading.Lock()

    def api() -> str:
        with lock:
            callers.append(threading.get_ident())
        if not fixed.is_set():
            raise wrong_path()
        return "ok"

    threads = []
    for _ in range(3):
        retry, _ = policy(clock, gate, backoff=Backoff(1.0, 1.0), heard=heard)
        threads.append(in_thread(lambda retry=retry: retry.call(api, Attempts())))
    while len(callers) < 20:
        threading.Event().wait(0.005)
    assert gate.hold is Hold.MISCONFIGURED
    with lock:
        probers = set(callers[-10:])
    fixed.set()
    for thread, outcome in threads:
        joined(thread)
        assert outcome == ["ok"]
    assert len(probers) == 1
    assert heard.said == ["api_misconfigured", "api_restored"]
    assert gate.is_open


@pytest.mark.parametrize(
    "answer",
    [
        ServerBusy("502 Bad Gateway", status=502, endpoint="attachments"),
        TransportError("connection refused", endpoint="attachments"),
    ],
)
def test_any_reply_that_is_not_a_deployment_mistake_opens_the_gate(answer: Exception) -> None:
    """A busy server or no reply at all is not a deployment mistake: the hold ends and the
    file goes on as a transient failure (retried, and charged as such)."""
    clock = VirtualClock()
    retry, heard = policy(clock)
    attempts = Attempts()
    assert retry.call(replies(wrong_path(), answer), attempts) == "ok"
    assert heard.said == ["api_misconfigured", "api_restored"]
    assert len(heard.retries) == 1
    assert attempts.count == 2
    assert retry.gate.is_open


def test_a_new_cause_is_said_again_the_same_one_is_not() -> None:
    """One api_misconfigured per distinct cause (endpoint, status or error, hint)."""
    clock = VirtualClock()
    retry, heard = policy(clock)
    redirect = ApiMisconfigured(
        "the server redirects to https://api.example.org/api/v1/attachments: set api.url "
        "to https://api.example.org/api/v1",
        endpoint="attachments",
        url="http://api.example.org/api/v1/attachments",
        status=301,
    )
    untrusted = ApiMisconfigured(
        "the server's TLS certificate is not trusted",
        endpoint="attachments",
        url="https://api.example.org/api/v1/attachments",
        error="certificate: unable to get local issuer certificate",
    )
    api = replies(wrong_path(), wrong_path(), redirect, redirect, untrusted, untrusted)
    assert retry.call(api, Attempts()) == "ok"
    assert [(e.status, e.error) for e in heard.misconfigured] == [
        (404, None),
        (301, None),
        (None, "certificate: unable to get local issuer certificate"),
    ]
    assert heard.api_restored_count == 1


def test_a_reload_probes_a_deployment_mistake_at_once_and_says_it_again() -> None:
    """wake() (a reload: new URL or CA) ends the prober's backoff; if the new settings are
    still wrong, the mistake is said again even with the same cause."""
    clock = VirtualClock()
    gate = ApiGate(clock)
    retry, heard = policy(clock, gate, backoff=Backoff(3600.0, 3600.0))
    calls = {"n": 0}

    def api() -> str:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise wrong_path()
        return "ok"

    prober, outcome = in_thread(lambda: retry.call(api, Attempts()))
    while calls["n"] < 2:  # the first probe's wait, cut short by the "reload"
        gate.wake()
        threading.Event().wait(0.005)
    while prober.is_alive():
        gate.wake()
        prober.join(0.005)
    assert outcome == ["ok"]
    assert clock.monotonic() < 1800.0  # no backoff was waited out
    assert heard.said == ["api_misconfigured", "api_misconfigured", "api_restored"]


def test_refused_credentials_behind_a_deployment_mistake_switch_the_hold() -> None:
    """Fixed URL, wrong token: the API's own 401 ends the misconfigured hold (api_restored)
    and the gate holds for the credentials (auth_failed) until they work."""
    clock = VirtualClock()
    retry, heard = policy(clock)
    holds: list[Hold | None] = []
    script: list[Exception | None] = [wrong_path(), refused(), refused(), None]

    def api() -> str:
        holds.append(retry.gate.hold)
        reply = script.pop(0)
        if reply is not None:
            raise reply
        return "ok"

    assert retry.call(api, Attempts()) == "ok"
    assert holds == [None, Hold.MISCONFIGURED, Hold.CREDENTIALS, Hold.CREDENTIALS]
    assert heard.said == ["api_misconfigured", "api_restored", "auth_failed", "auth_restored"]


def test_a_deployment_mistake_after_refused_credentials_is_said_and_holds() -> None:
    """A reload that breaks the URL while the token is refused: the hold switches to the
    deployment mistake (said), and a success ends it with api_restored."""
    clock = VirtualClock()
    retry, heard = policy(clock)
    holds: list[Hold | None] = []
    script: list[Exception | None] = [refused(), wrong_path(), None]

    def api() -> str:
        holds.append(retry.gate.hold)
        reply = script.pop(0)
        if reply is not None:
            raise reply
        return "ok"

    assert retry.call(api, Attempts()) == "ok"
    assert holds == [None, Hold.CREDENTIALS, Hold.MISCONFIGURED]
    assert heard.said == ["auth_failed", "api_misconfigured", "api_restored"]


def test_the_once_policy_stops_on_a_deployment_mistake() -> None:
    """run --once and send: ApiMisconfigured ends the run as it is (exit 2), gate open."""
    clock = VirtualClock()
    gate = ApiGate(clock)
    heard = Heard()
    retry = RetryPolicy(
        Backoff(1.0, 1.0), 60.0, gate, threading.Event(), heard, run=ONCE, clock=clock
    )
    attempts = Attempts()
    with pytest.raises(ApiMisconfigured) as raised:
        retry.call(replies(wrong_path()), attempts)
    assert raised.value.hint == "api.url should end in /api/v1"
    assert gate.is_open
    assert heard.said == []
    assert attempts.count == 0


def test_the_gate_tells_why_it_holds() -> None:
    """hold and holding(): the reason and the error that closed the gate, None when open."""
    gate = ApiGate(VirtualClock())
    assert gate.hold is None and gate.holding() is None
    mistake = wrong_path()
    gate.close(mistake)
    assert gate.holding() == (Hold.MISCONFIGURED, mistake)
    assert gate.open(only=Hold.CREDENTIALS) is None  # not a hold for that reason
    assert gate.hold is Hold.MISCONFIGURED
    assert gate.open() is Hold.MISCONFIGURED
    assert gate.open() is None


@pytest.mark.parametrize("reply", ["ok", "refused"])
def test_a_reply_to_a_request_in_flight_does_not_end_a_deployment_mistakes_hold(
    reply: str,
) -> None:
    """A mistake can be one endpoint's (a proxy routing only /attachments): an upload in
    flight when /messages closed the gate neither opens it nor changes why it holds; only
    the prober, repeating the held request, does."""
    clock = VirtualClock()
    gate = ApiGate(clock)
    retry, heard = policy(clock, gate)
    in_flight, closed = threading.Event(), threading.Event()
    calls = {"n": 0}

    def upload() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            in_flight.set()
            closed.wait(JOIN_SECONDS)
            if reply == "refused":
                raise refused()
        return "att_1"

    worker, outcome = in_thread(lambda: retry.call(upload, Attempts()))
    assert in_flight.wait(JOIN_SECONDS)
    mistake = wrong_path("messages")
    assert gate.close(mistake)  # this thread probes /messages
    closed.set()
    if reply == "ok":
        joined(worker)
        assert outcome == ["att_1"]
    else:
        while clock.monotonic() < 1.0:  # the worker waits behind the gate (virtual time)
            threading.Event().wait(0.005)
        assert worker.is_alive()
    assert gate.holding() == (Hold.MISCONFIGURED, mistake)
    assert heard.said == []
    assert gate.open() is Hold.MISCONFIGURED  # the prober's /messages works again
    joined(worker)
    assert outcome == ["att_1"]
    assert calls["n"] == (1 if reply == "ok" else 2)
