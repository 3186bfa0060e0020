"""The folder poller (observer: polling): new names are seen, a lost share is survived."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from daemon.watch.poller import FolderPoller
from tests.helpers import wait_until


class _Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.names: list[tuple[Path, str, bool]] = []

    def __call__(self, folder: Path, listing: list[tuple[str, bool]]) -> None:
        with self.lock:
            self.names += [(folder, name, is_dir) for name, is_dir in listing]

    def has(self, folder: Path, name: str) -> bool:
        with self.lock:
            return any(f == folder and n == name for f, n, _ in self.names)


def test_new_names_are_reported_and_quiet_folders_are_not_listed(tmp_path: Path) -> None:
    """A folder is listed only when its listing changed."""
    busy, quiet = tmp_path / "busy", tmp_path / "quiet"
    busy.mkdir()
    quiet.mkdir()
    (quiet / "old.pdf").write_bytes(b"%PDF")
    seen = _Seen()
    poller = FolderPoller(seen, interval=0.05)
    poller.schedule(busy)
    poller.schedule(quiet)
    poller.start()
    try:
        (busy / "new.pdf").write_bytes(b"%PDF")
        (busy / "sub").mkdir()
        wait_until(lambda: seen.has(busy, "new.pdf") and seen.has(busy, "sub"))
        assert not seen.has(quiet, "old.pdf")
        assert (busy, "sub", True) in seen.names
    finally:
        poller.stop()
        poller.join(5)


def test_a_folder_that_goes_away_and_comes_back_is_watched_again(tmp_path: Path) -> None:
    """An OSError (a share that went away) does not stop the poller."""
    share = tmp_path / "share"
    share.mkdir()
    seen = _Seen()
    poller = FolderPoller(seen, interval=0.05)
    poller.schedule(share)
    poller.start()
    try:
        shutil.rmtree(share)
        threading.Event().wait(0.3)
        assert poller.is_alive()
        share.mkdir()
        (share / "back.pdf").write_bytes(b"%PDF")
        wait_until(lambda: seen.has(share, "back.pdf"))
    finally:
        poller.stop()
        poller.join(5)
