"""A settler built per inbox judges each file by its own inbox's settle_seconds and ignore,
and a reload's new inbox settings reach files still settling (injected clock, real files)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from daemon.config import InboxConfig
from daemon.watch.settle import Settler
from tests.watch.test_settle import FakeClock, Taken, ctime, drop


def _inbox(
    tmp_path: Path, name: str, settle_seconds: float, ignore: tuple[str, ...]
) -> InboxConfig:
    path = tmp_path / name
    path.mkdir()
    return InboxConfig(path, name, None, name, settle_seconds=settle_seconds, ignore=ignore)


def test_each_inbox_settles_and_ignores_by_its_own_settings(tmp_path: Path) -> None:
    """Dropped at once, the fast inbox's file goes after 1 s, the slow one's after 10 s;
    a name one inbox ignores is taken in the other."""
    fast = _inbox(tmp_path, "erp", 1.0, ("draft-*",))
    slow = _inbox(tmp_path, "scanner", 10.0, ())
    drop(fast, "draft-1.pdf")
    drop(slow, "scan.pdf", mtime=1000)
    drop(slow, "draft-2.pdf", mtime=2000)
    path = drop(fast, "export.pdf")  # last: the clock starts at its ctime
    clock, taken = FakeClock(ctime(path)), Taken()
    settler = Settler.per_inbox(taken, clock=clock)
    settler.offer(fast, ["export.pdf", "draft-1.pdf"])
    settler.offer(slow, ["draft-2.pdf", "scan.pdf"])
    assert settler.pending() == 3

    clock.advance(1.0)
    settler.check_due()
    assert taken.batches == [["export.pdf"]]

    clock.advance(8.9)
    settler.check_due()
    assert taken.batches == [["export.pdf"]]
    clock.advance(0.1)
    settler.check_due()
    assert taken.batches == [["export.pdf"], ["scan.pdf", "draft-2.pdf"]]


def test_new_inbox_settings_reach_files_still_settling(tmp_path: Path) -> None:
    """After a reload shortens one inbox's settle and ignores a name there, its file
    goes by the new time and the ignored one is dropped; another inbox keeps its own."""
    scanner = _inbox(tmp_path, "scanner", 60.0, ())
    other = _inbox(tmp_path, "other", 60.0, ())
    path = drop(scanner, "scan.pdf", mtime=1000)
    drop(scanner, "scan.tmp", mtime=900)  # older: would hold scan.pdf back
    drop(other, "doc.pdf")
    clock, taken = FakeClock(ctime(path)), Taken()
    settler = Settler.per_inbox(taken, clock=clock)
    settler.offer(scanner, ["scan.tmp", "scan.pdf"])
    settler.offer(other, ["doc.pdf"])

    changed = dataclasses.replace(scanner, settle_seconds=0.5, ignore=("*.tmp",))
    settler.update_inboxes([changed, other])
    clock.advance(0.5)
    settler.check_due()

    assert taken.batches == [["scan.pdf"]]
    assert settler.pending() == 1  # other's doc.pdf still waits its 60 s
