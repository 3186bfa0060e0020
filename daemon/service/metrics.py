"""Prometheus metrics and the health check, served on ``metrics.listen`` (see the README).

``GET /metrics`` is the Prometheus text format from the daemon's own registry (never the
process-global one, so that nothing else in the process can leak into it); ``GET /healthz``
answers 200 while every observer is alive, the API accepts the credentials, ``api.url``
reaches it as it should and no claimed file is stuck (no progress for longer than
:func:`~daemon.delivery.stalls.stall_bound`), 503 with a JSON ``reason`` otherwise.

Counters and histograms move as :class:`~daemon.delivery.outcomes.Outcomes` reports files and API
requests. Everything that describes "now" (files waiting and in progress, the credentials,
the API, the observer) is read at scrape time through :class:`Probes`, so it can never go
stale.
"""

from __future__ import annotations

import json
import math
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon import __version__
from daemon.config import InboxConfig
from daemon.delivery.outcomes import FailedFile, Outcomes, SentFile
from daemon.delivery.retry import ApiGate, Hold
from daemon.delivery.stalls import ClaimAge
from daemon.errors import ApiMisconfigured, WatchError
from daemon.logs import get_logger

#: Seconds a scraper may take to send its request before its connection is dropped.
REQUEST_TIMEOUT_SECONDS = 10.0
#: Seconds :meth:`MetricsServer.stop` waits for the serving thread.
STOP_TIMEOUT_SECONDS = 5.0

#: Upload durations, in seconds: small scans take well under a second, 100 MB far longer.
UPLOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
#: Send durations, in seconds: one small JSON request.
SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Drop→sent latency, in seconds: settle time, queueing, retries (up to ``give_up_after``).
LATENCY_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)

#: The label value for a message type not known (a file failed before it was classified).
UNKNOWN = "unknown"


def _never() -> str | None:
    return None


@dataclass(frozen=True)
class Probes:
    """What the service knows right now, asked at every scrape and health check."""

    inboxes: Callable[[], Iterable[InboxConfig]]
    """The inboxes being watched."""
    waiting: Callable[[InboxConfig], int]
    """Files in an inbox not yet taken."""
    in_progress: Callable[[], Mapping[str, int]]
    """Files claimed and not yet archived, per inbox path (as a string)."""
    auth_refused: Callable[[], str | None]
    """Why the API refuses the credentials (e.g. ``HTTP 401: Invalid token``), or None."""
    observer_alive: Callable[[], bool]
    """Whether the filesystem observer thread is running."""
    polled_inboxes: Callable[[], Mapping[str, int]] = dict
    """Inboxes polled although inotify was asked for, per cause (network filesystem,
    inotify's watch limit)."""
    api_misconfigured: Callable[[], str | None] = _never
    """Why ``api.url`` does not reach the API as it should (the URL, the status or error,
    the hint), or None."""
    claim_ages: Callable[[], Mapping[str, ClaimAge]] = dict
    """Per inbox path, its claimed file longest without progress (inboxes with none
    claimed left out)."""
    stall_bound: Callable[[], float] = lambda: math.inf
    """Seconds without progress after which a claimed file is stuck."""


def refusal(gate: ApiGate) -> str | None:
    """Why the API refuses the credentials (for :attr:`Probes.auth_refused`), or None."""
    holding = gate.holding()
    if holding is None or holding[0] is not Hold.CREDENTIALS:
        return None
    error = holding[1]
    return str(error) if error is not None else "HTTP 401/403"


def misconfiguration(gate: ApiGate) -> str | None:
    """Why the API cannot be used as configured (for :attr:`Probes.api_misconfigured`),
    e.g. ``https://host/attachments: HTTP 404; api.url should end in /api/v1``, or None."""
    holding = gate.holding()
    if holding is None or holding[0] is not Hold.MISCONFIGURED:
        return None
    error = holding[1]
    if not isinstance(error, ApiMisconfigured):
        return "a deployment mistake"
    what = f"HTTP {error.status}" if error.status is not None else (error.error or "")
    return f"{error.url}: {what}; {error.hint}"


