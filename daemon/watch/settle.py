"""Is this file finished? Candidates wait here until their size and times stand still.

A file is taken once its size, mtime and ctime have not changed for ``settle_seconds``:
either we watched it stand still that long, or its ctime (which no writer can set back, and
which every write, ``utime`` and rename moves forward) is that old already. A close event
is never enough on its own: scanners close and reopen between pages.

Where inotify tells us more (:meth:`Settler.seen`), a file created or written without its
close-after-write since is still being written, however long its writer pauses (rate
limiters write in bursts and sleep between them): it is taken once it is closed and then
stood still for ``settle_seconds``, or once it was held open without a write for
``max_write_pause`` (logged as ``write_pause_exceeded``). A file we saw no event for (the
folder poller, a scan, a file already open when the daemon started) keeps the quiet rule.

Names that are hidden, match an ignore pattern, or are not regular files (symlinks, FIFOs,
sockets, folders) are never taken; nor is a file the inbox's ``include``, ``recursive`` and
``max_depth`` leave (:func:`~daemon.watch.names.why_left`). Each of those but the ignored
names is logged once per path (``file_ignored``). A name is the file's path relative to its
inbox (``2026-11/scan.pdf`` in a subfolder). ``settle_seconds`` and ``ignore`` are either
one setting for every inbox, or (the daemon: :meth:`Settler.per_inbox`) each inbox's own.

A file that stood still waits in its inbox's backlog (:class:`_Backlog`: a name and an mtime,
nothing more) until it is handed over, oldest first. With a ``room`` callback (the daemon's
claim window, see the README), an inbox's files are handed over only as far as its room
goes, and the rest when :meth:`Settler.room_freed` says that room freed up: a backlog of
100,000 files is not claimed (and journaled) all at once before the first of them is sent.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from daemon.config import InboxConfig
from daemon.logs import get_logger
from daemon.watch.names import (
    ORPHAN_MARKER_GRACE_SECONDS,
    TAKEN_MARKER_PREFIX,
    Signature,
    Why,
    is_ignored,
    is_marker,
    is_per_file,
    marker_of,
    marker_pattern,
    signature,
    stem_of,
    why_left,
)

#: A look that comes this early is on time (a timer never fires to the microsecond), s.
TOLERANCE_SECONDS = 0.005
#: Shortest wait before a changed file is looked at again, in seconds.
MIN_RECHECK_SECONDS = 0.01
#: Longest sleep of the settle thread when nothing is due, in seconds.
IDLE_WAKEUP_SECONDS = 1.0
#: How long a file may be held open for writing without a write before it is taken
#: anyway, in seconds (``max_write_pause``).
MAX_WRITE_PAUSE_SECONDS = 3600.0
#: At most this many non-regular files are remembered as warned about (``file_ignored``
#: is logged once per path); the least recently offered are forgotten first.
WARNED_PATHS_MAX = 10_000
#: An offer lstat()s this many names at a time, so that the stats of a huge inbox are never
#: all held at once (a name and an mtime is all that waits in a backlog).
OFFER_CHUNK = 1024
#: Files of one inbox handed over at a time: inboxes take turns, so that a backlog in
#: several inboxes starts every conversation at once, not one inbox after another.
HAND_OVER_MOST = 32


class Clock(Protocol):
    """The two clocks the settle rule reads: ours, and the one files are stamped with."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (how long we watched)."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (compared with a file's ctime and mtime)."""


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


SYSTEM_CLOCK: Clock = SystemClock()

#: The ``settle_seconds`` and ``ignore`` patterns that apply to an inbox's files.
SettleRule = Callable[[InboxConfig], tuple[float, tuple[str, ...]]]


def own_settings(inbox: InboxConfig) -> tuple[float, tuple[str, ...]]:
    """The inbox's own ``settle_seconds`` and ``ignore`` (from its configuration)."""
    return inbox.settle_seconds, inbox.ignore


def _same_for_all(settle_seconds: float, ignore: Iterable[str]) -> SettleRule:
    patterns = tuple(ignore)
    return lambda _: (settle_seconds, patterns)


@dataclass
class Stillness:
    """How long a file has stood still: the state last seen, and when we saw it change.

    The one stability rule, shared by the settler and :func:`wait_until_still`.
    """

    signature: Signature
    changed_at: float  # monotonic time of the last change we saw

    def remaining(
        self, st: os.stat_result, now: float, wall: float | None, seconds: float
    ) -> float:
        """0.0 once the file stood still for ``seconds``; else how long to wait before
        looking again. A change restarts the watch.

        It stood still when we saw no change for ``seconds``, or (``wall`` given) when its
        ctime, which no writer can set back, is that old already.
        """
        current = signature(st)
        changed = current != self.signature
        if changed:
            self.signature, self.changed_at = current, now
        watched = now - self.changed_at
        age = -1.0 if wall is None else wall - max(st.st_mtime, st.st_ctime)
        if not changed and max(watched, age) >= seconds - TOLERANCE_SECONDS:
            return 0.0
        # Look again when the file will have stood still long enough by its own times
        # (not a whole settle period after we happened to notice the last change).
        still = max(watched, age) if age >= 0 else watched
        return min(seconds, max(MIN_RECHECK_SECONDS, seconds - still))


def wait_until_still(
    path: Path,
    seconds: float,
    sleep: Callable[[float], object],
    clock: Clock = SYSTEM_CLOCK,
) -> bool:
    """Return once ``path`` stood still for ``seconds``, watched (True), or when it is gone
    (False). ``sleep`` waits; it may raise to abandon the wait (e.g. on shutdown).

    Unlike the settler it takes no file time as proof: it is meant for a file that just
    changed under us, and a server clock running behind ours would make it look old.
    """
    watch: Stillness | None = None
    while True:
        try:
            st = path.lstat()
        except OSError:
            return False
        now = clock.monotonic()
        if watch is None:
            watch = Stillness(signature(st), now)
        wait = watch.remaining(st, now, None, seconds)
        if wait <= 0:
            return True
        sleep(wait)


class FileEvent(Enum):
    """What inotify said of a file (the folder poller and scans say nothing)."""

    APPEARED = "appeared"
    """Moved or renamed into the inbox: complete, as far as anyone can tell."""
    CREATED = "created"
    """Created (``IN_CREATE``): a writer may hold it open."""
    WRITTEN = "written"
    """Written (``IN_MODIFY``): a writer holds it open."""
    CLOSED = "closed"
    """Closed after writing (``IN_CLOSE_WRITE``)."""


class _Writer(Enum):
    """What the events since the last close say of a file's writer."""

    NONE = "none"  # no event, or closed since
    CREATED = "created"  # created, not written yet: open only while still empty (a link()
    # makes a file with content and no write; rsync --inplace creates it empty and waits)
    WRITING = "writing"


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
    still: Stillness
    due: float  # monotonic time of the next look (older entries in the heap are stale)
    writer: _Writer = _Writer.NONE
    last_write: float = 0.0  # monotonic time of the last created/written event
    closed_at: float | None = None  # monotonic time of the last close-after-write
    held_open: bool = False  # a writer held it open when last looked at: holds none back
    pause_exceeded: float | None = None  # held open without a write this long: taken anyway

    def note(self, event: FileEvent, now: float) -> None:
        """Remember what inotify said of the file."""
        if event is FileEvent.CLOSED:
            self.writer, self.closed_at, self.held_open = _Writer.NONE, now, False
        elif event is FileEvent.APPEARED:  # another file now has this name: no history
            self.writer, self.closed_at, self.held_open = _Writer.NONE, None, False
        elif event in (FileEvent.CREATED, FileEvent.WRITTEN):
            if event is FileEvent.WRITTEN or self.writer is _Writer.NONE:
                self.writer = _Writer.WRITING if event is FileEvent.WRITTEN else _Writer.CREATED
            self.last_write = now
            self.held_open = self.held_open or event is FileEvent.WRITTEN

    @property
    def order(self) -> tuple[int, str]:
        return (self.still.signature[1], self.name)


class _Backlog:
    """The files of one inbox that stood still and wait to be handed over, oldest first.

    Each is a name and an mtime, nothing more: about 250 bytes a file, so that 100,000
    files waiting their turn cost some 25 MB, not the kilobyte and more of a claim each.
    """

    __slots__ = ("_heap", "freed", "inbox", "mtimes")

    def __init__(self, inbox: InboxConfig) -> None:
        self.inbox = inbox
        #: Files of the inbox finished since the settle thread last looked at its room.
        self.freed = 0
        #: Name -> mtime (ns) of each file waiting; -1 while it is being handed over.
        self.mtimes: dict[str, int] = {}
        #: (mtime, name), oldest first; an entry that disagrees with ``mtimes`` is stale.
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self.mtimes)

    def add(self, name: str, mtime_ns: int) -> None:
        self.mtimes[name] = mtime_ns
        heapq.heappush(self._heap, (mtime_ns, name))

    def discard(self, name: str) -> bool:
        """Forget ``name`` (news of it: it is a candidate again); True if it waited here."""
        return self.mtimes.pop(name, None) is not None

    def take(self, count: int, before: tuple[int, str] | None) -> list[tuple[int, str]]:
        """Up to ``count`` oldest files, all older than ``before`` (an unfinished file that
        holds newer ones back); each stays counted until :meth:`handed` says it went."""
        taken: list[tuple[int, str]] = []
        heap, mtimes = self._heap, self.mtimes
        while heap and len(taken) < count:
            mtime, name = heap[0]
            if mtimes.get(name) != mtime:
                heapq.heappop(heap)  # stale: discarded, or added again since
                continue
            if before is not None and (mtime, name) >= before:
                break
            heapq.heappop(heap)
            mtimes[name] = -1
            taken.append((mtime, name))
        return taken

    def handed(self, names: Iterable[str]) -> None:
        """The files :meth:`take` gave were handed over (claimed, or gone)."""
        for name in names:
            if self.mtimes.get(name) == -1:
                del self.mtimes[name]

    def drop_left(self, ignore: tuple[str, ...]) -> None:
        """Forget the names the inbox no longer takes (a reload)."""
        for name in [name for name, mtime in self.mtimes.items() if mtime >= 0]:
            if is_ignored(name, ignore) or why_left(self.inbox, name) is not None:
                del self.mtimes[name]


