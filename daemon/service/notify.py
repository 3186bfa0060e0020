"""Tell systemd how the daemon is doing: sd_notify(3) in a few lines of ``socket``.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, a unix datagram socket, and waits for
``READY=1`` before it calls the service started. Each message is one datagram of
``KEY=VALUE`` lines. With ``WatchdogSec=`` it also passes ``$WATCHDOG_USEC`` and kills the
service when no ``WATCHDOG=1`` arrives within that time; :class:`WatchdogPinger` sends it at
half the interval, but only while the daemon says it is healthy, so a hung daemon is restarted.

Outside systemd (a terminal, the tests, ``--once``) there is no socket and every call is a
no-op. Nothing here raises: a notification that cannot be delivered must never take the
daemon down, so :meth:`Notifier.notify` reports failure as ``False``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

#: sd_notify sends at most this many seconds before giving up on a full socket buffer.
SEND_TIMEOUT_SECONDS = 2.0

#: How long :meth:`WatchdogPinger.stop` waits for the thread; a ping takes at most
#: ``SEND_TIMEOUT_SECONDS`` and the health callable is expected to be quick.
STOP_JOIN_SECONDS = 10.0


def _socket_address(value: str) -> str | None:
    """Turn ``$NOTIFY_SOCKET`` into an ``AF_UNIX`` address; ``@name`` is the abstract namespace."""
    if not value:
        return None
    if value.startswith("@"):
        # Linux abstract namespace: a leading NUL byte instead of a file in the file system.
        return "\0" + value[1:]
    return value


def _watchdog_seconds(environ: Mapping[str, str]) -> float | None:
    """The watchdog timeout from ``$WATCHDOG_USEC``, if it is meant for this process."""
    owner = environ.get("WATCHDOG_PID", "").strip()
    # The variables are inherited by children; only the process they name must ping.
    if owner and owner != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", "").strip())
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000


def _one_line(text: str) -> str:
    """A value must not contain a newline: it would start a new ``KEY=`` assignment."""
    return " ".join(text.splitlines())


class Notifier:
    """Sends sd_notify messages to the socket systemd passed in ``$NOTIFY_SOCKET``."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog = _watchdog_seconds(env)

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; True when it was delivered to the socket."""
        if self._address is None or not lines:
            return False
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT_SECONDS)
                sock.sendto(payload, self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is complete: every inbox is watched. ``status`` is the
        one line ``systemctl status`` shows."""
        self.notify("READY=1", *self._status_line(status))

    def stopping(self, status: str | None = None) -> None:
        """Shutdown has begun; requests in flight are still finishing."""
        self.notify("STOPPING=1", *self._status_line(status))

    def reloading(self) -> None:
        """A reload has begun; call :meth:`ready` when it is done (accepted or refused).

        ``MONOTONIC_USEC`` lets systemd >= 253 (``Type=notify-reload``) match this message
        to the reload it asked for; older versions ignore the field.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half the timeout); None without a watchdog."""
        if self._address is None or self._watchdog is None:
            return None
        return self._watchdog / 2

    @staticmethod
    def _status_line(text: str | None) -> tuple[str, ...]:
        return () if text is None else (f"STATUS={_one_line(text)}",)


class WatchdogPinger:
    """A stoppable daemon thread that sends ``WATCHDOG=1`` while ``healthy()`` returns True.

    ``healthy`` runs on the pinger's thread; it must be quick and thread-safe. When it
    returns False (or raises) no ping is sent and, if that lasts, systemd restarts the service.
    """

    def __init__(self, notifier: Notifier, healthy: Callable[[], bool]) -> None:
        self._notifier = notifier
        self._healthy = healthy
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while the pinger thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start pinging; does nothing without a watchdog or when already running."""
        interval = self._notifier.watchdog_interval()
        if interval is None or self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="sd-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop pinging and wait for the thread; safe to call more than once."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_JOIN_SECONDS)

    def _run(self, interval: float) -> None:
        # Ping at once, then every interval: systemd arms the timer when the service starts.
        while True:
            if self._is_healthy():
                self._notifier.notify("WATCHDOG=1")
            if self._stop.wait(interval):
                return

    def _is_healthy(self) -> bool:
        try:
            return bool(self._healthy())
        # A failing health check means "not healthy", never a dead pinger thread.
        except Exception:  # noqa: BLE001
            return False
