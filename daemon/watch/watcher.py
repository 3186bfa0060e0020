"""Events and rescans become candidate paths.

One non-recursive watch per inbox, plus one on the spool for folders that appear while we
run, through whichever :class:`~daemon.watch.observers.Observer` ``observer:`` asks for
(inotify, or the folder poller for network shares); the watcher never asks which it holds.
watchdog >= 7 shares one inotify instance between watches (6.0 still opened one per watch,
against a usual limit of 128), so a hundred inboxes cost a hundred watches, not a hundred
instances. Observers only hand paths on, inside try/except: they run on the observer's one
thread, and an exception there would kill it.

A ``recursive`` inbox's subfolders (down to its ``max_depth``) get a watch of their own, each
found by the scans and by the event of its creation; a file there is offered by its path
relative to the inbox (``2026-11/scan.pdf``). A subfolder's watch is dropped when a scan no
longer finds it; the folder itself is the dropper's and never deleted.

Events get lost (inotify queue overflow, network shares that send none), so every inbox is
also scanned at start and every ``rescan_interval``; and the observer is supervised and
rebuilt when it dies (the polling emitter stops itself on an OSError, e.g. a share that went
away).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from daemon.config import InboxConfig
from daemon.logs import get_logger
from daemon.watch.mounts import network_filesystem
from daemon.watch.names import walk
from daemon.watch.observers import (
    NETWORK_FILESYSTEM,
    POLL_INTERVAL_SECONDS,
    WATCH_LIMIT,
    Observer,
    make_observer,
)
from daemon.watch.settle import FileEvent


class Watcher:
    """Feeds candidates from watchdog events, start-up scans and periodic rescans."""

    def __init__(
        self,
        mode: str,
        spool: Path | None,
        inboxes: Iterable[InboxConfig],
        on_candidates: Callable[[InboxConfig, list[str]], None],
        on_new_folder: Callable[[Path], None],
        *,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        network: Callable[[Path], str | None] = network_filesystem,
        on_seen: Callable[[InboxConfig, str, FileEvent], None] | None = None,
    ) -> None:
        self.mode = mode
        #: Where inotify's news of a file (created, written, closed) goes: the settler.
        self._on_seen = on_seen
        self._poll_interval = poll_interval
        self._network = network
        #: ``watch_limit_reached`` is said once per run, not once per folder.
        self._watch_limit_said = False
        self.spool = spool
        self.log = get_logger()
        self._on_candidates = on_candidates
        self._on_new_folder = on_new_folder
        self._lock = threading.RLock()
        self._inboxes: dict[Path, InboxConfig] = {i.path: i for i in inboxes}
        #: Inboxes whose folder was made anew since it was watched (see :meth:`add`).
        self._replaced: set[Path] = set()
        #: Watched subfolders of recursive inboxes: (the inbox's folder, the relative name).
        self._subfolders: dict[Path, tuple[Path, str]] = {}
        self._observer: Observer | None = None
        #: ``inotify`` or ``polling`` once started.
        self.kind = ""

    @property
    def inboxes(self) -> list[InboxConfig]:
        with self._lock:
            return list(self._inboxes.values())

    def start(self) -> None:
        with self._lock:
            observer = make_observer(
                self.mode,
                self,
                self._poll_interval,
                network=self._network,
                on_watch_limit=self._watch_limit,
            )
            self._observer, self.kind = observer, observer.kind
            folders = [
                *([self.spool] if self.spool is not None else []),
                *self._inboxes,
                *self._subfolders,
            ]
        # Started first, then scheduled: a folder inotify cannot watch (its limits) then
        # fails alone, instead of failing the observer's start for every folder. Outside
        # the lock: the observer's thread takes its own lock and then, to hand an event
        # on, ours (on_event); holding ours while waiting for its lock would deadlock.
        observer.start()
        for folder in folders:
            observer.schedule(folder)

    def _watch_limit(self, folder: Path, error: OSError) -> None:
        """inotify cannot watch ``folder`` (its limits): it is polled; said once."""
        if self._watch_limit_said:
            return
        self._watch_limit_said = True
        setting = "max_user_instances" if error.errno == errno.EMFILE else "max_user_watches"
        self.log.warning(
            "watch_limit_reached",
            folder=str(folder),
            limit=_inotify_limit(setting),
            sysctl=f"fs.inotify.{setting}",
            hint=(
                "inboxes past the limit are polled once a second; raise it, e.g. "
                f"sysctl -w fs.inotify.{setting}=524288"
            ),
        )

    def polled(self) -> dict[str, int]:
        """Inboxes polled although inotify was asked for, per cause
        (``network_filesystem``, ``watch_limit``)."""
        with self._lock:
            observer, inboxes = self._observer, set(self._inboxes)
        counts = dict.fromkeys((NETWORK_FILESYSTEM, WATCH_LIMIT), 0)
        if observer is not None:
            for folder, cause in observer.fallbacks().items():
                if folder in inboxes:
                    counts[cause] = counts.get(cause, 0) + 1
        return counts

    def _place(self, folder: Path) -> tuple[InboxConfig, str] | None:
        """The inbox ``folder`` is watched for, and the prefix of its files' names there
        ("" for the inbox itself, ``2026-11/`` for a subfolder)."""
        with self._lock:
            inbox = self._inboxes.get(folder)
            if inbox is not None:
                return inbox, ""
            sub = self._subfolders.get(folder)
            if sub is None:
                return None
            inbox = self._inboxes.get(sub[0])
        return None if inbox is None else (inbox, sub[1] + "/")

    def on_listing(self, folder: Path, listing: list[tuple[str, bool]]) -> None:
        """``folder``'s listing may hold new names (the folder poller)."""
        place = self._place(folder)
        if place is not None:
            inbox, prefix = place
            self._on_candidates(inbox, [prefix + name for name, is_dir in listing if not is_dir])
            for name, is_dir in listing:
                if is_dir and (folder / name) not in self._subfolders:
                    self._new_subfolder(inbox, folder / name, prefix + name)
        if self.spool is not None and folder == self.spool:
            for name, is_dir in listing:
                if is_dir and not name.startswith("."):
                    self._on_new_folder(folder / name)

    def stop(self) -> None:
        with self._lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=10)

    def alive(self) -> bool:
        with self._lock:
            return self._observer is not None and self._observer.is_alive()

    def supervise(self) -> bool:
        """Rebuild a dead observer; True when it had to be restarted."""
        if self.alive():
            return False
        self.log.error("observer_restarted", observer=self.kind)
        self.stop()
        self.start()
        return True

    def set_spool(self, spool: Path | None) -> None:
        """Watch another spool's root for new folders (a reload changed ``spool``)."""
        with self._lock:
            if spool == self.spool:
                return
            old, self.spool = self.spool, spool
            dropped = old is not None and old not in self._inboxes
            observer = self._observer
        # Never holding our lock while the observer takes its own (see start).
        if observer is not None:
            if dropped and old is not None:
                observer.unschedule(old)
            if spool is not None:
                observer.schedule(spool)

    def count(self) -> int:
        """How many inboxes are watched. No lock, no copy (a dict's size is read in one
        step): the claim window asks it for every hand-over."""
        return len(self._inboxes)

    def add(self, inbox: InboxConfig) -> bool:
        """Watch ``inbox``, or take its new settings if its folder is watched already
        (a reload that changed its conversation or caption). True when it is new, or
        when its folder was deleted and made again: it is then watched afresh."""
        with self._lock:
            known = inbox.path in self._inboxes
            self._inboxes[inbox.path] = inbox
            replaced = known and inbox.path in self._replaced
            self._replaced.discard(inbox.path)
            observer = self._observer
        if known and not replaced:
            return False
        if observer is not None:
            if replaced:
                # An inotify watch follows the folder, not its path: it died with the old
                # folder, and scheduling the path again would only find the dead watch.
                observer.unschedule(inbox.path)
            observer.schedule(inbox.path)
        return True

    def remove(self, path: Path) -> None:
        with self._lock:
            self._replaced.discard(path)
            known = self._inboxes.pop(path, None) is not None
            subfolders = [f for f, (top, _) in self._subfolders.items() if top == path]
            for folder in subfolders:
                del self._subfolders[folder]
            observer = self._observer
        if known and observer is not None:
            observer.unschedule(path)
            for folder in subfolders:
                observer.unschedule(folder)

    def _new_subfolder(self, inbox: InboxConfig, folder: Path, name: str) -> None:
        """``folder`` (``name`` relative to ``inbox``) appeared: watch it (a recursive inbox,
        within ``max_depth``) and offer what it holds already (a tree moved in whole, or
        files written before the watch was in place); its own subfolders too."""
        if not inbox.recursive or name.startswith(".") or name in ("sent", "failed"):
            return
        if name.count("/") + 1 > inbox.max_depth or folder.is_symlink():
            return
        self._watch_subfolders(inbox, {folder: name})
        names: list[str] = []
        found: dict[Path, str] = {}
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        found[Path(entry.path)] = f"{name}/{entry.name}"
                    else:
                        names.append(f"{name}/{entry.name}")
        except OSError:
            return  # gone again, or unreadable: the next scan says so
        self._on_candidates(inbox, names)
        for path, relative in found.items():
            self._new_subfolder(inbox, path, relative)

    def _watch_subfolders(self, inbox: InboxConfig, folders: dict[Path, str]) -> None:
        """Watch those of ``folders`` (subfolders of ``inbox``) not watched yet."""
        with self._lock:
            new = {f: n for f, n in folders.items() if f not in self._subfolders}
            for folder, name in new.items():
                self._subfolders[folder] = (inbox.path, name)
            observer = self._observer
        if observer is None:
            return
        for folder in new:
            try:
                observer.schedule(folder)
            except OSError:  # deleted meanwhile: the next scan forgets it
                with self._lock:
                    self._subfolders.pop(folder, None)

    def _forget_subfolders(self, inbox: Path, present: set[Path]) -> None:
        """Stop watching the subfolders of ``inbox`` that a scan no longer found."""
        with self._lock:
            gone = [
                f for f, (top, _) in self._subfolders.items() if top == inbox and f not in present
            ]
            for folder in gone:
                del self._subfolders[folder]
            observer = self._observer
        if observer is not None:
            for folder in gone:
                observer.unschedule(folder)

    def _dead_watches(self) -> set[Path]:
        """Inboxes whose watch no longer watches the folder at their path (a dead observer
        is :meth:`supervise`'s business)."""
        with self._lock:
            observer, folders = self._observer, set(self._inboxes)
        if observer is None or not observer.is_alive():
            return set()
        return observer.dead_watches(folders)

    def on_event(self, path: Path, *, is_dir: bool, event: FileEvent = FileEvent.APPEARED) -> None:
        """``path`` appeared, was created, written, or closed after writing (the inotify
        observer)."""
        parent = path.parent
        place = self._place(parent)
        if place is not None and not is_dir:
            inbox, prefix = place
            if self._on_seen is not None and event is not FileEvent.APPEARED:
                self._on_seen(inbox, prefix + path.name, event)
            else:
                self._on_candidates(inbox, [prefix + path.name])
        elif place is not None:
            inbox, prefix = place
            self._new_subfolder(inbox, path, prefix + path.name)
        elif is_dir and self.spool is not None and parent == self.spool:
            with self._lock:
                if path in self._inboxes:
                    # A folder created (or moved in) where an inbox's folder was: the
                    # inbox was deleted or moved away, and this is a new folder.
                    self._replaced.add(path)
            self._on_new_folder(path)

    def scan(self) -> int:
        """Offer every file of every inbox (start-up and rescans); new spool folders, and
        inbox folders made anew whose creation event was missed (or, for an inbox named in
        the config, that nothing watches for), too."""
        for path in sorted(self._dead_watches()):
            if path.is_dir():  # made anew: watch it afresh, as for a new spool folder
                with self._lock:
                    self._replaced.add(path)
                self._on_new_folder(path)
        if self.spool is not None:
            try:
                for entry in os.scandir(self.spool):
                    path = Path(entry.path)
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    if path not in self._inboxes or path in self._replaced:
                        self._on_new_folder(path)
            except OSError as error:
                self.log.error("scan_failed", folder=str(self.spool), error=str(error))
        offered = 0
        for inbox in self.inboxes:
            names, folders = self._walk(inbox)
            self._on_candidates(inbox, names)
            offered += len(names)
            if inbox.recursive:
                self._watch_subfolders(inbox, folders)
            self._forget_subfolders(inbox.path, set(folders) if inbox.recursive else set())
        return offered

    def _walk(self, inbox: InboxConfig) -> tuple[list[str], dict[Path, str]]:
        """The names in ``inbox`` and its subfolders (see :func:`walk`), and the subfolders
        whose files it takes (``recursive``, within ``max_depth``)."""
        folders: dict[Path, str] = {}

        def found(folder: Path, name: str) -> None:
            if name.count("/") + 1 <= inbox.max_depth:
                folders[folder] = name

        def failed(folder: Path, error: OSError) -> None:
            self.log.error("scan_failed", folder=str(folder), error=str(error))

        names = [name for name, _ in walk(inbox, on_folder=found, on_error=failed)]
        return names, folders


def _inotify_limit(setting: str) -> int | None:
    """The current value of ``fs.inotify.<setting>``, if it can be read."""
    try:
        return int(Path("/proc/sys/fs/inotify", setting).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
