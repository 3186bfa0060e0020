"""One observer interface, two backends: inotify (through watchdog) and the folder poller.

The :class:`Watcher` holds an :class:`Observer` and never asks which one: like watchdog's
own ``Observer``, :func:`make_observer` picks the backend for ``observer: auto | inotify |
polling`` and hands back the common interface. Both report to a :class:`Listener`:

- the inotify backend reports one name at a time (created, written, closed after writing,
  moved in, renamed), through :meth:`Listener.on_event`, with what it saw
  (:class:`~daemon.watch.settle.FileEvent`: the settler waits for a writer's close);
- the folder poller reports a whole listing of a folder that may have new names, through
  :meth:`Listener.on_listing` (see ``poller.py`` for why it looks at folders, not files).

With inotify, :class:`InotifyOrPolling` hands the folders inotify cannot serve to the folder
poller: those on a network filesystem (``auto``), and those past inotify's watch limit
(``watch_limit_reached``, see the README), so that the limit never stops the daemon.

An observer also answers which folders it no longer really watches
(:meth:`Observer.dead_watches`): an inotify watch follows a folder's inode, not its path,
so a folder deleted and made again at the same path is unwatched until it is scheduled anew.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Protocol

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

from daemon.logs import get_logger
from daemon.watch.mounts import network_filesystem
from daemon.watch.poller import FolderPoller
from daemon.watch.settle import FileEvent

#: How often the folder poller looks at each folder, in seconds.
POLL_INTERVAL_SECONDS = 1.0

#: The events that can mean "a file to take" or "a writer holds it open": the daemon's own
#: reads would otherwise add open and close-without-write noise. (FileModifiedEvent also
#: asks for IN_ATTRIB; its FileAttribEvent is filtered out before it reaches us.)
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]


class Listener(Protocol):
    """What an observer reports to. Called on the observer's thread: must not block long."""

    def on_event(self, path: Path, *, is_dir: bool, event: FileEvent = FileEvent.APPEARED) -> None:
        """``path`` appeared, was created, written, or closed after writing (``event``)."""

    def on_listing(self, folder: Path, listing: list[tuple[str, bool]]) -> None:
        """``folder``'s listing (``(name, is_dir)`` pairs) may hold new names."""


class Observer(Protocol):
    """A stoppable thread that watches folders (not recursively) and reports to a listener."""

    #: ``inotify`` or ``polling``, for the logs.
    kind: str

    def schedule(self, folder: Path) -> None:
        """Watch ``folder`` from now on (what is in it already is the scan's business)."""

    def unschedule(self, folder: Path) -> None:
        """Stop watching ``folder``; nothing happens if it was not watched."""

    def dead_watches(self, folders: Collection[Path]) -> set[Path]:
        """Those of ``folders`` that are not really watched any more: their watch ended, or
        it watches a folder that no longer is the one at its path."""

    def fallbacks(self) -> dict[Path, str]:
        """Folders polled although inotify was asked for, each with why
        (:data:`NETWORK_FILESYSTEM` or :data:`WATCH_LIMIT`)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...

    def is_alive(self) -> bool: ...


#: Why a folder is polled although inotify was asked for: it is on a network filesystem
#: (``observer: auto``; inotify never hears of what other clients of a share write) ...
NETWORK_FILESYSTEM = "network_filesystem"
#: ... or inotify's watch (or instance) limit is reached.
WATCH_LIMIT = "watch_limit"

#: Told when a folder cannot be watched for inotify's limits: (folder, the error).
WatchLimitHandler = Callable[[Path, OSError], None]

#: What inotify_add_watch / inotify_init answer at their limits (watchdog raises them).
_LIMIT_ERRNOS = frozenset({errno.ENOSPC, errno.EMFILE})


def make_observer(
    mode: str,
    listener: Listener,
    poll_interval: float = POLL_INTERVAL_SECONDS,
    *,
    network: Callable[[Path], str | None] = network_filesystem,
    on_watch_limit: WatchLimitHandler | None = None,
) -> Observer:
    """The observer for ``auto | inotify | polling``: inotify where there is inotify
    (``inotify`` insists on it), else the folder poller. With inotify, the folders it
    cannot watch are polled (:class:`InotifyOrPolling`)."""
    if mode in ("auto", "inotify"):
        try:
            from watchdog.observers.inotify import InotifyObserver  # noqa: PLC0415
        except ImportError:  # not Linux
            if mode == "inotify":
                raise
        else:
            # Full events: a file moved in from elsewhere is a move (complete), not a
            # creation (which would wait for a close that never comes).
            return InotifyOrPolling(
                InotifyFolders(InotifyObserver(generate_full_events=True), listener),
                FolderPoller(listener.on_listing, poll_interval),
                network=network if mode == "auto" else None,
                on_watch_limit=on_watch_limit,
            )
    return FolderPoller(listener.on_listing, poll_interval)


_SEEN: dict[type[FileSystemEvent], FileEvent] = {
    FileCreatedEvent: FileEvent.CREATED,
    FileModifiedEvent: FileEvent.WRITTEN,
    FileClosedEvent: FileEvent.CLOSED,
}


class _Handler(FileSystemEventHandler):
    """Hands each event's path on; never raises (that would kill the observer thread)."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._log = get_logger()

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            seen = FileEvent.APPEARED
            if isinstance(event, FileMovedEvent | DirMovedEvent):
                if not event.dest_path:
                    return  # moved out of the folder (our own claims, too): nothing to take
                raw = event.dest_path
            else:
                raw = event.src_path
                seen = _SEEN.get(type(event), FileEvent.APPEARED)
            self._listener.on_event(Path(os.fsdecode(raw)), is_dir=event.is_directory, event=seen)
        except Exception:  # noqa: BLE001 - an exception here would kill the observer thread
            self._log.exception("event_handler_error")


