"""A clean stop is quiet: no error line from the libraries while the watches go."""

from __future__ import annotations

from pathlib import Path

from daemon.fake.api import FakeApi
from tests.helpers import Daemon, events, write_config


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
