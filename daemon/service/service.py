"""Wiring and lifecycle: the only module that puts the parts together.

Start-up: open the journal, resume unfinished claims (ours from a crash, or a dead
daemon's), start the workers, watch every inbox, scan them all, tell systemd READY=1.
Then, until SIGTERM/SIGINT: supervise the observer, rescan every ``rescan_interval``, reload
the configuration on SIGHUP, ping the systemd watchdog while healthy.
Shutdown: take no new file, let the requests in flight finish (bounded), exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from daemon import __version__
from daemon.config import Config, InboxConfig, load_config
from daemon.config.model import changed_keys, restart_keys
from daemon.delivery.lanes import LANE_AHEAD
from daemon.delivery.outcomes import LogOutcomes, Outcomes
from daemon.delivery.pipeline import Pipeline
from daemon.delivery.retry import ONCE, WATCH
from daemon.delivery.stalls import stall_bound
from daemon.errors import ConfigError, register_secret
from daemon.logs import configure, get_logger
from daemon.service.notify import Notifier, WatchdogPinger
from daemon.service.retention import Retention
from daemon.states import ExitCode
from daemon.store.claims import Owner
from daemon.store.journal import Journal
from daemon.watch.inboxes import all_inboxes, spool_inbox
from daemon.watch.names import count_waiting
from daemon.watch.settle import Settled, Settler
from daemon.watch.watcher import Watcher

if TYPE_CHECKING:
    from daemon.service.metrics import MetricsServer

#: How long SIGTERM waits for requests in flight before exiting anyway, in seconds.
#: Whatever is cut short stays claimed and journaled, and is resumed by the next start.
STOP_TIMEOUT_SECONDS = 60.0
#: Archived claims stay in the journal this long (for ``status``' last error), in seconds.
JOURNAL_KEEP_SECONDS = 7 * 24 * 3600.0
#: How often archived claims are pruned from the journal, in seconds.
JOURNAL_PRUNE_EVERY_SECONDS = 3600.0
#: How often the main loop looks after the observer, in seconds.
SUPERVISE_SECONDS = 2.0
#: The claim window: at most this many files of one inbox are claimed and not yet finished
#: (or this many per worker, if more); the rest wait in the inbox, unclaimed, and are taken
#: oldest first as the window frees up (see the README's "Start-up and backlogs").
CLAIM_WINDOW_FILES = 256
CLAIM_WINDOW_PER_WORKER = 32
#: Files waiting for room are claimed once this share of the window is free (1/16: 16 or
#: more at a time), not one by one as each file finishes.
CLAIM_REFILL_SHARE = 16
#: All inboxes together hold at most this many windows of claimed files: with more inboxes
#: than that, each one's window is its even share of them (a backlog in a hundred inboxes
#: would otherwise claim a hundred windows, over a kilobyte of memory a file).
CLAIM_WINDOWS_IN_ALL = 16
#: ... but never fewer files than a conversation uploads ahead of its send.
CLAIM_WINDOW_LEAST = LANE_AHEAD
#: For tests only: a claim window of this many files instead (a few files show it at work).
CLAIM_WINDOW_ENV = "SENDSEVEN_WATCH_TEST_CLAIM_WINDOW"


def claim_window(workers: int) -> int:
    """Files of one inbox that may be claimed and not yet finished at once."""
    forced = os.environ.get(CLAIM_WINDOW_ENV)
    if forced:
        return max(1, int(forced))
    return max(CLAIM_WINDOW_FILES, workers * CLAIM_WINDOW_PER_WORKER)


def inbox_window(window: int, inboxes: int) -> int:
    """The claim window of each inbox while ``inboxes`` are watched: the whole ``window``
    while their windows together stay within :data:`CLAIM_WINDOWS_IN_ALL` of it, else an
    even share of that many (at least :data:`CLAIM_WINDOW_LEAST` files)."""
    share = window * CLAIM_WINDOWS_IN_ALL // max(1, inboxes)
    return max(min(window, CLAIM_WINDOW_LEAST), min(window, share))


class _EmitterStopRace(logging.Filter):
    """Drops watchdog's "InotifyEmitter.queue_events() called when the thread is inactive".

    watchdog stops a watch's emitter from the stopping thread: it ends the watch first, and
    an emitter thread still reading an event queued for it (the archive moves of the last
    files, a claim folder removed) then finds it gone and says so at error level. Nothing
    is lost: the daemon stops, and ends the watches on purpose. A clean stop right after
    200 inboxes sent a file each said it some 40 times.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in str(record.msg)


