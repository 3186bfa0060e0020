"""``observer: polling`` for NFS/SMB shares, which send no inotify events.

watchdog's PollingObserver snapshots every file of every folder on every look: with 100
inboxes of 1,000 files that is 100,000 ``stat`` calls a second, more than a core, and a
snapshot of every file held in memory. Yet a new name in a folder (a created, moved-in or
renamed file) always changes the folder's own mtime, on NFS and SMB too. So this poller
``stat``\\ s each watched folder once per look and lists only the folders whose mtime
changed: idle cost grows with the number of folders, not files. What happens to a file
after its name appeared (it grows, it is rewritten) is the settler's business, which
watches its candidates anyway; the periodic rescan covers the rest.

Unlike watchdog's polling emitter, it never stops on an ``OSError`` (a share that went
away): it logs the folder once and keeps looking until it is back.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection
from pathlib import Path

from daemon.logs import get_logger

#: (folder, [(name, is_dir), ...]) for a folder whose listing may have new names.
ChangeHandler = Callable[[Path, list[tuple[str, bool]]], None]

_Signature = tuple[int, int, int] | None


def _signature(folder: Path) -> _Signature:
    try:
        st = folder.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class FolderPoller:
    """A stoppable thread that reports folders whose listing changed (an ``Observer``, see
    ``observers.py``)."""

    kind = "polling"

    def __init__(self, on_change: ChangeHandler, interval: float) -> None:
        self._on_change = on_change
        self._interval = interval
        self._folders: dict[Path, _Signature] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="folder-poller", daemon=True)
        self._failing: set[Path] = set()
        self._log = get_logger()

    def schedule(self, folder: Path) -> None:
        """Watch ``folder`` from now on (what is in it already is the start-up scan's)."""
        with self._lock:
            self._folders.setdefault(folder, _signature(folder))

    def unschedule(self, folder: Path) -> None:
        with self._lock:
            self._folders.pop(folder, None)

    def dead_watches(self, folders: Collection[Path]) -> set[Path]:
        """None: the poller looks at paths, not inodes, and lists a folder made anew itself."""
        return set()

    def fallbacks(self) -> dict[Path, str]:
        """None: polling is what was asked for."""
        return {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                folders = list(self._folders.items())
            for folder, seen in folders:
                current = _signature(folder)
                if current == seen:
                    continue
                if current is None:
                    self._gone(folder)
                    continue
                try:
                    with os.scandir(folder) as entries:
                        listing = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
                except OSError as error:
                    self._gone(folder, error)
                    continue
                with self._lock:
                    if folder in self._folders:
                        self._folders[folder] = current
                self._failing.discard(folder)
                try:
                    self._on_change(folder, listing)
                except Exception:  # noqa: BLE001 - the poller must outlive any bug
                    self._log.exception("event_handler_error", folder=str(folder))

    def _gone(self, folder: Path, error: OSError | None = None) -> None:
        if folder not in self._failing:
            self._failing.add(folder)
            self._log.error("scan_failed", folder=str(folder), error=str(error or "unreachable"))
        with self._lock:
            if folder in self._folders:
                self._folders[folder] = None  # list it again once it is back