class _StateCollector(Collector):
    """The gauges read at scrape time."""

    def __init__(self, probes: Probes) -> None:
        self._probes = probes

    def collect(self) -> Iterator[Metric]:
        inboxes = list(self._probes.inboxes())
        in_progress = self._probes.in_progress()
        waiting = GaugeMetricFamily(
            "sendseven_files_waiting", "Files in the inbox not yet taken.", labels=["inbox"]
        )
        claimed = GaugeMetricFamily(
            "sendseven_files_in_progress",
            "Files claimed and not yet in sent/ or failed/.",
            labels=["inbox"],
        )
        # Two explicit inboxes may share a folder name: one series each, summed.
        per_name: dict[str, tuple[int, int]] = {}
        for inbox in inboxes:
            w, p = per_name.get(inbox.name, (0, 0))
            per_name[inbox.name] = (
                w + self._probes.waiting(inbox),
                p + in_progress.get(str(inbox.path), 0),
            )
        for name, (w, p) in sorted(per_name.items()):
            waiting.add_metric([name], w)
            claimed.add_metric([name], p)
        yield waiting
        yield claimed
        yield GaugeMetricFamily("sendseven_inboxes", "Inboxes being watched.", value=len(inboxes))
        yield GaugeMetricFamily(
            "sendseven_auth_ok",
            "1 while the API accepts the credentials, 0 after a 401/403 until they work again.",
            value=0 if self._probes.auth_refused() is not None else 1,
        )
        yield GaugeMetricFamily(
            "sendseven_api_ok",
            "1 while api.url reaches the API as it should, 0 while a deployment mistake (a "
            "redirect, a wrong path, an untrusted certificate) holds every file.",
            value=0 if self._probes.api_misconfigured() is not None else 1,
        )
        yield GaugeMetricFamily(
            "sendseven_observer_alive",
            "1 while the filesystem observer runs, 0 when it died (it is restarted).",
            value=1 if self._probes.observer_alive() else 0,
        )
        polled = GaugeMetricFamily(
            "sendseven_polled_inboxes",
            "Inboxes polled although inotify was asked for, by cause.",
            labels=["cause"],
        )
        for cause, count in sorted(self._probes.polled_inboxes().items()):
            polled.add_metric([cause], count)
        yield polled
        ages = self._probes.claim_ages()
        oldest = GaugeMetricFamily(
            "sendseven_oldest_claim_age_seconds",
            "Seconds since the last progress of the inbox's claimed file that has gone "
            "longest without any (0: none claimed).",
            labels=["inbox"],
        )
        per_inbox: dict[str, float] = {}
        for inbox in inboxes:
            age = ages.get(str(inbox.path))
            seconds = age.seconds if age is not None else 0.0
            per_inbox[inbox.name] = max(per_inbox.get(inbox.name, 0.0), seconds)
        for name, seconds in sorted(per_inbox.items()):
            oldest.add_metric([name], seconds)
        yield oldest