_INOTIFY_LOGGER = "watchdog.observers.inotify"


@dataclass
class ConfigSource:
    """Where the configuration comes from, so that SIGHUP can load it again."""

    path: Path
    env_file: Path | None = None
    log_level: str | None = None

    def load(self, *, check_folders: bool = True) -> Config:
        """The configuration; ``check_folders=False`` for a command that only reads (the
        folders need not be writable)."""
        config = load_config(self.path, env_file=self.env_file, check_folders=check_folders)
        register_secret(config.api.token)
        return config


class _Signals:
    """SIGTERM/SIGINT (stop) and SIGHUP (reload), for the main loop to act on.

    The handlers only set plain attributes. A handler runs in the main thread, between two
    of its bytecodes, at any moment: also while that thread holds a lock (an ``Event``'s,
    inside ``wait`` or ``clear``). A handler that took such a lock (``Event.set``) would
    wait for its own thread forever, and the daemon would never stop. The main loop sleeps
    in ``select`` on the signal wakeup fd instead, which the interpreter writes to as soon
    as a signal arrives.
    """

    def __init__(self) -> None:
        #: The stop signal's name, once one arrived.
        self.name = ""
        self._stop = False
        self._reloads = 0
        self._reloads_seen = 0
        self._wakeup: tuple[socket.socket, socket.socket] | None = None

    @property
    def stop(self) -> bool:
        """SIGTERM or SIGINT arrived."""
        return self._stop

    def install(self) -> None:
        def on_stop(signum: int, _: FrameType | None) -> None:
            self.name = signal.Signals(signum).name
            self._stop = True

        def on_reload(_: int, __: FrameType | None) -> None:
            self._reloads += 1

        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._wakeup = (reader, writer)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_reload)

    def uninstall(self) -> None:
        """Let go of the wakeup fd (the handlers stay: a late SIGTERM is still no crash)."""
        if self._wakeup is not None:
            signal.set_wakeup_fd(-1)
            for sock in self._wakeup:
                sock.close()
            self._wakeup = None

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a signal arrives (or arrived unseen)."""
        if self._stop or self._reloads != self._reloads_seen or self._wakeup is None:
            return
        reader = self._wakeup[0]
        select.select([reader], [], [], seconds)
        with contextlib.suppress(BlockingIOError):
            while reader.recv(512):
                pass

    def take_reload(self) -> bool:
        """True once for any number of SIGHUPs since the last call."""
        reloads = self._reloads
        if reloads == self._reloads_seen:
            return False
        self._reloads_seen = reloads
        return True


class Service:
    """One running daemon (or one ``--once`` pass)."""

    def __init__(self, source: ConfigSource, config: Config, *, once: bool = False) -> None:
        self.source = source
        self.config = config
        self.once = once
        #: Files this run could not claim (claim_failed): `run --once` then exits 1.
        self.claim_failures = 0
        self.log = get_logger()
        self.outcomes = Outcomes()
        self.journal = Journal(config.state_dir)
        self.owner = Owner()
        self.pipeline = Pipeline(
            config, self.journal, self.owner, policy=ONCE if once else WATCH, outcomes=self.outcomes
        )
        #: Fixed at start, as ``workers`` is.
        self.claim_window = claim_window(config.workers)
        self.settler = Settler.per_inbox(
            self._take,
            max_write_pause=config.max_write_pause,
            room=self._room,
            refill=self._refill,
        )
        self.pipeline.on_finished(self.settler.room_freed)
        self.watcher = Watcher(
            config.observer,
            config.spool,
            all_inboxes(config),
            self._offer,
            self._new_folder,
            on_seen=self.settler.seen,
        )
        self.notifier = Notifier()
        self.signals = _Signals()
        self._hooks: list[Callable[[], None]] = []
        self.retention = Retention(
            lambda: self.watcher.inboxes, lambda: self.config.sent_retention_days
        )
        self.add_hook(self.retention.tick)
        self.add_hook(self._prune_journal)
        self._journal_pruned_at = 0.0
        self.metrics_server: MetricsServer | None = None
        if config.metrics.listen is not None and not once:
            # Imported only when wanted: prometheus_client costs start-up time.
            from daemon.service.metrics import (  # noqa: PLC0415
                Metrics,
                MetricsServer,
                Probes,
                misconfiguration,
                refusal,
            )

            probes = Probes(
                inboxes=lambda: self.watcher.inboxes,
                waiting=count_waiting,
                in_progress=self.pipeline.counts,
                auth_refused=lambda: refusal(self.pipeline.gate),
                api_misconfigured=lambda: misconfiguration(self.pipeline.gate),
                observer_alive=self.watcher.alive,
                polled_inboxes=self.watcher.polled,
                claim_ages=self.pipeline.claim_ages,
                stall_bound=lambda: stall_bound(self.config.retry),
            )
            metrics = Metrics(self.outcomes, probes)
            self.metrics_server = MetricsServer(metrics, config.metrics.listen)
        # Last: whoever reads a file_sent line finds the file counted already.
        self.outcomes.subscribe(LogOutcomes())

    # -- the parts talk through these ------------------------------------------------

    def _offer(self, inbox: InboxConfig, names: list[str]) -> None:
        self.settler.offer(inbox, names)

    def _window(self) -> int:
        """Each inbox's claim window now (it shrinks with many inboxes: :func:`inbox_window`)."""
        return inbox_window(self.claim_window, self.watcher.count())

    def _room(self, inbox: InboxConfig) -> int:
        """How many more files of ``inbox`` may be claimed now (the claim window)."""
        return self._window() - self.pipeline.claimed(inbox.path)

    def _refill(self, inbox: InboxConfig) -> int:
        """Files of ``inbox`` waiting for room go once this many places are free (the
        settler makes it at least one)."""
        return self._window() // CLAIM_REFILL_SHARE

    def _take(self, batch: list[Settled]) -> None:
        # A file offered before a reload is claimed with the inbox's settings now: its
        # conversation may have changed, or the inbox may be gone from the configuration.
        current = {inbox.path: inbox for inbox in self.watcher.inboxes}
        per_inbox: dict[Path, list[tuple[str, int]]] = {}
        for item in batch:
            if item.inbox.path in current:
                per_inbox.setdefault(item.inbox.path, []).append((item.name, item.mtime_ns))
        for path, files in per_inbox.items():
            inbox = current[path]
            try:
                taken = self.pipeline.take_all(inbox, files)
            except Exception as error:  # noqa: BLE001 - any failure: the files stay, said
                taken = [error] * len(files)
            for (name, _), outcome in zip(files, taken, strict=True):
                if isinstance(outcome, Exception):  # the file stays in its inbox, said
                    self.claim_failures += 1
                    self.log.error("claim_failed", inbox=inbox.name, file=name, error=str(outcome))

    def _new_folder(self, path: Path) -> None:
        """A spool folder that appeared, or an inbox folder made anew: watch it."""
        inbox = spool_inbox(self.config, path) or next(
            (inbox for inbox in self.config.inboxes if inbox.path == path), None
        )
        if inbox is None:
            return
        known = inbox.path in {i.path for i in self.watcher.inboxes}
        # False for a folder watched already; True for a new one, and for an inbox whose
        # folder was deleted and made again (its old watch died with the old folder).
        if not self.watcher.add(inbox):
            return
        self.log.info(
            "inbox_added",
            inbox=inbox.name,
            path=str(inbox.path),
            conversation_id=inbox.conversation_id,
            recreated=known,
        )
        self.pipeline.resume(inbox)
        self.settler.offer(inbox, [entry.name for entry in path.iterdir()])

    # -- running ---------------------------------------------------------------------

    def healthy(self) -> bool:
        """What the systemd watchdog pings on: the daemon works. Refused credentials or a
        deployment mistake are not a reason to be killed: it holds every file until the API
        answers properly (a reload, or the API itself) without losing anything, and
        /healthz says so for monitoring."""
        return self.once or self.watcher.alive()

    def run(self) -> int:
        self.signals.install()
        try:
            return self._run_once() if self.once else self._run_forever()
        finally:
            self.signals.uninstall()
            self.journal.close()
            self.owner.release()

    def _adopt_orphans(self, *, queue: bool) -> None:
        """Take over the claims of dead daemons (another host's, or one killed), said
        per dead owner; ``queue``: queue them too (while running: every rescan)."""
        for inbox in self.watcher.inboxes:
            try:
                adopted = self.owner.adopt(inbox.path)
            except OSError as error:  # e.g. a claim folder we cannot make: the next rescan
                self.log.error("scan_failed", folder=str(inbox.path), error=str(error))
                continue
            for owner_id, claims in adopted.items():
                self.log.info(
                    "claims_adopted", from_owner=owner_id, inbox=inbox.name, count=len(claims)
                )
            if queue and adopted:
                self.pipeline.resume(inbox, [c for claims in adopted.values() for c in claims])

    def _start_common(self) -> None:
        # Unfinished claims are queued before any worker starts, so that the oldest of
        # them, not whichever was found first, goes out first.
        self._adopt_orphans(queue=False)
        for inbox in self.watcher.inboxes:
            self.pipeline.resume(inbox)
        self.pipeline.start()
        self.settler.start()

    def _run_once(self) -> int:
        self.retention.tick()  # cron-driven `--once` runs prune sent/ too
        self._start_common()
        # The files present now (see the README's `run --once`), watched while any of them
        # is still settling, so that a writer seen still writing one is waited for; files
        # that arrive meanwhile are left for the next run. Files that stand still already
        # need no watch (its events would be our own claims).
        self.watcher.scan()
        self.settler.only_known()
        watched = False
        while not self.signals.stop:
            if self.pipeline.auth_refused is not None or self.pipeline.misconfigured is not None:
                break
            settled = self.settler.pending() == 0
            if settled:
                self.watcher.stop()  # nothing left to watch for (a second stop is harmless)
            elif not watched and self.settler.settling():
                watched = True
                self.watcher.start()
            if self._once_over(settled=settled):
                break
            if not settled:
                self.signals.wait(0.05)
        if self.signals.stop:  # as in watch mode: what is in flight still finishes
            self.log.info("daemon_stopping", signal=self.signals.name or None)
        self._shutdown()
        if self.pipeline.auth_refused is not None:
            return ExitCode.AUTH
        if self.pipeline.misconfigured is not None:
            return ExitCode.USAGE  # a deployment mistake: the files stay claimed for the next run
        if self.pipeline.broken:
            return ExitCode.FAILURE  # left claimed after a file_error: the next run goes on
        if self.claim_failures:
            return ExitCode.FAILURE  # files this run could not take stay for the next one
        if self.signals.stop and self._unfinished():
            # Files cut short stay claimed (or in the inbox) for the next run; but this
            # run did not process everything present, and a caller must not read "done".
            return ExitCode.FAILURE
        return ExitCode.OK

    def _once_over(self, *, settled: bool) -> bool:
        """``run --once``: every file present was handed over and finished; or what is
        left waits for the next run (a file error left claims that fill their inbox's
        window, so its files still waiting stay in the inbox)."""
        if settled:
            return self.pipeline.wait_idle(timeout=0.2) and self.settler.pending() == 0
        return bool(self.pipeline.broken) and self.pipeline.wait_idle(0.2) and self.settler.stuck()

    def _unfinished(self) -> int:
        """Files claimed and not archived, plus files seen but not yet claimed."""
        return sum(self.pipeline.counts().values()) + self.settler.pending()

    def _run_forever(self) -> int:
        if self.metrics_server is not None:
            self.metrics_server.start()  # first: a port that is taken claims no file
        self._start_common()
        self.watcher.start()
        self.watcher.scan()
        inboxes = self.watcher.inboxes
        self.log.info(
            "daemon_started",
            version=__version__,
            inboxes=[str(i.path) for i in inboxes],
            observer=self.watcher.kind,
        )
        self.notifier.ready(f"watching {len(inboxes)} inboxes")
        self.retention.tick()
        pinger = WatchdogPinger(self.notifier, self.healthy)
        pinger.start()
        next_rescan = time.monotonic() + self.config.rescan_interval
        try:
            while not self.signals.stop:
                self.signals.wait(SUPERVISE_SECONDS)
                if self.signals.take_reload():
                    self.reload()
                if self.signals.stop:
                    break
                self.watcher.supervise()
                for hook in self._hooks:
                    hook()
                if time.monotonic() >= next_rescan:
                    self._adopt_orphans(queue=True)
                    self.watcher.scan()
                    next_rescan = time.monotonic() + self.config.rescan_interval
        finally:
            pinger.stop()
        self.log.info("daemon_stopping", signal=self.signals.name or None)
        self.notifier.stopping("finishing requests in flight")
        self._shutdown()
        return ExitCode.OK

    def _prune_journal(self) -> None:
        """Forget archived claims after JOURNAL_KEEP_SECONDS (hourly; sent/ and failed/
        keep the files, the journal only needs what is unfinished)."""
        now = time.monotonic()
        if now - self._journal_pruned_at < JOURNAL_PRUNE_EVERY_SECONDS:
            return
        self._journal_pruned_at = now
        window = max(
            [self.config.duplicate_window] + [box.duplicate_window for box in self.watcher.inboxes]
        )
        self.journal.prune_sent_hashes(window)
        pruned = self.journal.prune_archived(JOURNAL_KEEP_SECONDS)
        if pruned:
            self.log.info("journal_pruned", claims=pruned)

    def add_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` on every turn of the main loop (retention, metrics)."""
        self._hooks.append(hook)

    def _shutdown(self) -> None:
        quiet = _EmitterStopRace()
        logging.getLogger(_INOTIFY_LOGGER).addFilter(quiet)
        try:
            self.watcher.stop()
        finally:
            logging.getLogger(_INOTIFY_LOGGER).removeFilter(quiet)
        self.settler.stop()
        if not self.pipeline.stop(STOP_TIMEOUT_SECONDS):
            self.log.warning("stop_timeout", seconds=STOP_TIMEOUT_SECONDS)
        if self.metrics_server is not None:
            self.metrics_server.stop()

    def reload(self) -> None:
        """SIGHUP: load the configuration again; keep the old one if the new one is bad."""
        self.notifier.reloading()
        try:
            new = self.source.load()
        except ConfigError as error:
            self.log.error("config_invalid", key=error.key, error=str(error))
            self.notifier.ready("configuration invalid; old one kept")
            return
        old = self.config
        changes = changed_keys(old, new)
        self.config = new
        configure(self.source.log_level or new.log.level, new.log.format)
        self.pipeline.reload(new)
        self.watcher.set_spool(new.spool)
        wanted = {i.path: i for i in all_inboxes(new)}
        self.settler.update_inboxes(wanted.values(), new.max_write_pause)
        for inbox in self.watcher.inboxes:
            if inbox.path not in wanted:
                self.watcher.remove(inbox.path)
        for inbox in wanted.values():
            if self.watcher.add(inbox):  # settings of a known inbox are updated in place
                self.pipeline.resume(inbox)
        self.log.info(
            "config_reloaded", changed=sorted(changes), restart_required=restart_keys(changes)
        )
        self.watcher.scan()
        self.notifier.ready(f"watching {len(self.watcher.inboxes)} inboxes")
