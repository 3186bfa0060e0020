"""The journal keeps each claim's stage across restarts."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import JournalUnusable
from daemon.states import Stage
from daemon.store.journal import _SCHEMA, Journal


def test_stages_survive_a_reopen(tmp_path: Path) -> None:
    """What was recorded before a crash is there after it."""
    journal = Journal(tmp_path)
    journal.record_claim("sw-1", tmp_path / "inbox", "conv", "a.pdf", 10)
    journal.update("sw-1", stage="uploaded", attachment_id="att_1", size=5)
    journal.close()
    reopened = Journal(tmp_path)
    entry = reopened.get("sw-1")
    assert entry is not None
    assert (entry.stage, entry.attachment_id, entry.size) == ("uploaded", "att_1", 5)
    reopened.close()


def test_open_entries_come_in_arrival_order(tmp_path: Path) -> None:
    """Unarchived claims are listed oldest first, then by name."""
    journal = Journal(tmp_path)
    journal.record_claim("sw-b", tmp_path, "conv", "b.pdf", 20)
    journal.record_claim("sw-a", tmp_path, "conv", "a.pdf", 20)
    journal.record_claim("sw-0", tmp_path, "conv", "z.pdf", 5)
    journal.record_claim("sw-x", tmp_path, "conv", "x.pdf", 1)
    journal.update("sw-x", stage="archived")
    assert [e.name for e in journal.open_entries()] == ["z.pdf", "a.pdf", "b.pdf"]
    journal.close()


def test_recording_a_claim_twice_keeps_the_first(tmp_path: Path) -> None:
    """A recovered claim that was journaled already keeps its stage."""
    journal = Journal(tmp_path)
    journal.record_claim("sw-1", tmp_path, "conv", "a.pdf", 1)
    journal.update("sw-1", stage="sent", message_id="msg_1")
    entry = journal.record_claim("sw-1", tmp_path, "conv", "a.pdf", 1)
    assert (entry.stage, entry.message_id) == ("sent", "msg_1")
    journal.close()


def test_last_errors_are_per_inbox(tmp_path: Path) -> None:
    """The newest error of each inbox is reported."""
    journal = Journal(tmp_path)
    journal.record_claim("sw-1", tmp_path / "a", "conv", "1.pdf", 1)
    journal.record_claim("sw-2", tmp_path / "a", "conv", "2.pdf", 2)
    journal.update("sw-1", reason="too_large", detail="big")
    journal.update("sw-2", reason="rejected", detail="no", status=400)
    errors = journal.last_errors()
    assert list(errors) == [str(tmp_path / "a")]
    assert errors[str(tmp_path / "a")].name == "2.pdf"
    journal.close()


def test_pruning_forgets_only_archived_claims(tmp_path: Path) -> None:
    """Archived claims are pruned; unfinished ones are never forgotten."""
    journal = Journal(tmp_path)
    journal.record_claim("sw-done", tmp_path, "conv", "a.pdf", 1)
    journal.record_claim("sw-open", tmp_path, "conv", "b.pdf", 2)
    journal.update("sw-done", stage="archived")
    assert journal.prune_archived(3600) == 0  # too recent
    assert journal.prune_archived(-1) == 1
    assert journal.get("sw-done") is None
    assert journal.get("sw-open") is not None
    journal.close()


def test_a_journal_of_an_older_version_is_read_and_brought_up_to_date(tmp_path: Path) -> None:
    """A journal without the idempotency_key column: read as null, then the column is added."""
    with sqlite3.connect(tmp_path / "journal.sqlite3") as db:
        db.executescript(_SCHEMA.replace(",\n    idempotency_key TEXT", ""))
        db.execute(
            "INSERT INTO claims (claim_id, inbox, conversation_id, name, stage, arrived_ns,"
            " claimed_at, updated_at) VALUES ('sw-1', '/in', 'conv', 'a.pdf', 'claimed', 1, 0, 0)"
        )
    db.close()
    reader = Journal(tmp_path, read_only=True)
    old = reader.get("sw-1")
    reader.close()
    assert old is not None and old.idempotency_key is None
    journal = Journal(tmp_path)
    journal.update("sw-1", idempotency_key="sw-0")
    entry = journal.get("sw-1")
    journal.close()
    assert entry is not None and entry.idempotency_key == "sw-0"


def test_a_damaged_journal_names_its_file_and_what_to_do(tmp_path: Path) -> None:
    """Not a database: JournalUnusable names the path and says to move it aside."""
    (tmp_path / "journal.sqlite3").write_bytes(b"not a database at all" * 100)
    for read_only in (False, True):
        with pytest.raises(JournalUnusable) as caught:
            Journal(tmp_path, read_only=read_only)
        assert str(tmp_path / "journal.sqlite3") in str(caught.value)
        assert "mv " in str(caught.value)


def test_concurrent_writes_are_each_durable_when_they_return(tmp_path: Path) -> None:
    """Writes from many threads at once (grouped into shared commits) are each on disk,
    as a second connection sees it, by the time the call returns."""
    journal = Journal(tmp_path)
    inbox = tmp_path / "inbox"
    seen_after_return: list[Stage | None] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        claim_id = f"sw-{n:04d}"
        journal.record_claim(claim_id, inbox, "conv", f"f{n}.pdf", n)
        journal.update(claim_id, stage=Stage.UPLOADED, attachment_id=f"att_{n}")
        other = Journal(tmp_path)  # its own connection: only committed data shows
        try:
            entry = other.get(claim_id)
        finally:
            other.close()
        with lock:
            seen_after_return.append(entry.stage if entry else None)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    assert seen_after_return == [Stage.UPLOADED] * 32


def test_a_failing_write_fails_only_its_caller(tmp_path: Path) -> None:
    """A statement that fails inside a shared commit raises in its own caller only; the
    writes grouped with it are kept."""
    journal = Journal(tmp_path)
    journal.record_claim("sw-ok", tmp_path, "conv", "a.pdf", 1)
    errors: list[BaseException] = []
    start = threading.Barrier(9)

    def good(n: int) -> None:
        start.wait()
        journal.update("sw-ok", attempts=n)

    def bad() -> None:
        start.wait()
        try:
            journal._write("INSERT INTO claims (claim_id) VALUES (?)", ("sw-bad",))
        except sqlite3.Error as error:
            errors.append(error)

    threads = [threading.Thread(target=good, args=(n,)) for n in range(8)]
    threads.append(threading.Thread(target=bad))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entry = journal.get("sw-ok")
    journal.close()
    assert len(errors) == 1
    assert entry is not None and entry.attempts in range(8)


def test_writes_that_come_while_a_commit_syncs_share_the_next_commit(tmp_path: Path) -> None:
    """Group commit: with a slow sync, 32 writes at once take a few commits, not 32; each
    caller returns with its own write durable, and the batches hold every write once."""
    batches: list[int] = []

    class SlowSync(Journal):
        def _commit(self, batch: list[Any]) -> None:
            time.sleep(0.02)  # a sync that takes a while: writes queue up meanwhile
            batches.append(len(batch))
            super()._commit(batch)

    journal = SlowSync(tmp_path)
    start = threading.Barrier(32)

    def work(n: int) -> None:
        start.wait()
        journal.record_claim(f"sw-{n:04d}", tmp_path, "conv", f"f{n}.pdf", n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = journal.open_entries()
    journal.close()
    assert sum(batches) == 32
    assert len(batches) < 16
    assert len(entries) == 32


def test_several_claims_change_stage_in_one_durable_transaction(tmp_path: Path) -> None:
    """``update_many`` journals the same change for several claims, all seen by another
    connection (so committed) when it returns; the others are untouched."""
    journal = Journal(tmp_path)
    for n in range(4):
        journal.record_claim(f"sw-{n}", tmp_path, "conv", f"{n}.pdf", n)
    journal.update_many(["sw-0", "sw-1", "sw-2"], stage=Stage.SENDING)
    with sqlite3.connect(tmp_path / "journal.sqlite3") as other:
        stages = dict(other.execute("SELECT claim_id, stage FROM claims").fetchall())
    assert stages == {"sw-0": "sending", "sw-1": "sending", "sw-2": "sending", "sw-3": "claimed"}
    with pytest.raises(ValueError, match="unknown journal columns"):
        journal.update_many(["sw-3"], stage=Stage.SENDING, colour="red")
    assert [e.stage for e in journal.open_entries()][-1] == Stage.CLAIMED
    journal.close()


def test_claims_change_each_their_own_way_in_one_durable_transaction(tmp_path: Path) -> None:
    """``update_each`` journals each claim's own changes in one commit: all seen by another
    connection when it returns (the sent ones remembered for the duplicate check, each
    under its own message id); a change naming an unknown column writes nothing."""
    journal = Journal(tmp_path)
    for n in range(3):
        journal.record_claim(f"sw-{n}", tmp_path, "conv", f"{n}.pdf", n)
        journal.update(f"sw-{n}", sha256=f"{n}" * 64, stage=Stage.SENDING)
    journal.update_each(
        [
            ("sw-0", {"stage": Stage.SENT, "message_id": "msg_0"}),
            ("sw-1", {"stage": Stage.SENT, "message_id": "msg_1"}),
        ]
    )
    with sqlite3.connect(tmp_path / "journal.sqlite3") as other:
        rows = other.execute("SELECT claim_id, stage, message_id FROM claims").fetchall()
        remembered = other.execute("SELECT claim_id, message_id FROM sent_hashes").fetchall()
    assert sorted(rows) == [
        ("sw-0", "sent", "msg_0"),
        ("sw-1", "sent", "msg_1"),
        ("sw-2", "sending", None),
    ]
    assert sorted(remembered) == [("sw-0", "msg_0"), ("sw-1", "msg_1")]
    with pytest.raises(ValueError, match="unknown journal columns"):
        journal.update_each([("sw-2", {"stage": Stage.SENT}), ("sw-2", {"colour": "red"})])
    assert journal.get("sw-2").stage == Stage.SENDING  # type: ignore[union-attr]
    journal.close()
