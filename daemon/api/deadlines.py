"""A wall-clock deadline for every request: connecting, sending the body, reading the reply.

requests' and urllib3's timeouts are per socket operation: a server that sends one byte of
its reply every few seconds never trips them, and keeps a worker forever. Every request
therefore has a total budget (see :meth:`daemon.api.client.ApiClient.budget`), and one
watchdog thread for the whole process shuts down the socket of a request that outlives it.

Why a watchdog that shuts the socket down, rather than setting the socket's timeout to the
time left before each read: the reads happen deep inside ``http.client`` and urllib3
(status line and headers through a buffered file, the body through urllib3's decoder),
where there is no hook before each ``recv``; a watchdog needs none. ``shutdown(2)`` (not
``close``: the file descriptor stays valid, so no other thread's new socket can take its
number) wakes a thread blocked in ``recv`` or ``send`` at once, with end-of-file or an
error, on plain and TLS sockets alike; urllib3 then raises one of its errors, which the
client turns into a :class:`~daemon.errors.TransportError`. The same cut aborts requests
in flight when the daemon stops (:meth:`InFlight.cut`).

The watchdog learns which socket a request uses from the connection classes below, which
the client installs in its own connection pools: each connection, when it connects or
sends a request, attaches itself to the request the calling thread has in flight (a thread
runs one request at a time: each worker has its own client).
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from enum import StrEnum
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection


class Cut(StrEnum):
    """Why a request's socket was shut down."""

    DEADLINE = "deadline"
    """The request outlived its wall-clock budget."""
    STOPPED = "stopped"
    """The daemon stops and would wait no longer for it."""


class InFlight:
    """One request in flight: its deadline, the connection it goes over, and whether it
    was cut short."""

    def __init__(self, deadline: float) -> None:
        #: ``time.monotonic()`` after which the watchdog cuts it.
        self.deadline = deadline
        #: Why it was cut, or None.
        self.cut_by: Cut | None = None
        self._lock = threading.Lock()
        self._socket: Any = None
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def attach(self, connection: HTTPConnection) -> None:
        """The request goes over ``connection`` (cut at once if it was cut already).

        The socket is kept, not the connection: ``http.client`` lets go of the socket of
        a reply that ends the connection while the reply is still being read."""
        with self._lock:
            if self._done or connection.sock is None:
                return
            self._socket = connection.sock
            if self.cut_by is not None:
                _shut_down(self._socket)

    def cut(self, why: Cut) -> None:
        """Shut the request's socket down, unless it finished."""
        with self._lock:
            if self._done or self.cut_by is not None:
                return
            self.cut_by = why
            if self._socket is not None:
                _shut_down(self._socket)

    def finish(self) -> None:
        """The request is over: its connection may serve the next one, never cut."""
        with self._lock:
            self._done = True
            self._socket = None


def _shut_down(sock: Any) -> None:
    # A TLS-in-TLS connection (HTTPS through an HTTPS proxy) wraps the real socket.
    sock = getattr(sock, "socket", sock)
    if isinstance(sock, socket.socket):
        # Not connected (yet, or any more): nothing to wake. socket.socket's own shutdown,
        # also for an SSLSocket: its override drops the TLS state, which the reading
        # thread may be using at this very moment.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Watchdog:
    """One thread that cuts requests past their deadline; started on first use.

    It holds the requests in flight (at most one per worker thread) and sleeps until the
    earliest deadline among them. A request is added and removed without waking it: the
    thread is woken only when a new request is due before the moment it means to look next
    (or when it sleeps with nothing to watch). Budgets are tens of seconds and requests
    take milliseconds, so it wakes about once a budget, not once a request.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._in_flight: set[InFlight] = set()
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None

    def watch(self, request: InFlight) -> None:
        with self._cond:
            self._in_flight.add(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="api-deadlines")
                self._thread.daemon = True  # it holds nothing: a process may exit any time
                self._thread.start()
            elif request.deadline < self._wake_at:
                self._cond.notify()

    def forget(self, request: InFlight) -> None:
        """``request`` is over: no longer watched."""
        with self._cond:
            self._in_flight.discard(request)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [r for r in self._in_flight if r.deadline <= now]
                self._in_flight.difference_update(due)
                self._wake_at = min((r.deadline for r in self._in_flight), default=math.inf)
                if not due:
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    continue
            for request in due:
                request.cut(Cut.DEADLINE)


WATCHDOG = Watchdog()

_current = threading.local()


def current() -> InFlight | None:
    """The request the calling thread has in flight, if any."""
    request: InFlight | None = getattr(_current, "request", None)
    return request


def set_current(request: InFlight | None) -> None:
    _current.request = request


def _attach(connection: HTTPConnection) -> None:
    request = current()
    if request is not None:
        request.attach(connection)


class DeadlineHTTPConnection(HTTPConnection):
    """An HTTP connection the watchdog can cut."""

    def connect(self) -> None:
        _attach(self)
        super().connect()
        _attach(self)  # the socket it just made: cut at once if the deadline passed

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


class DeadlineHTTPSConnection(HTTPSConnection):
    """An HTTPS connection the watchdog can cut (once connected: a TLS handshake is
    bounded by the per-operation timeouts only)."""

    def connect(self) -> None:
        _attach(self)
        super().connect()
        _attach(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


def deadline_connection_class(base: type[Any]) -> type[Any] | None:
    """The cuttable connection class for a pool whose connections are ``base``, or None
    when the pool's connections are of a kind not known here."""
    if base in (DeadlineHTTPConnection, DeadlineHTTPSConnection):
        return base
    if base is HTTPSConnection:
        return DeadlineHTTPSConnection
    if base is HTTPConnection:
        return DeadlineHTTPConnection
    return None
