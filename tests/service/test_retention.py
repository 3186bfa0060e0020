"""Sent-folder retention: old files leave sent/, and nothing else is ever touched."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.config import InboxConfig
from daemon.fake.api import FakeApi
from daemon.service.retention import SECONDS_PER_DAY, Retention, prune_sent
from tests.helpers import Daemon, events, wait_until, write_config

#: 0.2 s expressed in days: long enough to tell "just archived" from "old".
TINY_DAYS = 0.2 / SECONDS_PER_DAY


#: capture_logs sees every level, whatever another test configured in this process.
pytestmark = pytest.mark.usefixtures("default_structlog")


def inbox_at(folder: Path, name: str = "conv_1") -> InboxConfig:
    path = folder / name
    (path / "sent").mkdir(parents=True, exist_ok=True)
    (path / "failed").mkdir(exist_ok=True)
    return InboxConfig(path, name, None, name, from_spool=True)


def older_than(path: Path, seconds: float) -> bool:
    st = path.lstat()
    return time.time() - max(st.st_mtime, st.st_ctime) > seconds


def test_old_sent_files_are_pruned_and_failed_files_never(tmp_path: Path) -> None:
    """Only regular, non-hidden files in sent/ go; failed/, symlinks, folders stay."""
    inbox = inbox_at(tmp_path)
    sent, failed = inbox.path / "sent", inbox.path / "failed"
    for name in ("a.pdf", "b.jpg", ".keep"):
        (sent / name).write_bytes(b"x")
    (sent / "nested").mkdir()
    (sent / "nested" / "c.pdf").write_bytes(b"x")
    outside = tmp_path / "outside.pdf"
    outside.write_bytes(b"x")
    (sent / "link.pdf").symlink_to(outside)
    (failed / "d.pdf").write_bytes(b"x")
    (failed / "d.pdf.error.json").write_text("{}")
    with capture_logs() as logs:
        pruned = prune_sent([inbox], days=30, now=time.time() + 31 * SECONDS_PER_DAY)
    assert pruned == 2
    assert sorted(p.name for p in sent.iterdir()) == [".keep", "link.pdf", "nested"]
    assert (sent / "nested" / "c.pdf").exists()
    assert outside.exists()
    assert sorted(p.name for p in failed.iterdir()) == ["d.pdf", "d.pdf.error.json"]
    assert logs == [
        {
            "event": "sent_pruned",
            "log_level": "info",
            "inbox": "conv_1",
            "count": 2,
            "older_than_days": 30,
        }
    ]


def test_files_younger_than_the_limit_stay_and_nothing_is_logged(tmp_path: Path) -> None:
    """29 days after archiving, a 30-day retention deletes nothing and says nothing."""
    inbox = inbox_at(tmp_path)
    (inbox.path / "sent" / "a.pdf").write_bytes(b"x")
    with capture_logs() as logs:
        assert prune_sent([inbox], days=30, now=time.time() + 29 * SECONDS_PER_DAY) == 0
    assert (inbox.path / "sent" / "a.pdf").exists()
    assert logs == []


def test_age_counts_from_arrival_in_sent_not_from_an_old_mtime(tmp_path: Path) -> None:
    """A scan dropped with a years-old mtime is not deleted right after it was sent."""
    inbox = inbox_at(tmp_path)
    old = inbox.path / "sent" / "scan-from-2001.pdf"
    old.write_bytes(b"x")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    assert prune_sent([inbox], days=1) == 0
    assert old.exists()


def test_missing_sent_folders_and_symlinked_ones_are_skipped(tmp_path: Path) -> None:
    """No sent/ yet: nothing to do; sent/ a symlink: not followed, and a warning says so."""
    bare = InboxConfig(tmp_path / "bare", "bare", None, "bare")
    bare.path.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.pdf").write_bytes(b"x")
    linked = InboxConfig(tmp_path / "linked", "linked", None, "linked")
    linked.path.mkdir()
    (linked.path / "sent").symlink_to(elsewhere)
    with capture_logs() as logs:
        assert prune_sent([bare, linked], days=1, now=time.time() + 10 * SECONDS_PER_DAY) == 0
    assert (elsewhere / "precious.pdf").exists()
    assert [(e["event"], e["inbox"]) for e in logs] == [("retention_skipped", "linked")]


def test_dated_folders_are_pruned_in_every_layout_and_emptied_ones_removed(
    tmp_path: Path,
) -> None:
    """Old files go from sent/, sent/YYYY/MM/ and sent/YYYY/MM/DD/ alike; a dated folder
    emptied goes too (with its emptied parents), never sent/ itself; a young file keeps its
    folder; other subfolders and a symlinked dated folder are not touched."""
    inbox = inbox_at(tmp_path)
    sent = inbox.path / "sent"
    for name in ("flat.pdf", "2025/11/monthly.pdf", "2026/01/15/daily.pdf", "2026/01/16/a.pdf"):
        (sent / name).parent.mkdir(parents=True, exist_ok=True)
        (sent / name).write_bytes(b"x")
    (sent / "keep").mkdir()
    (sent / "keep" / "mine.pdf").write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "12").mkdir(parents=True)
    (elsewhere / "12" / "precious.pdf").write_bytes(b"x")
    (sent / "2024").symlink_to(elsewhere)
    now = time.time() + 31 * SECONDS_PER_DAY
    young = sent / "2026" / "01" / "16" / "young.pdf"
    young.write_bytes(b"x")
    os.utime(young, (now, now))  # archived "later": its mtime is within the limit

    with capture_logs() as logs:
        pruned = prune_sent([inbox], days=30, now=now)

    assert pruned == 4
    assert sorted(p.relative_to(sent).as_posix() for p in sent.rglob("*")) == [
        "2024", "2026", "2026/01", "2026/01/16", "2026/01/16/young.pdf", "keep", "keep/mine.pdf",
    ]  # fmt: skip
    assert (elsewhere / "12" / "precious.pdf").exists()
    assert [(e["event"], e["count"]) for e in logs] == [("sent_pruned", 4)]
    prune_sent([inbox], days=30, now=now + 31 * SECONDS_PER_DAY)
    assert sorted(p.name for p in sent.iterdir()) == ["2024", "keep"]  # sent/ itself stays


def test_retention_runs_at_once_then_waits_for_its_interval(tmp_path: Path) -> None:
    """The first tick prunes, the next ones wait; a new retention setting prunes again."""
    inbox = inbox_at(tmp_path)
    days: list[float | None] = [TINY_DAYS]
    retention = Retention(lambda: [inbox], lambda: days[0], interval=3600)
    first = inbox.path / "sent" / "first.pdf"
    first.write_bytes(b"x")
    wait_until(lambda: older_than(first, 0.3))
    retention.tick()
    assert not first.exists()

    second = inbox.path / "sent" / "second.pdf"
    second.write_bytes(b"x")
    wait_until(lambda: older_than(second, 0.3))
    retention.tick()
    assert second.exists()  # not due for another hour

    days[0] = None
    retention.tick()
    assert second.exists()  # switched off
    days[0] = TINY_DAYS / 2
    retention.tick()
    assert not second.exists()  # switched on again (a reload): prunes at once


def test_the_daemon_prunes_at_start_and_logs_it(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """sent_retention_days: old sent files go at start with a sent_pruned line; failed stay."""
    config = write_config(tmp_path, api.url, sent_retention_days=1 / SECONDS_PER_DAY)
    inbox = inbox_at(tmp_path / "spool")
    old = inbox.path / "sent" / "old.pdf"
    old.write_bytes(b"%PDF-1.4\nold")
    (inbox.path / "failed" / "old.pdf").write_bytes(b"%PDF-1.4\nold")
    (inbox.path / "failed" / "old.pdf.error.json").write_text("{}")
    wait_until(lambda: older_than(old, 1.5))
    daemon = Daemon(config)
    daemons.append(daemon)
    (line,) = daemon.wait_event("sent_pruned")
    assert (line["inbox"], line["count"]) == ("conv_1", 1)
    assert line["level"] == "info"
    assert not old.exists()
    assert sorted(p.name for p in (inbox.path / "failed").iterdir()) == [
        "old.pdf",
        "old.pdf.error.json",
    ]

    fresh = inbox.path / "new.pdf"
    fresh.write_bytes(b"%PDF-1.4\nnew")
    daemon.wait_event("file_sent")
    assert daemon.stop() == 0
    assert (inbox.path / "sent" / "new.pdf").exists()  # the next prune is an hour away
    assert len(events(daemon.lines, "sent_pruned")) == 1


def test_a_recursive_inbox_has_its_mirrored_subfolders_pruned_too(tmp_path: Path) -> None:
    """A recursive inbox archives sent/2026-11/scan.pdf (its dropper's subfolder kept):
    retention prunes it and the folder it emptied, down to max_depth and no deeper; an
    inbox that takes no subfolders leaves such folders alone."""
    inbox = dataclasses.replace(inbox_at(tmp_path), recursive=True, max_depth=2)
    sent = inbox.path / "sent"
    for name in ("2026-11/scan.pdf", "by-client/acme/a.pdf", "a/b/c/too-deep.pdf"):
        (sent / name).parent.mkdir(parents=True, exist_ok=True)
        (sent / name).write_bytes(b"x")
    later = time.time() + 31 * SECONDS_PER_DAY
    flat = inbox_at(tmp_path, "conv_2")
    (flat.path / "sent" / "2026-11").mkdir()
    (flat.path / "sent" / "2026-11" / "mine.pdf").write_bytes(b"x")

    assert prune_sent([inbox, flat], days=30, now=later) == 2

    left = sorted(p.relative_to(sent).as_posix() for p in sent.rglob("*") if p.is_file())
    assert left == ["a/b/c/too-deep.pdf"]
    assert not (sent / "2026-11").exists()
    assert (flat.path / "sent" / "2026-11" / "mine.pdf").exists()
