"""Outcomes hands every outcome to each listener; a listener that raises stops nothing; the
log listener says each file's outcome as one line."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.config import InboxConfig, load_config
from daemon.delivery.outcomes import FailedFile, LogOutcomes, Outcomes, SentFile
from daemon.delivery.pipeline import Pipeline
from daemon.delivery.retry import ONCE
from daemon.fake.api import FakeApi
from daemon.states import Reason, Stage
from daemon.store.claims import Owner
from daemon.store.journal import Entry, Journal
from daemon.watch.inboxes import all_inboxes
from tests.helpers import DATA, running, write_config

#: capture_logs sees every level, whatever another test configured in this process.
pytestmark = pytest.mark.usefixtures("default_structlog")


class Heard:
    """An OutcomeListener that writes down what it hears."""

    def __init__(self) -> None:
        self.heard: list[tuple[object, ...]] = []

    def queued(self, inbox: InboxConfig) -> None:
        self.heard.append(("queued", inbox.name))

    def sent(self, outcome: SentFile) -> None:
        self.heard.append(("sent", outcome.inbox.name, outcome.entry.name))

    def failed(self, outcome: FailedFile) -> None:
        self.heard.append(("failed", outcome.inbox.name, outcome.reason, outcome.entry.name))

    def retried(self, inbox: InboxConfig) -> None:
        self.heard.append(("retried", inbox.name))

    def request(self, endpoint: str, status: int | None, seconds: float) -> None:
        self.heard.append(("request", endpoint, status))


class Broken(Heard):
    """A listener with a bug in every method."""

    def __getattribute__(self, name: str) -> object:
        if name in {"queued", "sent", "failed", "retried", "request"}:
            raise RuntimeError(f"bug in {name}")
        return super().__getattribute__(name)


INBOX = InboxConfig(Path("/spool/conv_1"), "conv_1", None, "conv_1")


def _entry(**known: Any) -> Entry:
    return Entry(
        claim_id="sw-1", inbox="/spool/conv_1", conversation_id="conv_1", name="a.pdf",
        stage=Stage.ARCHIVED, arrived_ns=0, claimed_at=0.0, updated_at=0.0, **known,
    )  # fmt: skip


def _sent(entry: Entry, **more: Any) -> SentFile:
    return SentFile(
        inbox=INBOX, entry=entry, size=entry.size, archived_as="a.pdf",
        duration_ms=more.pop("duration_ms", 12), **more,
    )  # fmt: skip


def _failed(entry: Entry, **more: Any) -> FailedFile:
    return FailedFile(
        inbox=INBOX, entry=entry, size=entry.size, archived_as="a.pdf",
        reason=Reason.TOO_LARGE, status=413, detail="too large", **more,
    )  # fmt: skip


def test_every_listener_hears_each_outcome_even_after_one_that_raises() -> None:
    """A listener that raises is logged (outcome_listener_failed) and the next one hears."""
    inbox = INBOX
    entry = _entry()
    heard = Heard()
    outcomes = Outcomes(Broken())
    outcomes.subscribe(heard)
    with capture_logs() as logs:
        outcomes.queued(inbox)
        outcomes.sent(_sent(entry))
        outcomes.failed(_failed(entry))
        outcomes.retried(inbox)
        outcomes.request("messages", None, 0.1)
    assert heard.heard == [
        ("queued", "conv_1"),
        ("sent", "conv_1", "a.pdf"),
        ("failed", "conv_1", Reason.TOO_LARGE, "a.pdf"),
        ("retried", "conv_1"),
        ("request", "messages", None),
    ]
    failures = [line for line in logs if line["event"] == "outcome_listener_failed"]
    assert [line["outcome"] for line in failures] == [
        "queued", "sent", "failed", "retried", "request",
    ]  # fmt: skip


def test_the_log_listener_says_each_outcome_as_one_line_with_the_readme_fields() -> None:
    """file_sent (info) and file_failed (warning) carry the README's fields, in order;
    ``recovered: true`` only when said from the journal after a crash."""
    entry = _entry(
        size=5, sha256="ab" * 32, message_type="document", content_type="application/pdf",
        attachment_id="att_1", message_id="msg_1", attempts=2,
    )  # fmt: skip
    with capture_logs() as logs:
        LogOutcomes().sent(_sent(entry))
        LogOutcomes().failed(_failed(entry))
        LogOutcomes().sent(_sent(entry, duration_ms=None, recovered=True))
        LogOutcomes().failed(_failed(entry, recovered=True))
    common = {
        "inbox": "conv_1", "conversation_id": "conv_1", "file": "a.pdf", "size": 5,
        "message_type": "document", "content_type": "application/pdf", "attempts": 2,
        "archived_as": "a.pdf",
    }  # fmt: skip
    sent = {"sha256": "ab" * 32, "attachment_id": "att_1", "message_id": "msg_1"}
    failed = {"reason": Reason.TOO_LARGE, "status": 413, "detail": "too large"}
    assert logs == [
        {"event": "file_sent", "log_level": "info", **common, **sent, "duration_ms": 12},
        {"event": "file_failed", "log_level": "warning", **common, **failed},
        {
            "event": "file_sent", "log_level": "info", **common, "recovered": True, **sent,
            "duration_ms": None,
        },
        {"event": "file_failed", "log_level": "warning", **common, "recovered": True, **failed},
    ]  # fmt: skip
    assert [list(line)[:-2] for line in logs] == [  # capture_logs puts event, level last
        [*common, *sent, "duration_ms"],
        [*common, *failed],
        [*common, "recovered", *sent, "duration_ms"],
        [*common, "recovered", *failed],
    ]


def test_a_listener_that_raises_neither_stops_archiving_nor_the_outcome_line(
    api: FakeApi, tmp_path: Path
) -> None:
    """With a broken listener ahead of the log: the file still reaches sent/, the journal
    says archived, and file_sent is still logged (after outcome_listener_failed)."""
    config = load_config(write_config(tmp_path, api.url))
    inbox_path = tmp_path / "spool" / "conv_1"
    inbox_path.mkdir()
    (inbox_path / "scan.pdf").write_bytes(b"%PDF-1.4 a broken listener")
    journal = Journal(config.state_dir)
    owner = Owner()
    pipeline = Pipeline(
        config, journal, owner, policy=ONCE, outcomes=Outcomes(Broken(), LogOutcomes())
    )
    [inbox] = all_inboxes(config)
    with running(pipeline, owner, journal):
        with capture_logs() as logs:
            assert pipeline.take(inbox, "scan.pdf", 1)
            assert pipeline.wait_idle(timeout=20)
        unarchived = journal.open_entries()
    assert (inbox_path / "sent" / "scan.pdf").read_bytes() == b"%PDF-1.4 a broken listener"
    assert unarchived == []
    assert not list((inbox_path / ".sendseven-watch").glob("*/*"))
    said = [line["event"] for line in logs]
    assert said.index("outcome_listener_failed") < said.index("file_sent")
    assert said.count("file_sent") == 1


def test_the_pipeline_reports_to_the_log_by_default(api: FakeApi, tmp_path: Path) -> None:
    """A Pipeline made without outcomes still logs file_failed (its default listener)."""
    config = load_config(write_config(tmp_path, api.url))
    inbox_path = tmp_path / "spool" / "conv_1"
    inbox_path.mkdir()
    shutil.copyfile(DATA / "image.bmp", inbox_path / "logo.bmp")
    journal = Journal(config.state_dir)
    owner = Owner()
    pipeline = Pipeline(config, journal, owner, policy=ONCE)
    [inbox] = all_inboxes(config)
    with running(pipeline, owner, journal), capture_logs() as logs:
        assert pipeline.take(inbox, "logo.bmp", 1)
        assert pipeline.wait_idle(timeout=20)
    [failed] = [line for line in logs if line["event"] == "file_failed"]
    assert failed["file"] == "logo.bmp"
    assert failed["log_level"] == "warning"
    assert failed["reason"] == Reason.UNSUPPORTED_TYPE
    assert (inbox_path / "failed" / "logo.bmp").exists()


def test_a_file_is_no_longer_counted_in_progress_when_its_outcome_is_heard(
    api: FakeApi, tmp_path: Path
) -> None:
    """What a listener hears is already so: a file said sent or failed is no longer in
    progress (files_in_progress, read at that moment, must not count it)."""
    config = load_config(write_config(tmp_path, api.url))
    inbox_path = tmp_path / "spool" / "conv_1"
    inbox_path.mkdir()
    shutil.copyfile(DATA / "image.bmp", inbox_path / "logo.bmp")  # refused: failed/
    (inbox_path / "scan.pdf").write_bytes(b"%PDF-1.4 counted")  # sent/
    journal = Journal(config.state_dir)
    owner = Owner()
    outcomes = Outcomes()
    pipeline = Pipeline(config, journal, owner, policy=ONCE, outcomes=outcomes)
    seen: list[tuple[str, dict[str, int]]] = []

    class CountsWhenHeard(Heard):
        def sent(self, outcome: SentFile) -> None:
            seen.append((outcome.entry.name, pipeline.counts()))

        def failed(self, outcome: FailedFile) -> None:
            seen.append((outcome.entry.name, pipeline.counts()))

    outcomes.subscribe(CountsWhenHeard())
    [inbox] = all_inboxes(config)
    with running(pipeline, owner, journal):
        assert pipeline.take(inbox, "logo.bmp", 1)
        assert pipeline.wait_idle(timeout=20)
        assert pipeline.take(inbox, "scan.pdf", 2)
        assert pipeline.wait_idle(timeout=20)
    assert seen == [("logo.bmp", {}), ("scan.pdf", {})]
