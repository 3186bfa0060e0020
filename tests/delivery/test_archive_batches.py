"""The archiver takes the files waiting for it together: their replies journaled in one
commit, their archiving in another; a commit the journal refuses reaches only its own
file."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.config import load_config
from daemon.delivery.pipeline import Pipeline
from daemon.delivery.retry import ONCE
from daemon.fake import FakeApi
from daemon.states import Stage
from daemon.store.claims import Owner
from daemon.store.journal import Journal
from daemon.watch.inboxes import all_inboxes
from tests.helpers import running, wait_until, write_config

#: capture_logs sees every level, whatever another test configured in this process.
pytestmark = pytest.mark.usefixtures("default_structlog")

CONVERSATIONS = 6


class Recorded(Journal):
    """A journal that notes the stages of each ``update_each`` call, holds the first one
    that journals a reply until :attr:`release` is set, and refuses the archiving of the
    claims in :attr:`refuse`."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.calls: list[list[Stage]] = []
        #: The claims of the call held.
        self.first: list[str] = []
        self.held = threading.Event()
        self.release = threading.Event()
        self.refuse: set[str] = set()

    def update_each(self, changes: list[tuple[str, dict[str, Any]]]) -> None:
        stages = [each["stage"] for _, each in changes]
        if Stage.SENT in stages and not self.held.is_set():
            self.first = [claim for claim, _ in changes]
            self.held.set()
            self.release.wait(30)
        refused = [claim for claim, each in changes if claim in self.refuse]
        if refused and Stage.ARCHIVED in stages:
            raise sqlite3.OperationalError("database or disk is full")
        self.calls.append(stages)
        super().update_each(changes)


def _scene(api: FakeApi, tmp_path: Path) -> tuple[Pipeline, Recorded, Owner, list[Path]]:
    """One PDF in each of six conversations, taken by a pipeline with eight workers."""
    config = load_config(write_config(tmp_path, api.url, workers=8, duplicates="send"))
    inboxes: list[Path] = []
    for n in range(CONVERSATIONS):
        inbox = tmp_path / "spool" / f"conv_{n}"
        inbox.mkdir(parents=True)
        (inbox / f"doc{n}.pdf").write_bytes(f"%PDF-1.4 page {n}".encode())
        inboxes.append(inbox)
    journal = Recorded(config.state_dir)
    owner = Owner()
    return Pipeline(config, journal, owner, policy=ONCE), journal, owner, inboxes


def _sent_while_held(pipeline: Pipeline, journal: Recorded) -> None:
    """Every file taken; the archiver held in its first commit until the files it has not
    taken yet are all waiting for it."""
    for inbox in all_inboxes(pipeline.config):
        (name,) = (p.name for p in inbox.path.iterdir() if p.is_file())
        assert pipeline.take(inbox, name, inbox.path.joinpath(name).stat().st_mtime_ns)
    assert journal.held.wait(10)
    waiting = CONVERSATIONS - len(journal.first)
    wait_until(lambda: pipeline._to_archive.qsize() == waiting)  # the queue itself


def test_files_replied_while_the_archiver_is_busy_are_journaled_and_archived_together(
    api: FakeApi, tmp_path: Path
) -> None:
    """The archiver held in its first commit while the other sends reply: it then takes
    those files in one commit for their replies and one for their archiving; each file
    ends in ``sent/``, journaled, with one ``file_sent``."""
    pipeline, journal, owner, inboxes = _scene(api, tmp_path)
    with running(pipeline, owner, journal), capture_logs() as logs:
        _sent_while_held(pipeline, journal)
        journal.release.set()
        assert pipeline.wait_idle(timeout=20)
        assert journal.open_entries() == []
    first, rest = len(journal.first), CONVERSATIONS - len(journal.first)
    assert journal.calls == [
        [Stage.SENT] * first,
        [Stage.ARCHIVED] * first,
        [Stage.SENT] * rest,
        [Stage.ARCHIVED] * rest,
    ]
    assert rest > 1
    sent = sorted(line["file"] for line in logs if line["event"] == "file_sent")
    assert sent == [f"doc{n}.pdf" for n in range(CONVERSATIONS)]
    for n, inbox in enumerate(inboxes):
        assert [p.name for p in (inbox / "sent").iterdir()] == [f"doc{n}.pdf"]
    assert len(api.messages()) == CONVERSATIONS


def test_an_archiving_the_journal_refuses_holds_up_only_its_own_file(
    api: FakeApi, tmp_path: Path
) -> None:
    """One file of a batch whose archiving the journal refuses: the others are journaled,
    reported and closed; that one has its ``file_error`` and stays claimed (``--once``),
    its move done, for the next run to report."""
    pipeline, journal, owner, _ = _scene(api, tmp_path)
    with running(pipeline, owner, journal), capture_logs() as logs:
        _sent_while_held(pipeline, journal)
        refused = next(e for e in journal.open_entries() if e.claim_id not in journal.first)
        refused_name = refused.name
        journal.refuse = {refused.claim_id}
        journal.release.set()
        wait_until(lambda: len([e for e in logs if e["event"] == "file_sent"]) >= 5)
        wait_until(lambda: any(e["event"] == "file_error" for e in logs))
        (left,) = journal.open_entries()
    sent = sorted(line["file"] for line in logs if line["event"] == "file_sent")
    assert refused_name not in sent
    assert len(sent) == CONVERSATIONS - 1
    (error,) = [line for line in logs if line["event"] == "file_error"]
    assert error["file"] == refused_name
    assert (left.name, left.stage) == (refused_name, Stage.SENT)
    assert (Path(refused.inbox) / "sent" / refused_name).is_file()
