"""Both observers behind one protocol, on real folders: inotify and the folder poller."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import InboxConfig
from daemon.watch.observers import Observer, make_observer
from daemon.watch.settle import FileEvent
from daemon.watch.watcher import Watcher
from tests.helpers import wait_until

#: The poller looks this often in these tests, in seconds.
POLL_SECONDS = 0.05
#: How long a test waits to be sure that something is not reported, in seconds.
QUIET_SECONDS = 0.3

MODES = ["inotify", "polling"]


class Heard:
    """What an observer reported, as (folder, name, is_dir), whichever way it reports."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: set[tuple[Path, str, bool]] = set()
        self.events: list[tuple[str, FileEvent]] = []

    def on_event(self, path: Path, *, is_dir: bool, event: FileEvent = FileEvent.APPEARED) -> None:
        with self.lock:
            self.seen.add((path.parent, path.name, is_dir))
            self.events.append((path.name, event))

    def on_listing(self, folder: Path, listing: list[tuple[str, bool]]) -> None:
        with self.lock:
            self.seen.update((folder, name, is_dir) for name, is_dir in listing)

    def has(self, folder: Path, name: str, *, is_dir: bool = False) -> bool:
        with self.lock:
            return (folder, name, is_dir) in self.seen


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def heard() -> Heard:
    return Heard()


@pytest.fixture
def observer(mode: str, heard: Heard) -> Iterator[Observer]:
    """A started observer of ``mode``, stopped and joined at the end."""
    made = make_observer(mode, heard, POLL_SECONDS)
    made.start()
    try:
        yield made
    finally:
        made.stop()
        made.join(5)
        assert not made.is_alive()


