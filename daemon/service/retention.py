"""Sent-folder retention: ``sent_retention_days`` prunes old files from ``<inbox>/sent/``.

Only regular, non-hidden files of the ``sent/`` tree are deleted — directly in ``sent/`` and
in its dated folders (``YYYY/MM/``, ``YYYY/MM/DD/``), in every layout and a mix of them:
never a symlink, never another subfolder, never anything in ``failed/`` (a failed file
waits for a human). A dated folder it emptied is removed, never ``sent/`` itself. A file's age is
counted from when it reached ``sent/``: the later of its mtime and its ctime. The mtime
alone would not do, since a file keeps the mtime it was dropped with (a scan copied with
``cp -p`` may be years old) and would be deleted right after it was sent; the archive move
(a hard link, or a rename) sets the ctime.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from daemon.config import InboxConfig
from daemon.logs import get_logger
from daemon.store.archive import SENT_DIR
from daemon.store.folders import archive_folders, mirrored_depth, remove_emptied

SECONDS_PER_DAY = 86400.0
#: How often a running daemon prunes, in seconds (and once at start).
PRUNE_INTERVAL_SECONDS = 3600.0


def prune_sent(inboxes: Iterable[InboxConfig], days: float, now: float | None = None) -> int:
    """Delete files older than ``days`` from each inbox's ``sent/``; how many were deleted."""
    log = get_logger()
    cutoff = (time.time() if now is None else now) - days * SECONDS_PER_DAY
    total = 0
    for inbox in inboxes:
        folder = inbox.path / SENT_DIR
        if folder.is_symlink():
            log.warning("retention_skipped", inbox=inbox.name, why="sent/ is a symlink")
            continue
        count = _prune_folder(folder, cutoff, inbox)
        if count:
            log.info("sent_pruned", inbox=inbox.name, count=count, older_than_days=days)
        total += count
    return total


def _prune_folder(top: Path, cutoff: float, inbox: InboxConfig) -> int:
    log = get_logger()

    def unreadable(folder: Path, error: OSError) -> None:
        log.error("retention_failed", inbox=inbox.name, folder=str(folder), error=str(error))

    count = 0
    emptied: list[Path] = []
    mirrored = mirrored_depth(inbox)
    for folder, names in archive_folders(top, on_error=unreadable, mirrored=mirrored):
        for name in names:
            path = folder / name
            try:
                st = path.lstat()
            except OSError:
                continue  # gone meanwhile
            if not stat.S_ISREG(st.st_mode) or max(st.st_mtime, st.st_ctime) >= cutoff:
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue  # another daemon pruned it first
            except OSError as error:
                where = path.relative_to(top).as_posix()
                log.error("retention_failed", inbox=inbox.name, file=where, error=str(error))
                continue
            count += 1
            if folder != top:
                emptied.append(folder)
    remove_emptied(top, emptied)
    return count


class Retention:
    """Runs :func:`prune_sent` when first ticked and then every ``interval`` seconds.

    ``tick`` is cheap when nothing is due, so the service calls it on every turn of its
    main loop; a new ``sent_retention_days`` (SIGHUP) prunes at the next tick.
    """

    def __init__(
        self,
        inboxes: Callable[[], Iterable[InboxConfig]],
        days: Callable[[], float | None],
        interval: float = PRUNE_INTERVAL_SECONDS,
    ) -> None:
        self._inboxes = inboxes
        self._days = days
        self._interval = interval
        self._next = 0.0
        self._last_days: float | None = None

    def tick(self) -> None:
        """Prune when due; never raises (it runs in the service's main loop)."""
        days = self._days()
        now = time.monotonic()
        if days is None or (days == self._last_days and now < self._next):
            self._last_days = days
            return
        self._last_days = days
        self._next = now + self._interval
        try:
            prune_sent(self._inboxes(), days)
        except Exception:  # noqa: BLE001 - a pruning bug must not stop the daemon
            get_logger().exception("retention_failed")
