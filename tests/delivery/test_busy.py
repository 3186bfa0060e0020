"""One busy conversation: ``sending`` journaled ahead of each file's turn, ``sent``
journaled by the archiver before the move, and duplicates still caught in between."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.config import load_config
from daemon.delivery.pipeline import Pipeline
from daemon.delivery.retry import ONCE
from daemon.fake import FakeApi, Faults
from daemon.states import Stage
from daemon.store.claims import Owner
from daemon.store.journal import JOURNAL_FILE, Journal
from daemon.watch.inboxes import all_inboxes
from tests.helpers import (
    Daemon,
    copy_sample,
    run_cli,
    running,
    unarchivable_sent,
    wait_until,
    write_config,
)

#: capture_logs sees every level, whatever another test configured in this process.
pytestmark = pytest.mark.usefixtures("default_structlog")


class HeldSent(Journal):
    """A journal whose ``sent`` commits wait until :attr:`release` is set: the archiver
    is held just before it journals a reply."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.release = threading.Event()
        self.held = threading.Event()

    def update(self, claim_id: str, **changes: Any) -> None:
        self._hold([changes])
        super().update(claim_id, **changes)

    def update_each(self, changes: list[tuple[str, dict[str, Any]]]) -> None:
        self._hold([each for _, each in changes])
        super().update_each(changes)

    def _hold(self, changes: list[dict[str, Any]]) -> None:
        if any(each.get("stage") == Stage.SENT for each in changes):
            self.held.set()
            self.release.wait(30)


class Batches(Journal):
    """A journal that remembers the claims of each ``update_many`` call."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.batches: list[list[str]] = []

    def update_many(self, claim_ids: list[str], **changes: Any) -> None:
        super().update_many(claim_ids, **changes)
        self.batches.append(list(claim_ids))


def _drop(inbox: Path, name: str, body: bytes, mtime_s: int) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / name).write_bytes(body)
    os.utime(inbox / name, (mtime_s, mtime_s))


@pytest.mark.parametrize("duplicates", ["skip", "send"])
def test_files_waiting_their_turn_are_journaled_sending_before_the_send_ahead_replies(
    api: FakeApi, tmp_path: Path, duplicates: str
) -> None:
    """With each send taking 1 s, the four files of a conversation are all journaled
    ``sending`` before the second send is made (with ``duplicates: send``, identical
    bytes too); they go out in order, once."""
    api.faults = Faults(send_latency_s=1.0)
    config = load_config(write_config(tmp_path, api.url, workers=4, duplicates=duplicates))
    inbox_path = tmp_path / "spool" / "conv_1"
    names = [f"p{n}.pdf" for n in range(4)]
    for n, name in enumerate(names):
        body = f"%PDF-1.4 page {n}" if duplicates == "skip" else "%PDF-1.4 the same page"
        _drop(inbox_path, name, body.encode(), 1_000_000 + n)
    journal = Batches(config.state_dir)
    owner = Owner()
    pipeline = Pipeline(config, journal, owner, policy=ONCE)
    [inbox] = all_inboxes(config)
    with running(pipeline, owner, journal):
        for n, name in enumerate(names):
            assert pipeline.take(inbox, name, 1_000_000 + n)

        def all_sending() -> bool:
            stages = [entry.stage for entry in journal.open_entries()]
            return stages == [Stage.SENDING] * 4

        wait_until(all_sending, timeout=10, step=0.01)
        assert len(api.messages()) <= 1  # the second send is not made yet
        assert pipeline.wait_idle(timeout=30)
        assert journal.open_entries() == []
    assert [m.attachments[0].filename for m in api.messages()] == names
    assert sorted(claim for batch in journal.batches for claim in batch) == sorted(
        {claim for batch in journal.batches for claim in batch}
    )  # each file journaled ahead at most once
    assert sorted(p.name for p in (inbox_path / "sent").iterdir()) == names


def test_a_twin_sent_just_before_is_a_duplicate_while_its_sent_is_not_yet_journaled(
    api: FakeApi, tmp_path: Path
) -> None:
    """Two identical files back to back (``duplicates: skip``), the archiver held before
    it journals the first one ``sent``: the second still fails as ``duplicate``, its
    sidecar naming the first's message id, name and time; one message."""
    config = load_config(write_config(tmp_path, api.url, workers=4))
    inbox_path = tmp_path / "spool" / "conv_1"
    _drop(inbox_path, "export-1.pdf", b"%PDF-1.4 exported twice", 1_000_000)
    _drop(inbox_path, "export-2.pdf", b"%PDF-1.4 exported twice", 1_000_100)
    journal = HeldSent(config.state_dir)
    owner = Owner()
    pipeline = Pipeline(config, journal, owner, policy=ONCE)
    [inbox] = all_inboxes(config)
    with running(pipeline, owner, journal), capture_logs() as logs:
        assert pipeline.take(inbox, "export-1.pdf", 1_000_000)
        assert pipeline.take(inbox, "export-2.pdf", 1_000_100)
        assert journal.held.wait(10)
        wait_until((inbox_path / "failed" / "export-2.pdf.error.json").exists)
        first = next(e for e in journal.open_entries() if e.name == "export-1.pdf")
        assert first.stage == Stage.SENDING  # its reply is not journaled yet
        journal.release.set()
        assert pipeline.wait_idle(timeout=20)
    (message,) = api.messages()
    sidecar = json.loads((inbox_path / "failed" / "export-2.pdf.error.json").read_text())
    assert sidecar["reason"] == "duplicate"
    assert sidecar["duplicate_of"]["message_id"] == message.id
    assert sidecar["duplicate_of"]["file"] == "export-1.pdf"
    assert sidecar["duplicate_of"]["sent_at"].endswith("Z")
    assert [p.name for p in (inbox_path / "sent").iterdir()] == ["export-1.pdf"]
    failed = [line for line in logs if line["event"] == "file_failed"]
    assert [(line["file"], line["reason"]) for line in failed] == [("export-2.pdf", "duplicate")]


def test_a_file_that_cannot_be_archived_is_journaled_sent_and_not_sent_again(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """``sent`` is journaled before the move: a file whose sent/ cannot be made (a symlink
    to a file: root ignores modes) is ``sent`` in the journal with its message id; killed
    there, the next run archives it without a second request to /messages."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    unarchivable_sent(inbox)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    copy_sample("document.pdf", inbox, "a.pdf")
    daemon.wait_event("archive_failed")
    state_dir = load_config(config).state_dir
    with sqlite3.connect(state_dir / JOURNAL_FILE) as db:
        [(stage, message_id)] = db.execute("SELECT stage, message_id FROM claims").fetchall()
    (message,) = api.messages()
    assert (stage, message_id) == ("sent", message.id)
    daemon.kill()

    (inbox / "sent").unlink()
    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert (inbox / "sent" / "a.pdf").exists()
    assert sum(1 for r in api.requests() if r.path.endswith("/messages")) == 1
