"""Stopping: SIGTERM stops the daemon whenever it lands, and a clean stop is quiet."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from daemon.fake.api import FakeApi
from tests.helpers import Daemon, events, inject, write_config


def test_a_clean_stop_with_many_busy_inboxes_logs_no_library_error(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """200 inboxes watched with inotify, a file sent from each, then SIGTERM: exit 0 and
    not one library_log line (watchdog's emitters, stopped while events of the last moves
    were queued for them, said "queue_events() called when the thread is inactive")."""
    config = write_config(tmp_path, api.url, observer="inotify")
    inboxes = [tmp_path / "spool" / f"conv_{n:03d}" for n in range(200)]
    for inbox in inboxes:
        inbox.mkdir()
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    for inbox in inboxes:
        (inbox / "scan.pdf").write_bytes(b"%PDF-1.4 one per inbox")
    daemon.wait_event("file_sent", count=len(inboxes), timeout=90)

    assert daemon.stop() == 0
    assert events(daemon.lines, "library_log") == []


#: Makes ``Event.clear`` on the daemon's main thread hold the Event's lock for a while:
#: a signal that lands then finds the main thread holding a lock, as it can at any moment.
_SLOW_CLEAR = """\
import threading, time
def clear(self):
    with self._cond:
        if threading.current_thread() is threading.main_thread():
            time.sleep(1.0)
        self._flag = False
threading.Event.clear = clear
"""


def test_sigterm_landing_while_the_main_thread_holds_a_lock_still_stops_the_daemon(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """SIGTERM while the main thread holds a lock: exit 0 (a handler that took that lock hung)."""
    config = write_config(tmp_path, api.url)
    daemon = Daemon(config, env=inject(tmp_path / "inject", _SLOW_CLEAR))
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    daemon.signal(signal.SIGHUP)  # wakes the main loop, which then clears what woke it
    time.sleep(0.3)
    assert daemon.stop(timeout=20) == 0
    assert events(daemon.lines, "daemon_stopping")[0]["signal"] == "SIGTERM"


def test_sigterm_after_a_burst_of_sighups_stops_the_daemon(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """SIGHUP after SIGHUP for two seconds, then SIGTERM: the daemon exits 0 and reloaded."""
    config = write_config(tmp_path, api.url)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        daemon.signal(signal.SIGHUP)
        time.sleep(0.0005)
    assert daemon.stop(timeout=20) == 0
    assert events(daemon.lines, "config_reloaded")
