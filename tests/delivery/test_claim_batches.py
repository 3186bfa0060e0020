"""Files handed over together are claimed together: their renames made durable with one
sync per folder and their claims journaled in one commit; a file that cannot be claimed or
journaled stays in (or goes back to) its inbox on its own, and the rest go on."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.delivery.pipeline import Pipeline
from daemon.delivery.retry import ONCE
from daemon.fake import FakeApi
from daemon.store import claims
from daemon.store.claims import Owner
from daemon.store.journal import Entry, Journal, NewClaim
from daemon.watch.inboxes import all_inboxes
from daemon.watch.settle import HAND_OVER_MOST
from tests.helpers import run_cli, running, write_config

#: capture_logs sees every level, whatever another test configured in this process.
pytestmark = pytest.mark.usefixtures("default_structlog")


class Recorded(Journal):
    """A journal that notes the size of each ``record_claims`` call and refuses the claims
    of the files named in :attr:`refuse`."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.calls: list[int] = []
        self.refuse: set[str] = set()

    def record_claims(self, claims: Sequence[NewClaim]) -> list[Entry]:
        self.calls.append(len(claims))
        if any(claim.name in self.refuse for claim in claims):
            raise sqlite3.OperationalError("database or disk is full")
        return super().record_claims(claims)


def _scene(api: FakeApi, tmp_path: Path, names: list[str]) -> tuple[Pipeline, Recorded]:
    """A pipeline (one conversation) over an inbox holding ``names``."""
    config = load_config(write_config(tmp_path, api.url, duplicates="send"))
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir(parents=True)
    for n, name in enumerate(names):
        (inbox / name).write_bytes(f"%PDF-1.4 page {n}".encode())
    journal = Recorded(config.state_dir)
    return Pipeline(config, journal, Owner(), policy=ONCE), journal


def test_files_handed_over_together_are_synced_and_journaled_together(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three files of one inbox: the inbox folder is synced once for the three renames,
    each claim folder once, and one commit journals the three claims; each is sent."""
    names = ["a.pdf", "b.pdf", "c.pdf"]
    pipeline, journal = _scene(api, tmp_path, names)
    synced: list[Path] = []

    def counted(path: Path) -> None:
        synced.append(path)
        real_fsync_dir(path)

    real_fsync_dir = claims.fsync_dir
    monkeypatch.setattr(claims, "fsync_dir", counted)
    (inbox,) = all_inboxes(pipeline.config)
    with running(pipeline, pipeline.owner, journal):
        assert pipeline.take_all(inbox, [(name, n) for n, name in enumerate(names)]) == [True] * 3
        assert pipeline.wait_idle(timeout=20)
    assert journal.calls == [3]
    assert synced.count(inbox.path) == 1
    assert len(synced) == 1 + 3  # and the three claim folders
    assert sorted(p.name for p in (inbox.path / "sent").iterdir()) == names
    assert len(api.messages()) == 3


def test_a_claim_the_journal_refuses_goes_back_alone(api: FakeApi, tmp_path: Path) -> None:
    """The commit of a batch is refused because of one file: each is journaled on its own
    again; that one goes back to its inbox with its error, the others are sent."""
    names = ["a.pdf", "refused.pdf", "c.pdf"]
    pipeline, journal = _scene(api, tmp_path, names)
    journal.refuse = {"refused.pdf"}
    (inbox,) = all_inboxes(pipeline.config)
    with running(pipeline, pipeline.owner, journal):
        first, refused, last = pipeline.take_all(inbox, [(n, i) for i, n in enumerate(names)])
        assert pipeline.wait_idle(timeout=20)
    assert (first, last) == (True, True)
    assert isinstance(refused, sqlite3.OperationalError)
    assert journal.calls == [3, 1, 1, 1]
    assert (inbox.path / "refused.pdf").read_bytes() == b"%PDF-1.4 page 1"
    assert sorted(p.name for p in (inbox.path / "sent").iterdir()) == ["a.pdf", "c.pdf"]
    assert len(api.messages()) == 2
    assert not list((inbox.path / ".sendseven-watch").rglob("*.pdf"))


def test_a_file_gone_or_not_claimable_leaves_the_rest_of_its_batch(
    api: FakeApi, tmp_path: Path
) -> None:
    """In one batch: a file already gone (another daemon took it) is False, a name whose
    rename fails is its error and stays, and the file between them is claimed and sent."""
    pipeline, journal = _scene(api, tmp_path, ["a.pdf", "sub"])  # "sub" is a file
    (inbox,) = all_inboxes(pipeline.config)
    with running(pipeline, pipeline.owner, journal):
        gone, sent, broken = pipeline.take_all(
            inbox, [("gone.pdf", 0), ("a.pdf", 1), ("sub/x.pdf", 2)]
        )
        assert pipeline.wait_idle(timeout=20)
    assert (gone, sent) == (False, True)
    assert isinstance(broken, NotADirectoryError)
    assert journal.calls == [1]
    assert len(api.messages()) == 1
    assert [p.name for p in (inbox.path / "sent").iterdir()] == ["a.pdf"]
    assert (inbox.path / "sub").is_file()
    assert not list((inbox.path / ".sendseven-watch").rglob("x.pdf"))


def test_a_backlog_in_several_inboxes_is_claimed_in_turns(api: FakeApi, tmp_path: Path) -> None:
    """Two inboxes with a backlog each, ``run --once``: the second inbox's first files are
    claimed before the first inbox's last ones, so both conversations start at once; in
    each, the claims keep the files' arrival order."""
    per_inbox = HAND_OVER_MOST + 5
    config_path = write_config(tmp_path, api.url, duplicates="send")
    for conversation in ("conv_1", "conv_2"):
        inbox = tmp_path / "spool" / conversation
        inbox.mkdir(parents=True)
        for n in range(per_inbox):
            path = inbox / f"{conversation}-{n:03d}.pdf"
            path.write_bytes(f"%PDF-1.4 {conversation} {n}".encode())
            os.utime(path, (1_000_000 + n, 1_000_000 + n))
    result = run_cli("run", "-c", str(config_path), "--once")
    assert result.returncode == 0, result.stdout
    state = load_config(config_path).state_dir
    with sqlite3.connect(state / "journal.sqlite3") as db:
        order = db.execute("SELECT conversation_id, name FROM claims ORDER BY rowid").fetchall()
    assert len(order) == 2 * per_inbox
    first_of_2 = order.index(("conv_2", "conv_2-000.pdf"))
    last_of_1 = order.index(("conv_1", f"conv_1-{per_inbox - 1:03d}.pdf"))
    assert first_of_2 < last_of_1
    for conversation in ("conv_1", "conv_2"):
        mine = [name for c, name in order if c == conversation]
        assert mine == sorted(mine)
    assert len(api.messages()) == 2 * per_inbox