def folder_in(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def test_make_observer_picks_the_backend_asked_for() -> None:
    """observer: polling is the folder poller; inotify and auto (on Linux) are inotify."""
    heard = Heard()
    kinds = {mode: make_observer(mode, heard).kind for mode in ("auto", "inotify", "polling")}

    assert kinds == {"auto": "inotify", "inotify": "inotify", "polling": "polling"}


def test_a_new_file_and_a_new_folder_are_reported(
    tmp_path: Path, observer: Observer, heard: Heard
) -> None:
    """A file and a folder that appear in a watched folder are reported, each as what it is."""
    folder = folder_in(tmp_path, "box")
    observer.schedule(folder)

    (folder / "new.pdf").write_bytes(b"%PDF")
    (folder / "sub").mkdir()

    wait_until(lambda: heard.has(folder, "new.pdf") and heard.has(folder, "sub", is_dir=True))
    assert not heard.has(folder, "sub", is_dir=False)


def test_inotify_says_created_written_and_closed_and_moved_in_is_no_creation(
    tmp_path: Path, heard: Heard
) -> None:
    """inotify reports a writer's file as created, written, closed (what the settler waits
    on); a file moved in from elsewhere only as appeared (it waits for no close)."""
    folder, elsewhere = folder_in(tmp_path, "box"), folder_in(tmp_path, "elsewhere")
    (elsewhere / "moved.pdf").write_bytes(b"%PDF")
    observer = make_observer("inotify", heard)
    observer.schedule(folder)
    observer.start()
    try:
        with (folder / "written.pdf").open("wb") as handle:
            handle.write(b"%PDF")
            handle.flush()
            wait_until(lambda: ("written.pdf", FileEvent.WRITTEN) in heard.events)
            assert ("written.pdf", FileEvent.CLOSED) not in heard.events
        (elsewhere / "moved.pdf").rename(folder / "moved.pdf")
        wait_until(lambda: ("written.pdf", FileEvent.CLOSED) in heard.events)
        wait_until(lambda: ("moved.pdf", FileEvent.APPEARED) in heard.events)
    finally:
        observer.stop()
        observer.join(5)
    with heard.lock:
        assert ("written.pdf", FileEvent.CREATED) in heard.events
        assert [e for name, e in heard.events if name == "moved.pdf"] == [FileEvent.APPEARED]


def test_a_renamed_file_is_reported_under_its_new_name(
    tmp_path: Path, observer: Observer, heard: Heard
) -> None:
    """scan.pdf.part renamed to scan.pdf is reported as scan.pdf."""
    folder = folder_in(tmp_path, "box")
    (folder / "scan.pdf.part").write_bytes(b"%PDF")
    observer.schedule(folder)

    (folder / "scan.pdf.part").rename(folder / "scan.pdf")

    wait_until(lambda: heard.has(folder, "scan.pdf"))


def test_an_unscheduled_folder_is_no_longer_reported(
    tmp_path: Path, observer: Observer, heard: Heard
) -> None:
    """After unschedule() nothing from that folder is reported; other folders still are."""
    gone, kept = folder_in(tmp_path, "gone"), folder_in(tmp_path, "kept")
    observer.schedule(gone)
    observer.schedule(kept)

    observer.unschedule(gone)
    observer.unschedule(tmp_path / "never-watched")  # harmless
    (gone / "a.pdf").write_bytes(b"%PDF")
    (kept / "b.pdf").write_bytes(b"%PDF")

    wait_until(lambda: heard.has(kept, "b.pdf"))
    threading.Event().wait(QUIET_SECONDS)
    assert not heard.has(gone, "a.pdf")


def test_a_folder_made_anew_is_a_dead_inotify_watch(tmp_path: Path, heard: Heard) -> None:
    """An inotify watch follows the inode: a folder deleted and made again is reported dead."""
    observer = make_observer("inotify", heard)
    folder, other = folder_in(tmp_path, "box"), folder_in(tmp_path, "other")
    observer.schedule(folder)
    observer.schedule(other)
    observer.start()
    try:
        assert observer.dead_watches({folder, other}) == set()
        shutil.rmtree(folder)
        folder.mkdir()
        wait_until(lambda: observer.dead_watches({folder, other}) == {folder})
        observer.unschedule(folder)
        observer.schedule(folder)
        wait_until(lambda: observer.dead_watches({folder, other}) == set())
    finally:
        observer.stop()
        observer.join(5)


def test_the_poller_watches_paths_and_sees_a_folder_made_anew(tmp_path: Path, heard: Heard) -> None:
    """The folder poller has no dead watches: it lists a folder made anew by itself."""
    observer = make_observer("polling", heard, POLL_SECONDS)
    folder = folder_in(tmp_path, "box")
    observer.schedule(folder)
    observer.start()
    try:
        shutil.rmtree(folder)
        folder.mkdir()
        (folder / "back.pdf").write_bytes(b"%PDF")
        wait_until(lambda: heard.has(folder, "back.pdf"))
        assert observer.dead_watches({folder}) == set()
    finally:
        observer.stop()
        observer.join(5)


class Offers:
    """What a watcher hands on: candidate names per inbox, and new folders."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.names: set[tuple[Path, str]] = set()
        self.folders: list[Path] = []

    def candidates(self, inbox: InboxConfig, names: list[str]) -> None:
        with self.lock:
            self.names.update((inbox.path, name) for name in names)

    def new_folder(self, path: Path) -> None:
        with self.lock:
            self.folders.append(path)

    def has(self, inbox: InboxConfig, name: str) -> bool:
        with self.lock:
            return (inbox.path, name) in self.names

    def has_folder(self, path: Path) -> bool:
        with self.lock:
            return path in self.folders


def test_the_watcher_offers_new_files_and_new_spool_folders(tmp_path: Path, mode: str) -> None:
    """With either observer, a new file in an inbox becomes a candidate, and a new folder
    in the spool is handed on as a new folder (files are not, folders are not candidates)."""
    inbox = InboxConfig(folder_in(tmp_path, "conv_1"), "conv_1", None, "conv_1", True)
    offers = Offers()
    watcher = Watcher(
        mode, tmp_path, [inbox], offers.candidates, offers.new_folder, poll_interval=POLL_SECONDS
    )
    watcher.start()
    try:
        assert watcher.kind == mode
        (inbox.path / "scan.pdf").write_bytes(b"%PDF")
        (inbox.path / "sub").mkdir()
        (tmp_path / "conv_2").mkdir()
        (tmp_path / "stray.pdf").write_bytes(b"%PDF")
        wait_until(lambda: offers.has(inbox, "scan.pdf") and offers.has_folder(tmp_path / "conv_2"))
        threading.Event().wait(QUIET_SECONDS)
        assert not offers.has(inbox, "sub")
        assert not offers.has_folder(tmp_path / "stray.pdf")
    finally:
        watcher.stop()
    assert not watcher.alive()


def test_a_scan_finds_an_explicit_inbox_made_anew(tmp_path: Path, mode: str) -> None:
    """An inbox outside the spool deleted and made again is watched afresh: with inotify the
    scan notices its dead watch; the poller lists the new folder by itself."""
    inbox = InboxConfig(folder_in(tmp_path, "front-desk"), "c1", None, "front-desk")
    offers = Offers()
    watcher = Watcher(
        mode, None, [inbox], offers.candidates, offers.new_folder, poll_interval=POLL_SECONDS
    )
    watcher.start()
    try:
        shutil.rmtree(inbox.path)
        inbox.path.mkdir()
        if mode == "inotify":
            wait_until(lambda: watcher.scan() >= 0 and offers.has_folder(inbox.path))
            assert watcher.add(inbox)  # watched afresh
            assert not watcher.add(inbox)  # and only once
        (inbox.path / "after.pdf").write_bytes(b"%PDF")
        wait_until(lambda: offers.has(inbox, "after.pdf"))
        if mode == "polling":
            watcher.scan()
            assert not offers.has_folder(inbox.path)
    finally:
        watcher.stop()


def test_supervise_rebuilds_a_dead_observer(tmp_path: Path, mode: str) -> None:
    """A stopped observer is noticed and replaced; the inboxes are watched again."""
    inbox = InboxConfig(folder_in(tmp_path, "conv_1"), "conv_1", None, "conv_1", True)
    offers = Offers()
    watcher = Watcher(
        mode, tmp_path, [inbox], offers.candidates, offers.new_folder, poll_interval=POLL_SECONDS
    )
    watcher.start()
    try:
        assert not watcher.supervise()
        watcher.stop()
        assert not watcher.alive()
        assert watcher.supervise()
        assert watcher.alive()
        (inbox.path / "later.pdf").write_bytes(b"%PDF")
        wait_until(lambda: offers.has(inbox, "later.pdf"))
    finally:
        watcher.stop()