class Settler:
    """Watches candidates until they are finished, then hands them over in arrival order.

    Its thread (:meth:`start`) sleeps until a candidate is due and then calls
    :meth:`check_due`; with an injected ``clock`` and no thread, a test calls it itself.

    ``room(inbox)``: how many more of the inbox's files may be handed over now (None: no
    bound); when it says 0, the rest wait in the backlog until :meth:`room_freed`. Files
    then go ``refill`` at a time (or the last few): one hand-over, not one per file
    (``refill`` a number, or the number for each inbox).
    """

    def __init__(
        self,
        settle_seconds: float,
        ignore: Iterable[str],
        on_settled: Callable[[list[Settled]], None],
        *,
        clock: Clock = SYSTEM_CLOCK,
        warned_max: int = WARNED_PATHS_MAX,
        max_write_pause: float = MAX_WRITE_PAUSE_SECONDS,
        room: Callable[[InboxConfig], int] | None = None,
        refill: int | Callable[[InboxConfig], int] = 1,
    ) -> None:
        self._rule = _same_for_all(settle_seconds, ignore)
        self._max_write_pause = max_write_pause
        self._on_settled = on_settled
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: dict[Path, _Candidate] = {}
        self._due: list[tuple[float, Path]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Non-regular files warned about, least recently offered first (bounded).
        self._warned: OrderedDict[Path, None] = OrderedDict()
        self._warned_max = warned_max
        #: Set by :meth:`only_known` (``run --once``): names not pending are not taken.
        self._closed = False
        self._room = room
        self._refill = refill
        #: Per inbox folder, its files that stood still and wait to be handed over.
        self._backlogs: dict[Path, _Backlog] = {}
        #: Inbox folders whose backlog may go now (the settle thread hands them over).
        self._release_now: set[Path] = set()
        #: Inbox folders with an offer still going: none of their files is handed over
        #: before the whole offer is known (an older file may be in its last chunk).
        self._offering: dict[Path, int] = {}
        self._log = get_logger()

    @classmethod
    def per_inbox(
        cls,
        on_settled: Callable[[list[Settled]], None],
        *,
        clock: Clock = SYSTEM_CLOCK,
        warned_max: int = WARNED_PATHS_MAX,
        max_write_pause: float = MAX_WRITE_PAUSE_SECONDS,
        room: Callable[[InboxConfig], int] | None = None,
        refill: int | Callable[[InboxConfig], int] = 1,
    ) -> Settler:
        """A settler that judges each file by its inbox's own ``settle_seconds`` and
        ``ignore``; a reload hands it the new inbox settings (:meth:`update_inboxes`)."""
        settler = cls(
            0.0,
            (),
            on_settled,
            clock=clock,
            warned_max=warned_max,
            max_write_pause=max_write_pause,
            room=room,
            refill=refill,
        )
        settler._rule = own_settings
        return settler

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
        """Files seen and not yet handed over: settling, or waiting in a backlog."""
        with self._cond:
            return len(self._pending) + sum(len(b) for b in self._backlogs.values())

    def settling(self) -> bool:
        """Whether a pending file is still to stand still (not due to be taken now)."""
        now = self._clock.monotonic() + TOLERANCE_SECONDS
        with self._cond:
            # Every due time set is pushed on the heap, and only those that came are
            # popped: with the heap empty, none is still ahead.
            if not self._due:
                return False
            return any(c.due > now for c in self._pending.values())

    def _refill_of(self, inbox: InboxConfig) -> int:
        """Places that must be free before files of ``inbox`` waiting for room go."""
        return max(1, self._refill if isinstance(self._refill, int) else self._refill(inbox))

    def room_freed(self, inbox: Path) -> None:
        """Files of ``inbox`` (its folder) were finished: more of its backlog may go.
        Cheap and never raises (called for every file finished)."""
        with self._cond:
            backlog = self._backlogs.get(inbox)
            if backlog is None:
                return
            # The settle thread hands files over a batch at a time (``refill``): it is woken
            # once a batch has room, not once per file finished (at 10,000 files of
            # backlog, a wake-up each cost a fifth of the rate: 93 -> 115 files/s).
            backlog.freed += 1
            if backlog.freed < min(self._refill_of(backlog.inbox), len(backlog)):
                return
            backlog.freed = 0
            self._release_now.add(inbox)
            self._cond.notify_all()

    def stuck(self) -> bool:
        """Nothing settles, and every file waiting is held back by a full window (``run
        --once`` after a file error left its claims for the next run)."""
        with self._cond:
            if self._pending or not self._backlogs:
                return False
            wanted = [
                (b.inbox, min(self._refill_of(b.inbox), len(b))) for b in self._backlogs.values()
            ]
        room = self._room
        return room is not None and all(room(inbox) < least for inbox, least in wanted)

    def only_known(self) -> None:
        """From now on, follow only the files pending now: news of any other name is not
        taken (``run --once``: the files present when it started, not those that keep
        arriving, or a run into a busy inbox would never end)."""
        with self._cond:
            self._closed = True

    def configure(
        self,
        settle_seconds: float,
        ignore: Iterable[str],
        max_write_pause: float | None = None,
    ) -> None:
        """Take new settings for every inbox (a reload). Files still settling are judged by
        them from now on: each is looked at again at once, and one whose name is now
        ignored is dropped."""
        with self._cond:
            self._rule = _same_for_all(settle_seconds, ignore)
            if max_write_pause is not None:
                self._max_write_pause = max_write_pause
            self._recheck_all()

    def update_inboxes(
        self, inboxes: Iterable[InboxConfig], max_write_pause: float | None = None
    ) -> None:
        """Take the inboxes' new settings (a reload), as :meth:`configure` does."""
        by_path = {inbox.path: inbox for inbox in inboxes}
        with self._cond:
            for candidate in self._pending.values():
                candidate.inbox = by_path.get(candidate.inbox.path, candidate.inbox)
            for backlog in self._backlogs.values():
                backlog.inbox = by_path.get(backlog.inbox.path, backlog.inbox)
            if max_write_pause is not None:
                self._max_write_pause = max_write_pause
            self._recheck_all()

    def _recheck_all(self) -> None:
        """Under the lock, after new settings: every candidate is due now; one whose name
        is now ignored is dropped."""
        now = self._clock.monotonic()
        for path, candidate in list(self._pending.items()):
            name = candidate.name
            if is_ignored(name, self._rule(candidate.inbox)[1]) or why_left(candidate.inbox, name):
                del self._pending[path]
                continue
            candidate.due = now
            heapq.heappush(self._due, (now, path))
        for folder, backlog in list(self._backlogs.items()):
            backlog.drop_left(self._rule(backlog.inbox)[1])
            if not backlog:
                del self._backlogs[folder]
            # The file that held them back may be the one dropped.
            self._release_now.add(folder)
        self._cond.notify_all()

    def seen(self, inbox: InboxConfig, name: str, event: FileEvent) -> None:
        """inotify said ``event`` of ``inbox/name`` (see the module's docstring). Never
        raises; cheap for a file already known (a writer may cause thousands of events)."""
        if event is not FileEvent.APPEARED:
            path = inbox.path / name
            with self._cond:
                candidate = self._pending.get(path)
                if candidate is not None:
                    now = self._clock.monotonic()
                    candidate.note(event, now)
                    if event is FileEvent.CLOSED:
                        self._look_again(path, candidate, now)  # it may go a quiet period from now
                    return
        # New, or finished and waiting in the backlog: written again, it is not finished.
        self.offer(inbox, [name], event)

    def _look_again(self, path: Path, candidate: _Candidate, now: float) -> None:
        """Under the lock: look at ``candidate`` at ``now`` rather than when it was due."""
        candidate.due = now
        heapq.heappush(self._due, (now, path))
        self._cond.notify_all()

    def offer(
        self, inbox: InboxConfig, names: Iterable[str], event: FileEvent | None = None
    ) -> None:
        """Files may have appeared or changed (an event, a scan). Never raises.

        A scan's files are offered together, so that none of them is handed over
        before the older ones of the same scan are even known. A file that stands still
        already goes straight to its inbox's backlog; only the others are watched.
        """
        folder = inbox.path
        with self._cond:
            seconds, ignore = self._rule(inbox)
            self._offering[folder] = self._offering.get(folder, 0) + 1
            # Known when the offer began: a name that becomes known meanwhile is found
            # under the lock below (this only spares the lstat of names known already).
            settling = {c.name for c in self._pending.values() if c.inbox.path == folder}
        try:
            chunk: list[str] = []
            for name in self._followed(inbox, names):
                chunk.append(name)
                if len(chunk) >= OFFER_CHUNK:
                    self._offer_chunk(inbox, chunk, event, (seconds, ignore), settling)
                    chunk = []
            if chunk:
                self._offer_chunk(inbox, chunk, event, (seconds, ignore), settling)
        finally:
            with self._cond:
                left = self._offering[folder] - 1
                if left:
                    self._offering[folder] = left
                else:
                    del self._offering[folder]
                if folder in self._backlogs:
                    self._release_now.add(folder)
                self._cond.notify_all()

    def _offer_chunk(
        self,
        inbox: InboxConfig,
        names: list[str],
        event: FileEvent | None,
        rule: tuple[float, tuple[str, ...]],
        settling: set[str],
    ) -> None:
        seconds, ignore = rule
        if event is None:  # a scan: the files known already are not news
            names = self._unknown(inbox, names, settling)
        fresh = self._stat_news(inbox, names, ignore)
        now, wall = self._clock.monotonic(), self._clock.time()
        folder = inbox.path
        quiet_since = wall - seconds + TOLERANCE_SECONDS  # older times: stood still already
        with self._cond:
            backlog = self._backlogs.get(folder)
            for name, st in fresh:
                if (
                    event is None
                    and not self._pending
                    and max(st.st_mtime, st.st_ctime) <= quiet_since
                ):
                    # A scan's file that stood still already, nothing known of it (the
                    # candidate's rule, without making a candidate: a backlog at start-up).
                    if backlog is None:
                        backlog = self._backlogs[folder] = _Backlog(inbox)
                    if name not in backlog.mtimes:
                        backlog.add(name, st.st_mtime_ns)
                    continue
                path = folder / name if self._pending or event is not None else None
                known = None if path is None else self._pending.get(path)
                if known is not None:  # offered meanwhile: only the event is news
                    if event is not None and path is not None:
                        known.note(event, now)
                        self._look_again(path, known, now)
                    continue
                if backlog is not None and backlog.mtimes.get(name, -1) >= 0:
                    if event is None:
                        continue  # offered meanwhile, and finished already
                    backlog.discard(name)  # news of it: watched again from now
                candidate = _Candidate(inbox, name, Stillness(signature(st), now), now)
                if event is not None:
                    candidate.note(event, now)
                wait = self._wait(candidate, st, now, wall, seconds)
                if wait <= 0 and candidate.pause_exceeded is None:
                    self._to_backlog(candidate)  # stands still already (a backlog at start-up)
                    backlog = self._backlogs[folder]
                    continue
                candidate.due = now + wait
                path = folder / name
                self._pending[path] = candidate
                heapq.heappush(self._due, (candidate.due, path))
            self._cond.notify_all()

    def _unknown(self, inbox: InboxConfig, names: list[str], settling: set[str]) -> list[str]:
        """``names`` but those settling (when the offer began) or waiting in the backlog."""
        with self._cond:
            backlog = self._backlogs.get(inbox.path)
            waiting = backlog.mtimes if backlog is not None else {}
            return [name for name in names if name not in waiting and name not in settling]

    def _stat_news(
        self, inbox: InboxConfig, names: list[str], ignore: tuple[str, ...]
    ) -> list[tuple[str, os.stat_result]]:
        """The files among ``names`` its inbox takes, each with its stat."""
        fresh: list[tuple[str, os.stat_result]] = []
        template = inbox.done_marker
        prefix = f"{inbox.path}{os.sep}"
        with self._cond:
            warned = bool(self._warned)
        for name in names:
            if template is not None and self._by_marker(inbox, name, template, ignore):
                continue
            if is_ignored(name, ignore):
                continue
            try:
                st = os.lstat(prefix + name)  # no Path: a scan may bring 100,000 names
            except OSError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode) or why_left(inbox, name) is not None:
                st = self._takeable(inbox, name, inbox.path / name)  # says why, once
                if st is None:
                    continue
            if warned:
                self._forget_warned(inbox.path / name)
            fresh.append((name, st))
        return fresh

    def _to_backlog(self, candidate: _Candidate) -> None:
        """Under the lock: ``candidate`` stood still; it waits in its inbox's backlog."""
        folder = candidate.inbox.path
        backlog = self._backlogs.get(folder)
        if backlog is None:
            backlog = self._backlogs[folder] = _Backlog(candidate.inbox)
        backlog.add(candidate.name, candidate.order[0])
        self._release_now.add(folder)

    def _followed(self, inbox: InboxConfig, names: Iterable[str]) -> Iterable[str]:
        """``names``, but after :meth:`only_known` only those pending."""
        with self._cond:
            if not self._closed:
                return names
            backlog = self._backlogs.get(inbox.path)
            waiting = backlog.mtimes if backlog is not None else {}
            return [name for name in names if name in waiting or inbox.path / name in self._pending]

    def _by_marker(
        self, inbox: InboxConfig, name: str, template: str, ignore: tuple[str, ...]
    ) -> bool:
        """With ``done_marker``: True when ``name`` is a marker (handled here: its files are
        taken at once) or a file still waiting for its marker; False for a file whose
        marker is there (it is taken with its marker) or a name the usual rules judge."""
        folder, _, base = name.rpartition("/")
        prefix = f"{folder}/" if folder else ""
        if base.startswith(TAKEN_MARKER_PREFIX):
            self._take_marked(inbox, prefix + base[len(TAKEN_MARKER_PREFIX) :], template, ignore)
            return True
        if is_marker(template, name):
            self._take_marked(inbox, name, template, ignore)
            return True
        if is_ignored(name, ignore) or why_left(inbox, name) is not None:
            return False  # the usual rules (and their file_ignored) apply
        marker = marker_of(template, name)
        mprefix, _, mbase = marker.rpartition("/")
        taken = inbox.path / mprefix / f"{TAKEN_MARKER_PREFIX}{mbase}"
        if (inbox.path / marker).exists() or taken.exists():
            self._take_marked(inbox, marker, template, ignore)
        return True  # taken with its marker, or waiting for it

    def _takeable(self, inbox: InboxConfig, name: str, path: Path) -> os.stat_result | None:
        """``path``'s stat when it is a regular file its inbox takes; else None, and a
        symlink, FIFO, socket or a name the inbox leaves is said once (``file_ignored``).
        A folder is no file and says nothing; a name gone is forgotten as warned."""
        try:
            st = path.lstat()
        except OSError:
            self._forget_warned(path)
            return None
        if not stat.S_ISREG(st.st_mode):
            if not stat.S_ISDIR(st.st_mode):
                kind = Why.SYMLINK if stat.S_ISLNK(st.st_mode) else Why.NOT_REGULAR
                self._warn_once(path, inbox, name, kind)
            return None
        why = why_left(inbox, name)
        if why is not None:
            self._warn_once(path, inbox, name, why)
            return None
        return st

    def _marked(
        self, inbox: InboxConfig, marker: str, template: str, ignore: tuple[str, ...]
    ) -> list[tuple[str, os.stat_result]]:
        """The regular files ``marker`` lets go (per file: its file; a batch: every file in
        its folder), each with its stat; the others are said as usual (a symlink...)."""
        candidates = _marked_names(inbox, marker, template)
        files: list[tuple[str, os.stat_result]] = []
        for name in sorted(candidates):
            if is_ignored(name, ignore):
                continue
            path = inbox.path / name
            st = self._takeable(inbox, name, path)
            if st is not None:
                files.append((name, st))
        return files

    def _take_marked(
        self, inbox: InboxConfig, marker: str, template: str, ignore: tuple[str, ...]
    ) -> None:
        """Hand over at once (no settle wait) the files ``marker`` lets go, then delete it.

        The marker is first renamed to a hidden name (:data:`TAKEN_MARKER_PREFIX`): a run
        killed before it is deleted finds that name, takes what is still there (a claimed
        file is not: it is resumed from its claim, and sent once) and deletes it.
        """
        folder, _, base = marker.rpartition("/")
        marker_path = inbox.path / marker
        taken = inbox.path / folder / f"{TAKEN_MARKER_PREFIX}{base}"
        files = self._marked(inbox, marker, template, ignore)
        if not files:
            if taken.exists():  # a leftover of a run killed after its claims
                with contextlib.suppress(OSError):
                    taken.unlink()
                return
            self._orphan(inbox, marker, marker_path)
            return
        self._forget_warned(marker_path)
        if not taken.exists():
            try:
                marker_path.rename(taken)
            except FileNotFoundError:
                return  # another daemon (or our own scan) is taking these files
        batch = [Settled(inbox, name, st.st_mtime_ns) for name, st in files]
        batch.sort(key=lambda item: (item.mtime_ns, item.name))
        with self._cond:
            backlog = self._backlogs.get(inbox.path)
            for item in batch:
                self._pending.pop(inbox.path / item.name, None)
                if backlog is not None:
                    backlog.discard(item.name)
        self._on_settled(batch)
        if all(not os.path.lexists(inbox.path / item.name) for item in batch):
            with contextlib.suppress(OSError):
                taken.unlink()

    def _orphan(self, inbox: InboxConfig, marker: str, path: Path) -> None:
        """A marker without its file: said once when it is older than the grace period."""
        try:
            age = self._clock.time() - path.lstat().st_mtime
        except OSError:
            return
        if age >= ORPHAN_MARKER_GRACE_SECONDS:
            self._warn_once(path, inbox, marker, Why.ORPHAN_MARKER)

    def _wait(
        self, candidate: _Candidate, st: os.stat_result, now: float, wall: float, seconds: float
    ) -> float:
        """Under the lock: 0.0 when ``candidate`` may go; else how long until it is looked
        at again."""
        writer = candidate.writer
        open_now = writer is _Writer.WRITING or (writer is _Writer.CREATED and st.st_size == 0)
        candidate.held_open = open_now
        if open_now:
            paused = now - candidate.last_write
            if paused < self._max_write_pause - TOLERANCE_SECONDS:
                # Still written: the close (an event) or the bound wakes it, no polling.
                return max(MIN_RECHECK_SECONDS, self._max_write_pause - paused)
            candidate.pause_exceeded = paused  # taken anyway, once it also stands still
        wait = candidate.still.remaining(st, now, wall, seconds)
        if candidate.closed_at is not None:
            # Quiet from the close on: a scanner that closes between pages reopens soon.
            since_close = now - candidate.closed_at
            if since_close < seconds - TOLERANCE_SECONDS:
                wait = max(wait, seconds - since_close)
        return wait

    def _warn_once(self, path: Path, inbox: InboxConfig, name: str, why: Why) -> None:
        """Log ``file_ignored`` for ``path``, unless it was logged since it last changed."""
        with self._cond:
            known = path in self._warned
            self._warned[path] = None
            self._warned.move_to_end(path)
            while len(self._warned) > self._warned_max:
                self._warned.popitem(last=False)
        if not known:
            self._log.warning("file_ignored", inbox=inbox.name, file=name, why=str(why))

    def _forget_warned(self, path: Path) -> None:
        """``path`` is gone or a regular file: should it turn odd again, that is news."""
        with self._cond:
            self._warned.pop(path, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sleep_until_due()
                self.check_due()
            except Exception:  # noqa: BLE001 - the settle thread must outlive any bug
                self._log.exception("settler_error")
                self._stop.wait(IDLE_WAKEUP_SECONDS)

    def _sleep_until_due(self) -> None:
        with self._cond:
            while not self._stop.is_set():
                if self._due:
                    wait = self._due[0][0] - self._clock.monotonic()
                else:
                    wait = IDLE_WAKEUP_SECONDS
                if wait <= 0 or self._release_now:
                    return
                self._cond.wait(min(wait, IDLE_WAKEUP_SECONDS))

    def check_due(self) -> None:
        """Look at the candidates that are due now; hand over the files that may go."""
        with self._cond:
            due: list[Path] = []
            now = self._clock.monotonic()
            while self._due and self._due[0][0] <= now:
                at, path = heapq.heappop(self._due)
                candidate = self._pending.get(path)
                if candidate is not None and candidate.due == at:
                    due.append(path)
        inboxes = {inbox for path in due if (inbox := self._check(path)) is not None}
        # The inboxes take turns, HAND_OVER_MOST files at a time: in line, an ordered set.
        # One whose turn left more to hand over goes to the back, behind the inboxes that
        # became ready during its turn (an offer that ended, room that freed).
        line = dict.fromkeys(sorted(inboxes))
        again: Path | None = None
        while True:
            with self._cond:
                line.update(dict.fromkeys(sorted(self._release_now - line.keys())))
                self._release_now = set()
            if again is not None:
                line[again] = None
            if not line:
                return
            inbox = next(iter(line))
            del line[inbox]
            again = inbox if self._release(inbox) else None

    def _release(self, inbox: Path) -> bool:
        """Hand over the finished files of ``inbox`` in arrival order (mtime, then name),
        as many as its room allows, at most :data:`HAND_OVER_MOST`; True when that many
        went and more may follow now.

        A finished file waits while an older file of its inbox is still settling: arrival
        order is kept even when files finish at different moments. A file still being
        written never holds others back for long: every write moves its mtime to now.
        """
        with self._cond:
            backlog = self._backlogs.get(inbox)
            if backlog is None or self._offering.get(inbox):
                return False  # nothing waits; or an offer is going on, which releases it
            config, waiting = backlog.inbox, len(backlog)
        room = waiting if self._room is None else self._room(config)
        if room <= 0 or room < min(self._refill_of(config), waiting):
            return False  # room_freed() says when files of it are finished
        with self._cond:
            if self._backlogs.get(inbox) is not backlog:
                return False
            # A file still written holds none back: its mtime will be newer than theirs.
            unfinished = [
                c.order for c in self._pending.values() if c.inbox.path == inbox and not c.held_open
            ]
            taken = backlog.take(min(room, HAND_OVER_MOST), min(unfinished, default=None))
            ready = [Settled(backlog.inbox, name, mtime) for mtime, name in taken]
        if not ready:
            return False
        try:
            self._on_settled(ready)
        finally:
            # Waiting until handed over, so that `--once` never sees a gap between
            # "settled" and "claimed", and a rescan never offers a file twice.
            with self._cond:
                backlog.handed(name for _, name in taken)
                if not backlog and self._backlogs.get(inbox) is backlog:
                    del self._backlogs[inbox]
                elif self._room is not None and len(taken) < HAND_OVER_MOST:
                    self._release_now.add(inbox)  # the room may have grown meanwhile
        return len(taken) == HAND_OVER_MOST  # its next turn is the caller's to give

    def _check(self, path: Path) -> Path | None:
        """Look at one candidate; its inbox when the files held there may go now."""
        try:
            st: os.stat_result | None = path.lstat()
        except OSError:
            st = None
        with self._cond:
            candidate = self._pending.get(path)
            if candidate is None:
                return None
            if st is None or not stat.S_ISREG(st.st_mode):
                del self._pending[path]
                return candidate.inbox.path  # files held behind this one may go now
            # Under the lock: a reload in between is either seen here or looks again.
            now = self._clock.monotonic()
            seconds = self._rule(candidate.inbox)[0]
            wait = self._wait(candidate, st, now, self._clock.time(), seconds)
            paused = candidate.pause_exceeded if wait <= 0 else None
            if wait <= 0:
                del self._pending[path]
                self._to_backlog(candidate)
            else:
                candidate.due = now + wait
                heapq.heappush(self._due, (candidate.due, path))
                # A file now found held open may let the finished files behind it go.
                return candidate.inbox.path if candidate.held_open else None
        if paused is not None:
            self._log.warning(
                "write_pause_exceeded",
                inbox=candidate.inbox.name,
                file=candidate.name,
                paused_s=round(paused, 1),
                max_write_pause=self._max_write_pause,
            )
        return candidate.inbox.path


def _marked_names(inbox: InboxConfig, marker: str, template: str) -> list[str]:
    """The names (relative to the inbox) that ``marker`` stands for: per file, its file
    (``{name}``) or the files of its stem (``{stem}``); a batch marker, every name in its
    folder. Markers are never among them."""
    folder, _, base = marker.rpartition("/")
    prefix = f"{folder}/" if folder else ""
    stem: str | None = None
    if is_per_file(template):
        match = marker_pattern(template).fullmatch(base)
        if match is None:
            return []
        if match.groupdict().get("name") is not None:
            return [prefix + match["name"]]
        stem = match["stem"]
    try:
        listing = [entry.name for entry in (inbox.path / folder).iterdir()]
    except OSError:
        return []
    return [
        prefix + name
        for name in listing
        if not is_marker(template, name) and (stem is None or stem_of(name) == stem)
    ]