class _StopRace(logging.Filter):
    """Drops watchdog's error for an event read while its watch was being stopped (e.g. our
    own claim's rename, which watchdog holds back 0.5 s to pair it): the event is of no use
    by then, and a stop is no error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("InotifyEmitter.queue_events() called when")


logging.getLogger("watchdog.observers.inotify").addFilter(_StopRace())


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        st = folder.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class InotifyFolders:
    """watchdog's inotify observer behind :class:`Observer`: one non-recursive watch per
    folder, all sharing one inotify instance (watchdog >= 7)."""

    kind = "inotify"

    def __init__(self, observer: BaseObserver, listener: Listener) -> None:
        self._observer = observer
        self._handler = _Handler(listener)
        self._lock = threading.Lock()
        #: (device, inode) of each folder when it was scheduled: a folder deleted and made
        #: again at the same path is another inode, even when its old watch lives on.
        self._watched_as: dict[Path, tuple[int, int]] = {}

    def schedule(self, folder: Path) -> None:
        identity = _identity(folder)
        self._observer.schedule(self._handler, str(folder), event_filter=_EVENTS)
        with self._lock:
            if identity is not None:
                self._watched_as[folder] = identity

    def unschedule(self, folder: Path) -> None:
        with self._lock:
            self._watched_as.pop(folder, None)
        for emitter in list(self._observer.emitters):
            if Path(emitter.watch.path) == folder:
                with contextlib.suppress(KeyError):  # unscheduled meanwhile
                    self._observer.unschedule(emitter.watch)

    def dead_watches(self, folders: Collection[Path]) -> set[Path]:
        """watchdog ends a watch when its folder is deleted; or (while something still holds
        the deleted folder open, such as our lock on its claim folder) the watch lives on,
        watching the old inode."""
        live = {Path(e.watch.path) for e in list(self._observer.emitters) if e.is_alive()}
        dead = set(folders) - live
        with self._lock:
            watched_as = [(f, i) for f, i in self._watched_as.items() if f in folders]
        for folder, identity in watched_as:
            now = _identity(folder)
            if now is not None and now != identity:
                dead.add(folder)
        return dead

    def fallbacks(self) -> dict[Path, str]:
        return {}

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()

    def join(self, timeout: float | None = None) -> None:
        self._observer.join(timeout)

    def is_alive(self) -> bool:
        return self._observer.is_alive()


class InotifyOrPolling:
    """inotify for every folder it can watch, the folder poller for the rest: folders on a
    network filesystem (when ``network`` is given: ``observer: auto``), and folders past
    inotify's watch limit, which would otherwise stop the daemon. One observer to the
    :class:`Watcher`, alive while both backends are."""

    kind = "inotify"

    def __init__(
        self,
        inotify: InotifyFolders,
        poller: FolderPoller,
        *,
        network: Callable[[Path], str | None] | None,
        on_watch_limit: WatchLimitHandler | None,
    ) -> None:
        self._inotify = inotify
        self._poller = poller
        self._network = network
        self._on_watch_limit = on_watch_limit
        self._lock = threading.Lock()
        self._fallbacks: dict[Path, str] = {}

    def schedule(self, folder: Path) -> None:
        if self._network is not None and self._network(folder) is not None:
            self._poll(folder, NETWORK_FILESYSTEM)
            return
        try:
            self._inotify.schedule(folder)
        except OSError as error:
            if error.errno not in _LIMIT_ERRNOS:
                raise
            self._poll(folder, WATCH_LIMIT)
            if self._on_watch_limit is not None:
                self._on_watch_limit(folder, error)
        else:
            with self._lock:
                self._fallbacks.pop(folder, None)

    def _poll(self, folder: Path, cause: str) -> None:
        with self._lock:
            self._fallbacks[folder] = cause
        self._poller.schedule(folder)

    def unschedule(self, folder: Path) -> None:
        with self._lock:
            polled = self._fallbacks.pop(folder, None) is not None
        if polled:
            self._poller.unschedule(folder)
        else:
            self._inotify.unschedule(folder)

    def dead_watches(self, folders: Collection[Path]) -> set[Path]:
        with self._lock:
            polled = set(self._fallbacks)
        return self._inotify.dead_watches([f for f in folders if f not in polled])

    def fallbacks(self) -> dict[Path, str]:
        with self._lock:
            return dict(self._fallbacks)

    def start(self) -> None:
        self._poller.start()
        self._inotify.start()

    def stop(self) -> None:
        self._inotify.stop()
        self._poller.stop()

    def join(self, timeout: float | None = None) -> None:
        self._inotify.join(timeout)
        self._poller.join(timeout)

    def is_alive(self) -> bool:
        return self._inotify.is_alive() and self._poller.is_alive()
