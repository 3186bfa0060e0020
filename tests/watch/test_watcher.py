"""The watcher over real folders with the real inotify observer."""

from __future__ import annotations

import contextlib
from pathlib import Path

from daemon.config import InboxConfig
from daemon.watch.watcher import Watcher


def _inotify_instances() -> int:
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # the listing's own fd is gone by now
            count += "inotify" in str(fd.readlink())
    return count


def test_many_inboxes_share_one_inotify_instance(tmp_path: Path) -> None:
    """150 inboxes cost one inotify instance, not 150: the usual limit is 128 per user."""
    boxes = []
    for n in range(150):
        (tmp_path / f"conv_{n}").mkdir()
        boxes.append(InboxConfig(tmp_path / f"conv_{n}", f"conv_{n}", None, f"conv_{n}"))
    before = _inotify_instances()
    watcher = Watcher("inotify", None, boxes, lambda inbox, names: None, lambda path: None)
    watcher.start()
    try:
        assert watcher.alive()
        assert _inotify_instances() - before == 1
    finally:
        watcher.stop()
