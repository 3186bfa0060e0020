"""The settle rule on real files, with an injected clock: no test here waits for real time
(except the one that runs the settle thread itself)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.config import InboxConfig
from daemon.watch.settle import FileEvent, Settled, Settler, wait_until_still
from tests.helpers import wait_until

SETTLE_SECONDS = 2.0


class FakeClock:
    """Both clocks, moved by hand: ``wall`` starts at a file's ctime, as if it were now."""

    def __init__(self, wall: float) -> None:
        self.mono = 100.0
        self.wall = wall

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class Taken:
    """The batches a settler hands over, as lists of names."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[list[str]] = []

    def __call__(self, batch: list[Settled]) -> None:
        with self.lock:
            self.batches.append([item.name for item in batch])


#: capture_logs sees every level, whatever another test configured in this process.
pytestmark = pytest.mark.usefixtures("default_structlog")


@pytest.fixture
def inbox(tmp_path: Path) -> InboxConfig:
    path = tmp_path / "conv_1"
    path.mkdir()
    return InboxConfig(path, "conv_1", None, "conv_1", from_spool=True)


def drop(inbox: InboxConfig, name: str, mtime: float | None = None) -> Path:
    """A file in the inbox, its mtime set to ``mtime`` (an arrival order) when given."""
    path = inbox.path / name
    path.write_bytes(b"%PDF-1.4 " + name.encode())
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def ctime(path: Path) -> float:
    return path.lstat().st_ctime


def settler_for(
    taken: Taken, clock: FakeClock, settle_seconds: float = SETTLE_SECONDS, warned_max: int = 100
) -> Settler:
    return Settler(settle_seconds, ("*.part",), taken, clock=clock, warned_max=warned_max)


def test_a_new_file_is_handed_over_once_it_stood_still_for_settle_seconds(
    inbox: InboxConfig,
) -> None:
    """A fresh file is not taken before settle_seconds, and is taken then."""
    path = drop(inbox, "a.pdf")
    clock, taken = FakeClock(ctime(path)), Taken()
    settler = settler_for(taken, clock)

    settler.offer(inbox, ["a.pdf"])
    clock.advance(SETTLE_SECONDS - 0.1)
    settler.check_due()
    assert taken.batches == []
    assert settler.pending() == 1

    clock.advance(0.1)
    settler.check_due()
    assert taken.batches == [["a.pdf"]]
    assert settler.pending() == 0


def test_files_go_in_arrival_order_mtime_then_name(inbox: InboxConfig) -> None:
    """Files that settle together go in one batch, ordered by mtime, then by name."""
    for name, mtime in (("b.pdf", 2000), ("c.pdf", 1000), ("a.pdf", 2000)):
        last = drop(inbox, name, mtime)
    clock, taken = FakeClock(ctime(last)), Taken()
    settler = settler_for(taken, clock)

    settler.offer(inbox, ["a.pdf", "b.pdf", "c.pdf"])
    clock.advance(SETTLE_SECONDS)
    settler.check_due()

    assert taken.batches == [["c.pdf", "a.pdf", "b.pdf"]]


def test_a_finished_file_waits_behind_an_older_unfinished_one(inbox: InboxConfig) -> None:
    """A file that finished early is held until the older file before it has settled."""
    older = drop(inbox, "older.pdf", mtime=1000)
    newer = drop(inbox, "newer.pdf", mtime=2000)
    clock, taken = FakeClock(ctime(newer)), Taken()
    settler = settler_for(taken, clock)
    settler.offer(inbox, ["older.pdf", "newer.pdf"])

    # The older file is still being written (its writer keeps its mtime: a copy with -p).
    with older.open("ab") as file:
        file.write(b"more pages")
    os.utime(older, (1000, 1000))
    clock.advance(SETTLE_SECONDS)
    clock.wall = ctime(older)  # the write happened just now
    settler.check_due()
    assert taken.batches == []

    clock.advance(SETTLE_SECONDS)
    settler.check_due()
    assert taken.batches == [["older.pdf", "newer.pdf"]]


def test_a_file_whose_ctime_is_already_old_is_taken_at_once(inbox: InboxConfig) -> None:
    """A backlog found at start-up does not wait: its ctime is settle_seconds old already."""
    path = drop(inbox, "backlog.pdf")
    clock, taken = FakeClock(ctime(path) + 10 * SETTLE_SECONDS), Taken()
    settler = settler_for(taken, clock)

    settler.offer(inbox, ["backlog.pdf"])
    settler.check_due()

    assert taken.batches == [["backlog.pdf"]]


def test_a_vanished_file_lets_the_files_held_behind_it_go(inbox: InboxConfig) -> None:
    """When the older, unfinished file disappears, the files it held back are handed over."""
    older = drop(inbox, "older.pdf", mtime=1000)
    drop(inbox, "newer.pdf", mtime=2000)
    clock, taken = FakeClock(ctime(older)), Taken()
    settler = settler_for(taken, clock)
    settler.offer(inbox, ["older.pdf", "newer.pdf"])
    older.write_bytes(b"rewritten")
    os.utime(older, (1000, 1000))
    clock.advance(SETTLE_SECONDS)
    clock.wall = ctime(older)
    settler.check_due()
    assert taken.batches == []

    older.unlink()
    clock.advance(SETTLE_SECONDS)  # its next look
    settler.check_due()

    assert taken.batches == [["newer.pdf"]]


def test_ignored_and_hidden_names_and_folders_are_never_candidates(inbox: InboxConfig) -> None:
    """Names matching an ignore pattern, hidden names and folders are not offered on."""
    drop(inbox, "scan.pdf.part")
    drop(inbox, ".hidden.pdf")
    (inbox.path / "sub").mkdir()
    clock, taken = FakeClock(0.0), Taken()
    settler = settler_for(taken, clock)

    settler.offer(inbox, ["scan.pdf.part", ".hidden.pdf", "sub"])

    assert settler.pending() == 0


def test_configure_applies_a_shorter_settle_to_files_already_settling(
    inbox: InboxConfig,
) -> None:
    """After a reload shortens settle_seconds, a file offered before goes by the new value."""
    path = drop(inbox, "a.pdf")
    clock, taken = FakeClock(ctime(path)), Taken()
    settler = settler_for(taken, clock, settle_seconds=60.0)
    settler.offer(inbox, ["a.pdf"])

    settler.configure(0.5, ())
    clock.advance(0.5)
    settler.check_due()

    assert taken.batches == [["a.pdf"]]


def test_configure_applies_a_longer_settle_to_files_already_settling(
    inbox: InboxConfig,
) -> None:
    """After a reload lengthens settle_seconds, a file offered before waits the new value."""
    path = drop(inbox, "a.pdf")
    clock, taken = FakeClock(ctime(path)), Taken()
    settler = settler_for(taken, clock)
    settler.offer(inbox, ["a.pdf"])

    settler.configure(10.0, ())
    clock.advance(SETTLE_SECONDS)
    settler.check_due()
    assert taken.batches == []

    clock.advance(10.0 - SETTLE_SECONDS)
    settler.check_due()
    assert taken.batches == [["a.pdf"]]


def test_configure_drops_newly_ignored_files_and_frees_those_held_behind(
    inbox: InboxConfig,
) -> None:
    """A file still settling whose name a reload now ignores is dropped, and no longer
    holds back the newer files of its inbox."""
    older = drop(inbox, "older.tmp", mtime=1000)
    drop(inbox, "newer.pdf", mtime=2000)
    clock, taken = FakeClock(ctime(older)), Taken()
    settler = settler_for(taken, clock)
    settler.offer(inbox, ["older.tmp", "newer.pdf"])
    older.write_bytes(b"still writing")
    os.utime(older, (1000, 1000))
    clock.advance(SETTLE_SECONDS)
    clock.wall = ctime(older)
    settler.check_due()
    assert taken.batches == []

    settler.configure(SETTLE_SECONDS, ("*.tmp",))
    settler.check_due()

    assert taken.batches == [["newer.pdf"]]
    assert settler.pending() == 0


def test_configure_wakes_the_settle_thread(inbox: InboxConfig) -> None:
    """A reload on another thread wakes the running settle thread (it idles up to 1 s)."""
    drop(inbox, "a.pdf")
    taken = Taken()
    settler = Settler(3600.0, (), taken)
    settler.start()
    try:
        settler.offer(inbox, ["a.pdf"])
        settler.configure(0.05, ())
        wait_until(lambda: taken.batches == [["a.pdf"]], timeout=0.8, step=0.01)
    finally:
        settler.stop()


def _warnings(logs: list[dict[str, object]]) -> list[object]:
    return [entry["file"] for entry in logs if entry["event"] == "file_ignored"]


def test_a_symlink_is_warned_about_once(inbox: InboxConfig) -> None:
    """file_ignored is logged once per path, however often the path is offered."""
    (inbox.path / "link.pdf").symlink_to(inbox.path / "elsewhere.pdf")
    settler = settler_for(Taken(), FakeClock(0.0))

    with capture_logs() as logs:
        for _ in range(3):
            settler.offer(inbox, ["link.pdf"])

    assert _warnings(logs) == ["link.pdf"]
    assert settler.pending() == 0


def test_a_path_that_stops_being_odd_is_forgotten(inbox: InboxConfig) -> None:
    """Once the symlink is gone (or a regular file), a new symlink there is news again."""
    link = inbox.path / "link.pdf"
    link.symlink_to(inbox.path / "elsewhere.pdf")
    settler = settler_for(Taken(), FakeClock(0.0))

    with capture_logs() as logs:
        settler.offer(inbox, ["link.pdf"])
        link.unlink()
        settler.offer(inbox, ["link.pdf"])
        link.symlink_to(inbox.path / "elsewhere.pdf")
        settler.offer(inbox, ["link.pdf"])

    assert _warnings(logs) == ["link.pdf", "link.pdf"]


def test_warned_paths_are_bounded_least_recently_offered_first(inbox: InboxConfig) -> None:
    """Only the most recently offered odd paths are remembered; a path that stays and is
    offered again keeps its place (and is not warned about again)."""
    for n in range(4):
        (inbox.path / f"link{n}").symlink_to(inbox.path / "elsewhere.pdf")
    settler = settler_for(Taken(), FakeClock(0.0), warned_max=2)

    with capture_logs() as logs:
        settler.offer(inbox, ["link0", "link1"])
        settler.offer(inbox, ["link0"])  # offered again: now the most recent
        settler.offer(inbox, ["link2"])  # link1 is forgotten
        settler.offer(inbox, ["link0", "link2", "link1"])

    assert _warnings(logs) == ["link0", "link1", "link2", "link1"]


class SleepyClock(FakeClock):
    """A clock whose sleep moves it, and which lets a test act at each sleep."""

    def __init__(self, on_sleep: list[object]) -> None:
        super().__init__(0.0)
        self.slept: list[float] = []
        self._on_sleep = on_sleep

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self._on_sleep:
            action = self._on_sleep.pop(0)
            if callable(action):
                action()
        self.advance(seconds)


def test_wait_until_still_watches_the_file_for_the_whole_period(tmp_path: Path) -> None:
    """A file that does not change returns after one period, its old ctime notwithstanding."""
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF")
    clock = SleepyClock([])
    clock.wall = ctime(path) + 3600  # old by its ctime: not trusted here

    assert wait_until_still(path, 1.0, clock.sleep, clock) is True
    assert clock.slept == [1.0]


def test_wait_until_still_starts_over_when_the_file_changes(tmp_path: Path) -> None:
    """A change seen after a period restarts the watch; it returns once a period is quiet."""
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF")
    clock = SleepyClock([lambda: path.write_bytes(b"%PDF more")])

    assert wait_until_still(path, 1.0, clock.sleep, clock) is True
    assert clock.slept == [1.0, 1.0]


def test_wait_until_still_gives_up_on_a_vanished_file(tmp_path: Path) -> None:
    """A file that disappears while waited for ends the wait with False."""
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF")
    clock = SleepyClock([path.unlink])

    assert wait_until_still(path, 1.0, clock.sleep, clock) is False
    assert wait_until_still(path, 1.0, clock.sleep, clock) is False


# -- the open-writer rule (inotify's created / written / closed) ----------------------


def writer_settler(taken: Taken, clock: FakeClock, max_write_pause: float = 60.0) -> Settler:
    return Settler(SETTLE_SECONDS, ("*.part",), taken, clock=clock, max_write_pause=max_write_pause)


def test_a_file_held_open_waits_for_its_close_however_long_its_writer_pauses(
    inbox: InboxConfig,
) -> None:
    """Created and written without a close since: not taken after ten quiet periods; taken
    settle_seconds after its close."""
    path = drop(inbox, "scan.jpg")
    clock, taken = FakeClock(ctime(path)), Taken()
    settler = writer_settler(taken, clock)
    settler.seen(inbox, "scan.jpg", FileEvent.CREATED)
    settler.seen(inbox, "scan.jpg", FileEvent.WRITTEN)

    for _ in range(10):
        clock.advance(SETTLE_SECONDS)
        settler.check_due()
    assert taken.batches == []

    settler.seen(inbox, "scan.jpg", FileEvent.CLOSED)
    settler.check_due()
    clock.advance(SETTLE_SECONDS - 0.1)
    settler.check_due()
    assert taken.batches == []
    clock.advance(0.1)
    settler.check_due()
    assert taken.batches == [["scan.jpg"]]


def test_a_writer_that_closes_between_pages_is_covered_by_the_quiet_period(
    inbox: InboxConfig,
) -> None:
    """Closed, then reopened and written within settle_seconds: the quiet period restarts
    at the last close."""
    path = drop(inbox, "pages.pdf")
    clock, taken = FakeClock(ctime(path)), Taken()
    settler = writer_settler(taken, clock)
    settler.seen(inbox, "pages.pdf", FileEvent.WRITTEN)
    settler.seen(inbox, "pages.pdf", FileEvent.CLOSED)

    clock.advance(SETTLE_SECONDS / 2)
    settler.check_due()
    with path.open("ab") as handle:
        handle.write(b"page 2")
    clock.wall = ctime(path)
    settler.seen(inbox, "pages.pdf", FileEvent.WRITTEN)
    clock.advance(SETTLE_SECONDS)  # a long pause with page 2 still open
    settler.check_due()
    assert taken.batches == []

    settler.seen(inbox, "pages.pdf", FileEvent.CLOSED)
    clock.advance(SETTLE_SECONDS / 2)
    settler.check_due()
    assert taken.batches == []
    clock.advance(SETTLE_SECONDS / 2)
    settler.check_due()
    assert taken.batches == [["pages.pdf"]]


def test_a_file_held_open_past_max_write_pause_is_taken_with_a_warning(
    inbox: InboxConfig,
) -> None:
    """Held open without a write for max_write_pause: taken anyway, and a warning names it."""
    path = drop(inbox, "stuck.pdf")
    clock, taken = FakeClock(ctime(path)), Taken()
    settler = writer_settler(taken, clock, max_write_pause=30.0)
    settler.seen(inbox, "stuck.pdf", FileEvent.WRITTEN)

    clock.advance(29.0)
    settler.check_due()
    assert taken.batches == []
    with capture_logs() as logs:
        clock.advance(1.0)
        settler.check_due()
        clock.advance(SETTLE_SECONDS)
        settler.check_due()

    assert taken.batches == [["stuck.pdf"]]
    warnings = [line for line in logs if line["event"] == "write_pause_exceeded"]
    assert len(warnings) == 1
    assert warnings[0]["file"] == "stuck.pdf"
    assert warnings[0]["log_level"] == "warning"


def test_a_file_created_empty_waits_for_its_writer(inbox: InboxConfig) -> None:
    """Created empty and not closed (rsync --inplace): waited for until written and closed,
    not taken as an empty file."""
    path = inbox.path / "late.pdf"
    path.write_bytes(b"")
    clock, taken = FakeClock(ctime(path)), Taken()
    settler = writer_settler(taken, clock)
    settler.seen(inbox, "late.pdf", FileEvent.CREATED)

    clock.advance(5 * SETTLE_SECONDS)
    settler.check_due()
    assert taken.batches == []

    path.write_bytes(b"%PDF-1.4 at last")
    clock.wall = ctime(path)
    settler.seen(inbox, "late.pdf", FileEvent.WRITTEN)
    settler.seen(inbox, "late.pdf", FileEvent.CLOSED)
    settler.check_due()  # the settle thread looks at once
    clock.advance(SETTLE_SECONDS)
    settler.check_due()
    assert taken.batches == [["late.pdf"]]


def test_a_file_created_with_its_content_and_never_written_keeps_the_quiet_rule(
    inbox: InboxConfig,
) -> None:
    """Created with content and no write (a hard link): no writer holds it; settle only."""
    path = drop(inbox, "linked.pdf")
    clock, taken = FakeClock(ctime(path)), Taken()
    settler = writer_settler(taken, clock)
    settler.seen(inbox, "linked.pdf", FileEvent.CREATED)

    clock.advance(SETTLE_SECONDS)
    settler.check_due()
    assert taken.batches == [["linked.pdf"]]


def test_a_file_still_written_holds_no_finished_file_back(inbox: InboxConfig) -> None:
    """An older file held open by its writer does not keep a newer finished file waiting;
    it goes itself once closed and still."""
    older = drop(inbox, "slow.pdf", mtime=1000)
    newer = drop(inbox, "quick.pdf", mtime=2000)
    clock, taken = FakeClock(ctime(newer)), Taken()
    settler = writer_settler(taken, clock)
    settler.seen(inbox, "slow.pdf", FileEvent.WRITTEN)
    settler.offer(inbox, ["quick.pdf"])

    clock.advance(SETTLE_SECONDS)
    settler.check_due()
    assert taken.batches == [["quick.pdf"]]

    settler.seen(inbox, "slow.pdf", FileEvent.CLOSED)
    clock.advance(SETTLE_SECONDS)
    settler.check_due()
    assert taken.batches == [["quick.pdf"], ["slow.pdf"]]
    assert older.exists()


def test_a_write_to_a_finished_file_held_back_makes_it_wait_again(inbox: InboxConfig) -> None:
    """A file finished but held behind an older one, then written again: not handed over
    with the older file; it waits for its close."""
    newer = drop(inbox, "newer.pdf", mtime=2000)
    clock, taken = FakeClock(ctime(newer)), Taken()
    settler = writer_settler(taken, clock)
    settler.offer(inbox, ["newer.pdf"])
    clock.advance(SETTLE_SECONDS / 2)
    clock.wall = ctime(drop(inbox, "older.pdf", mtime=1000))  # older by mtime, seen later
    settler.offer(inbox, ["older.pdf"])
    clock.advance(SETTLE_SECONDS / 2)
    settler.check_due()  # newer.pdf finished, held behind older.pdf
    assert taken.batches == []

    settler.seen(inbox, "newer.pdf", FileEvent.WRITTEN)
    clock.advance(SETTLE_SECONDS)
    settler.check_due()
    assert taken.batches == [["older.pdf"]]
    settler.seen(inbox, "newer.pdf", FileEvent.CLOSED)
    clock.advance(SETTLE_SECONDS)
    settler.check_due()
    assert taken.batches == [["older.pdf"], ["newer.pdf"]]