class Metrics:
    """The daemon's metrics: an :class:`~daemon.delivery.outcomes.OutcomeListener` of
    ``outcomes``, and read through :class:`Probes` at scrape time."""

    def __init__(self, outcomes: Outcomes, probes: Probes) -> None:
        self.probes = probes
        # ``*_created`` series double the page and Prometheus ignores them in this format.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        Info("sendseven_build", "The running version.", registry=r).info({"version": __version__})
        self.files_queued = Counter(
            "sendseven_files_queued", "Files claimed and queued.", ["inbox"], registry=r
        )
        self.files_sent = Counter(
            "sendseven_files_sent", "Files sent.", ["inbox", "message_type"], registry=r
        )
        self.files_failed = Counter(
            "sendseven_files_failed",
            "Files moved to failed/.",
            ["inbox", "message_type", "reason"],
            registry=r,
        )
        self.bytes_uploaded = Counter(
            "sendseven_uploaded_bytes",
            "Bytes of the files sent (each file counted once, however many attempts).",
            ["inbox"],
            registry=r,
        )
        self.retries = Counter(
            "sendseven_retries", "Retries scheduled after a transient error.", ["inbox"], registry=r
        )
        self.api_requests = Counter(
            "sendseven_api_requests",
            'API requests by endpoint and HTTP status ("none": no reply at all).',
            ["endpoint", "status"],
            registry=r,
        )
        self.last_sent = Gauge(
            "sendseven_last_sent_timestamp_seconds",
            "Unix time of the last file sent (0: none since start).",
            registry=r,
        )
        self.upload_seconds = Histogram(
            "sendseven_upload_duration_seconds",
            "Duration of each upload request (POST /attachments), in seconds.",
            buckets=UPLOAD_BUCKETS,
            registry=r,
        )
        self.send_seconds = Histogram(
            "sendseven_send_duration_seconds",
            "Duration of each send request (POST /messages), in seconds.",
            buckets=SEND_BUCKETS,
            registry=r,
        )
        self.latency_seconds = Histogram(
            "sendseven_drop_to_sent_seconds",
            "From the file's modification time to its arrival in sent/, in seconds.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_StateCollector(probes))
        outcomes.subscribe(self)

    # -- OutcomeListener -------------------------------------------------------------

    def queued(self, inbox: InboxConfig) -> None:
        self.files_queued.labels(inbox.name).inc()

    def sent(self, outcome: SentFile) -> None:
        inbox, entry = outcome.inbox, outcome.entry
        self.files_sent.labels(inbox.name, entry.message_type or UNKNOWN).inc()
        self.bytes_uploaded.labels(inbox.name).inc(entry.size or 0)
        now = time.time()
        self.last_sent.set(now)
        self.latency_seconds.observe(max(0.0, now - entry.arrived_ns / 1e9))

    def failed(self, outcome: FailedFile) -> None:
        message_type = outcome.entry.message_type or UNKNOWN
        self.files_failed.labels(outcome.inbox.name, message_type, outcome.reason).inc()

    def retried(self, inbox: InboxConfig) -> None:
        self.retries.labels(inbox.name).inc()

    def request(self, endpoint: str, status: int | None, seconds: float) -> None:
        self.api_requests.labels(endpoint, str(status) if status else "none").inc()
        if endpoint == "attachments":
            self.upload_seconds.observe(seconds)
        elif endpoint == "messages":
            self.send_seconds.observe(seconds)

    def exposition(self) -> bytes:
        """The ``/metrics`` body."""
        return generate_latest(self.registry)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether the daemon is healthy, and the ``/healthz`` body saying why."""
        observer_alive = self.probes.observer_alive()
        refused = self.probes.auth_refused()
        misconfigured = self.probes.api_misconfigured()
        reasons = []
        if not observer_alive:
            reasons.append("the filesystem observer is not running")
        if refused is not None:
            reasons.append(f"the API refuses the credentials ({refused})")
        if misconfigured is not None:
            reasons.append(f"{Hold.MISCONFIGURED}: {misconfigured}")
        stuck: list[ClaimAge] = []
        if refused is None and misconfigured is None:  # a hold: that is the reason
            bound = self.probes.stall_bound()
            stuck = sorted(
                (age for age in self.probes.claim_ages().values() if age.seconds > bound),
                key=lambda age: -age.seconds,
            )
            reasons.extend(
                f"a claimed file made no progress for {age.seconds:.0f} s (bound {bound:g} s):"
                f" inbox {age.inbox}, file {age.file}: {age.why}"
                for age in stuck
            )
        body: dict[str, Any] = {
            "status": "unhealthy" if reasons else "ok",
            "observer_alive": observer_alive,
            "credentials_accepted": refused is None,
            "api_ok": misconfigured is None,
        }
        if stuck:
            body["stuck_claims"] = [
                {"inbox": a.inbox, "file": a.file, "seconds": round(a.seconds), "why": a.why}
                for a in stuck
            ]
        if reasons:
            body["reason"] = "; ".join(reasons)
        return not reasons, body


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Metrics) -> None:
        # An IPv6 literal needs an AF_INET6 socket; http.server defaults to AF_INET.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.metrics = metrics
        self.log = get_logger()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a bare traceback on stderr.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the scraper went away: nothing to fix here
        self.log.exception("metrics_request_failed")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_SECONDS
    server_version = f"sendseven-watch/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib names it so
        """Scrapes are not worth a log line (the default writes to stderr)."""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = self.server.metrics.exposition()
            except Exception:  # a scrape must not take the server down
                self.server.log.exception("metrics_scrape_failed")
                self._reply(500, b"scrape failed; see the daemon's log\n", "text/plain")
                return
            self._reply(200, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            healthy, status = self.server.metrics.health()
            body = json.dumps(status, ensure_ascii=False).encode() + b"\n"
            self._reply(200 if healthy else 503, body, "application/json")
        elif path == "/":
            self._reply(200, b"sendseven-watch: /metrics /healthz\n", "text/plain")
        else:
            self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


class MetricsServer:
    """``/metrics`` and ``/healthz`` over HTTP on a background thread."""

    def __init__(self, metrics: Metrics, listen: tuple[str, int]) -> None:
        self.metrics = metrics
        self.listen = listen
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the real port when ``listen`` asked for port 0)."""
        if self._server is None:
            return self.listen
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve; a port that cannot be had is a :class:`WatchError`."""
        host, port = self.listen
        try:
            self._server = _Server((host, port), self.metrics)
        except OSError as error:
            why = error.strerror or str(error)
            raise WatchError(f"metrics.listen {host}:{port}: cannot listen: {why}") from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="metrics",
            daemon=True,
        )
        self._thread.start()
        get_logger().info("metrics_listening", host=host, port=self.address[1])

    def stop(self) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is None:
            return
        if thread is not None:
            server.shutdown()  # only with serve_forever running: it would wait forever
            thread.join(STOP_TIMEOUT_SECONDS)
        server.server_close()
