"""Is this file finished? Candidates wait here until their size and times stand still.

A file is taken once its size, mtime and ctime have not changed for ``settle_seconds``:
either we watched it stand still that long, or its ctime (which no writer can set back, and
which every write, ``utime`` and rename moves forward) is that old already. A close event
is never enough on its own: scanners close and reopen between pages.

Names that are hidden, match an ignore pattern, or are not regular files (symlinks, FIFOs,
sockets, folders) are never taken.
"""

from __future__ import annotations

import heapq
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from daemon.config import InboxConfig
from daemon.logs import get_logger
from daemon.watch.names import Signature, is_ignored, signature

#: A look that comes this early is on time (a timer never fires to the microsecond), s.
TOLERANCE_SECONDS = 0.005
#: Shortest wait before a changed file is looked at again, in seconds.
MIN_RECHECK_SECONDS = 0.01
#: Longest sleep of the settle thread when nothing is due, in seconds.
IDLE_WAKEUP_SECONDS = 1.0


@dataclass(frozen=True)
class Settled:
    """A file that has stood still long enough to be taken."""

    inbox: InboxConfig
    name: str
    mtime_ns: int


@dataclass
class _Candidate:
    inbox: InboxConfig
    name: str
    signature: Signature
    changed_at: float  # monotonic time of the last change we saw
    settled: bool = False  # finished, but held back behind an older unfinished file

    @property
    def order(self) -> tuple[int, str]:
        return (self.signature[1], self.name)


class Settler:
    """Watches candidates until they are finished, then hands them over in arrival order."""

    def __init__(
        self,
        settle_seconds: float,
        ignore: Iterable[str],
        on_settled: Callable[[list[Settled]], None],
    ) -> None:
        self.settle_seconds = settle_seconds
        self.ignore = tuple(ignore)
        self._on_settled = on_settled
        self._cond = threading.Condition()
        self._pending: dict[Path, _Candidate] = {}
        self._due: list[tuple[float, Path]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[Path] = set()
        self._log = get_logger()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="settler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def offer(self, inbox: InboxConfig, names: Iterable[str]) -> None:
        """Files may have appeared or changed (an event, a scan). Never raises.

        A scan's files are offered together, so that none of them is handed over
        before the older ones of the same scan are even known.
        """
        fresh: list[tuple[Path, _Candidate, float]] = []
        now = time.monotonic()
        for name in names:
            if is_ignored(name, self.ignore):
                continue
            path = inbox.path / name
            with self._cond:
                if path in self._pending:
                    continue
            try:
                st = path.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                self._warn_once(path, inbox, st)
                continue
            age = time.time() - max(st.st_mtime, st.st_ctime)
            due = now + max(0.0, min(self.settle_seconds, self.settle_seconds - age))
            fresh.append((path, _Candidate(inbox, name, signature(st), now), due))
        with self._cond:
            for path, candidate, due in fresh:
                if path not in self._pending:
                    self._pending[path] = candidate
                    heapq.heappush(self._due, (due, path))
            self._cond.notify_all()

    def _warn_once(self, path: Path, inbox: InboxConfig, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode) or path in self._warned:
            return
        self._warned.add(path)
        kind = "symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        self._log.warning("file_ignored", inbox=inbox.name, file=path.name, why=kind)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                inboxes = self._check_due()
                for inbox in inboxes:
                    self._release(inbox)
            except Exception:  # noqa: BLE001 - the settle thread must outlive any bug
                self._log.exception("settler_error")
                self._stop.wait(IDLE_WAKEUP_SECONDS)

    def _release(self, inbox: Path) -> None:
        """Hand over the finished files of ``inbox`` in arrival order (mtime, then name).

        A finished file waits while an older file of its inbox is still settling: arrival
        order is kept even when files finish at different moments. A file still being
        written never holds others back for long: every write moves its mtime to now.
        """
        with self._cond:
            waiting = sorted(
                (c for c in self._pending.values() if c.inbox.path == inbox),
                key=lambda c: c.order,
            )
        ready: list[Settled] = []
        for candidate in waiting:
            if not candidate.settled:
                break
            ready.append(Settled(candidate.inbox, candidate.name, candidate.signature[1]))
        if not ready:
            return
        try:
            self._on_settled(ready)
        finally:
            # Pending until handed over, so that `--once` never sees a gap between
            # "settled" and "claimed", and a rescan never offers a file twice.
            with self._cond:
                for item in ready:
                    self._pending.pop(item.inbox.path / item.name, None)

    def _check_due(self) -> set[Path]:
        """Look at the candidates that are due; the inboxes where one settled."""
        with self._cond:
            while not self._stop.is_set():
                wait = self._due[0][0] - time.monotonic() if self._due else IDLE_WAKEUP_SECONDS
                if wait <= 0:
                    break
                self._cond.wait(min(wait, IDLE_WAKEUP_SECONDS))
            due: list[Path] = []
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                due.append(heapq.heappop(self._due)[1])
        return {inbox for path in due if (inbox := self._check(path)) is not None}

    def _check(self, path: Path) -> Path | None:
        with self._cond:
            candidate = self._pending.get(path)
        if candidate is None:
            return None
        try:
            st = path.lstat()
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            with self._cond:
                self._pending.pop(path, None)
            return candidate.inbox.path  # files held behind this one may go now
        now = time.monotonic()
        current = signature(st)
        watched = now - candidate.changed_at
        age = time.time() - max(st.st_mtime, st.st_ctime)
        if (
            current == candidate.signature
            and max(watched, age) >= self.settle_seconds - TOLERANCE_SECONDS
        ):
            candidate.settled = True
            return candidate.inbox.path
        if current != candidate.signature:
            candidate.signature = current
            candidate.changed_at = now
            watched = 0.0
        # Look again when the file will have stood still long enough by its own times
        # (not a whole settle period after we happened to notice the last change).
        still = max(watched, age) if age >= 0 else watched
        wait = min(self.settle_seconds, max(MIN_RECHECK_SECONDS, self.settle_seconds - still))
        with self._cond:
            heapq.heappush(self._due, (now + wait, path))
        return None
