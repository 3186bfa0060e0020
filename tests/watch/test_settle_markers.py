"""Done markers in the settler, on real files with an injected clock: a marked file goes at
once, an unmarked one waits without being pending, the marker goes after the hand-over."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from daemon.config import InboxConfig
from daemon.watch.settle import Settled, Settler


class StillClock:
    """A clock that never moves: anything taken was taken without waiting."""

    def monotonic(self) -> float:
        return 100.0

    def time(self) -> float:
        return 0.0


def _inbox(tmp_path: Path, marker: str) -> InboxConfig:
    path = tmp_path / "conv_1"
    path.mkdir()
    plain = InboxConfig(path, "conv_1", None, "conv_1", from_spool=True)
    return dataclasses.replace(plain, done_marker=marker, settle_seconds=30.0)


def test_a_marked_file_goes_at_once_and_an_unmarked_one_is_not_pending(tmp_path: Path) -> None:
    """{name}.done: a.pdf (marked) is handed over by the offer itself, before any settle
    time passed, and its marker is gone; b.pdf (no marker) is neither taken nor pending."""
    inbox = _inbox(tmp_path, "{name}.done")
    for name in ("a.pdf", "b.pdf"):
        (inbox.path / name).write_bytes(b"%PDF-1.4")
    (inbox.path / "a.pdf.done").touch()
    taken: list[list[str]] = []

    def claim(batch: list[Settled]) -> None:
        taken.append([item.name for item in batch])
        for item in batch:  # what a claim does: the file leaves the inbox
            (inbox.path / item.name).rename(tmp_path / item.name)

    settler = Settler.per_inbox(claim, clock=StillClock())
    settler.offer(inbox, ["a.pdf", "a.pdf.done", "b.pdf"])

    assert taken == [["a.pdf"]]
    assert settler.pending() == 0
    assert sorted(p.name for p in inbox.path.iterdir()) == ["b.pdf"]


def test_a_marker_stays_when_its_file_could_not_be_claimed(tmp_path: Path) -> None:
    """The hand-over did not take the file (a claim failed): the marker is kept, under its
    hidden taken name, and the next offer tries again."""
    inbox = _inbox(tmp_path, "READY")
    (inbox.path / "x.pdf").write_bytes(b"%PDF-1.4")
    (inbox.path / "READY").touch()
    taken: list[list[str]] = []
    settler = Settler.per_inbox(lambda b: taken.append([i.name for i in b]), clock=StillClock())

    settler.offer(inbox, ["READY"])
    settler.offer(inbox, [".sendseven-taken.READY"])

    assert taken == [["x.pdf"], ["x.pdf"]]
    assert (inbox.path / ".sendseven-taken.READY").exists()
