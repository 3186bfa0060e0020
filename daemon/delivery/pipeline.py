"""Per-conversation ordered workers: claim → classify → upload → send → archive.

This module schedules; :mod:`daemon.delivery.steps` carries out the steps of each file.
Each conversation has a :class:`~daemon.delivery.lanes.Lane`: its claimed files in arrival order.
``workers`` threads take tasks round-robin across lanes; a task is "classify and upload the
next file of this lane". Uploads of one lane may run ahead in parallel, but sends keep the
order: whichever worker finds the lane's head ready becomes the lane's *driver* and sends
files from the head for as long as they are ready. At most ``workers`` files are in flight
(uploading, uploaded and waiting for their turn, or sending) at once. Because a lane's files
are started in order, its head is always in flight before any later file, so a waiting file
never blocks the head: no deadlock, and no worker ever sits waiting for its turn.

A file that is sent (or failed) is done with the network: it no longer counts against
``workers``, only against its own lane, while the one archiver thread moves it into
``sent/`` (or ``failed/``). An archive that fails is tried again later, per file, from a
heap of due times: an inbox whose ``sent/`` cannot be written holds up its own conversation,
never another's. How long each file has gone without progress is :meth:`Pipeline.claim_ages`
(:mod:`daemon.delivery.stalls`).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from daemon.api.client import ApiClient
from daemon.config import Config, InboxConfig
from daemon.delivery.finish import ArchiveDeferred, Closing, Finisher
from daemon.delivery.job import Job
from daemon.delivery.lanes import SENDING_AHEAD, Lane, Lanes
from daemon.delivery.outcomes import LogOutcomes, Outcomes
from daemon.delivery.retry import WATCH, ApiGate, Backoff, RunPolicy
from daemon.delivery.routing import Route, Router
from daemon.delivery.stalls import ClaimAge
from daemon.delivery.steps import Delivery, RunContext, api_client
from daemon.errors import ApiMisconfigured, AuthRefused, FileRejected, Stopped
from daemon.logs import get_logger
from daemon.states import JobState, Reason, Stage
from daemon.store.archive import move_no_overwrite
from daemon.store.claims import Claim, Owner, drop_claim_folder
from daemon.store.journal import Entry, Journal, NewClaim

#: Seconds before a file whose step hit an unforeseen error is first tried again; the
#: wait doubles from there up to ``retry.max_delay``.
RETRY_BROKEN_SECONDS = 5.0
#: Journal stages from which a file that keeps hitting an unforeseen error may be failed:
#: nothing of it can have reached the conversation yet.
_MAY_GIVE_UP = (Stage.CLAIMED, Stage.UPLOADED)
#: After the stop timeout, requests still in flight are cut off; the workers then get this
#: long to leave their files claimed for the next run, in seconds.
ABORT_GRACE_SECONDS = 5.0
#: Files the archiver takes together at most: their replies journaled in one commit, and
#: their archiving in another.
ARCHIVE_BATCH = 64
#: Job states of files waiting for their turn: they progress when their conversation does.
_WAITING_STATES = (JobState.QUEUED, JobState.READY)


@dataclass(frozen=True, order=True)
class _ToArchive:
    """A file for the archiver: when to try, and the finishing step to run."""

    due: float
    seq: int
    lane: Lane = field(compare=False)
    job: Job = field(compare=False)
    step: Callable[[], Closing] = field(compare=False)


class Pipeline:
    """Takes settled files and carries each one to ``sent/`` or ``failed/``."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        owner: Owner,
        *,
        policy: RunPolicy = WATCH,
        outcomes: Outcomes | None = None,
    ) -> None:
        self.config = config
        #: Worker threads, fixed at start (a reload that changes ``workers`` says restart).
        self._workers = config.workers
        self.journal = journal
        self.owner = owner
        self.policy = policy
        self.outcomes = outcomes or Outcomes(LogOutcomes())
        self.stop_event = threading.Event()
        self.gate = ApiGate()
        #: Why the policy stopped the run (``--once``): refused credentials (exit 3) ...
        self.auth_refused: AuthRefused | None = None
        #: ... or a deployment mistake (exit 2). At most one of the two is set.
        self.misconfigured: ApiMisconfigured | None = None
        #: Files left claimed after an unforeseen error, when the policy does not retry
        #: them (``--once``: the run exits 1).
        self.broken = 0
        self._log = get_logger()
        # One lock, two conditions: workers wait for a file they may start (woken one at
        # a time: a wake-up for all of them on every change costs more than the work);
        # `wait_idle` waits for the last file to finish.
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._idle = threading.Condition(lock)
        self._lanes = Lanes()
        self._in_flight = 0
        #: Per inbox folder, its files claimed (or resumed) and not yet finished.
        self._open: dict[Path, int] = {}
        #: Told the inbox folder of every file finished (:meth:`on_finished`).
        self._finished_hooks: list[Callable[[Path], None]] = []
        #: Files done with the network that still wait in a lane (archiving): they hold
        #: no slot of ``workers``.
        self._network_done: set[Job] = set()
        #: Per conversation, when a file of it last finished (``time.monotonic()``).
        self._lane_progress: dict[str, float] = {}
        #: The last time the API was seen holding every file (the gate closed).
        self._held_at = -math.inf
        #: Per claim id, why its archiving failed last.
        self._archive_errors: dict[str, str] = {}
        #: Every worker's API client, to cut requests off when a stop waits no longer.
        self._clients: list[ApiClient] = []
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._local = threading.local()
        #: Files parked after an unexpected error, by when they are tried again: the
        #: waiting workers look at it (one heap, instead of a timer thread per file).
        self._retry_due: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._generation = 0
        # Sent files are moved to sent/ by one archiver thread, off the lane's critical
        # path: the next send of the conversation need not wait for the rename.
        self._to_archive: queue.SimpleQueue[_ToArchive | None] = queue.SimpleQueue()
        self._archiver = threading.Thread(target=self._archive, name="archiver", daemon=True)
        self.finish = Finisher(journal, self.outcomes, self.stop_event, defer=True)
        context = RunContext(
            config=lambda: self.config,
            client=self._client,
            gate=self.gate,
            stop=self.stop_event,
            policy=policy,
        )
        self.delivery = Delivery(context, journal, self.outcomes, self.finish)
        #: Matches names against ``route`` (in a helper process, bounded).
        self.router = Router()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        for n in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._archiver.start()

    def stop(self, timeout: float) -> bool:
        """Take no new file, let requests in flight finish for up to ``timeout`` seconds,
        then cut off those still going (their files stay claimed, resumed by the next
        start); True when all workers ended."""
        self._stop_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            with self._cond:
                clients = list(self._clients)
            for client in clients:
                client.abort()
            deadline = time.monotonic() + ABORT_GRACE_SECONDS
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._to_archive.put(None)  # after the workers: what they sent is archived too
        if self._archiver.is_alive():
            self._archiver.join(max(ABORT_GRACE_SECONDS, deadline - time.monotonic()))
        self.router.close()
        return not any(thread.is_alive() for thread in (*self._threads, self._archiver))

    def _stop_all(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            self._idle.notify_all()
        self.stop_event.set()

    def reload(self, config: Config) -> None:
        """Use a new configuration (new token, URL, CA, retry policy) from the next request
        on; a closed gate probes with it at once."""
        self.config = config
        self._generation += 1
        self.gate.wake()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no file is queued or in flight (or the run stopped)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._stopping and not self._lanes.idle():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining if remaining is not None else 1.0)
        return True

    def counts(self) -> dict[str, int]:
        """Files claimed and not yet archived, per inbox path."""
        result: dict[str, int] = {}
        with self._cond:
            for job in self._lanes.jobs():
                if job.state == JobState.DONE or job.entry.stage == Stage.ARCHIVED:
                    # Archived: already in sent/ or failed/ (and said so, or about to be),
                    # whether or not its worker has yet let go of it.
                    continue
                key = str(job.inbox.path)
                result[key] = result.get(key, 0) + 1
        return result

    def claimed(self, inbox: Path) -> int:
        """Files of ``inbox`` (its folder) claimed or resumed, and not yet finished."""
        with self._cond:
            return self._open.get(inbox, 0)

    def on_finished(self, hook: Callable[[Path], None]) -> None:
        """Call ``hook(inbox folder)`` after each file is finished (on the finishing
        thread: it must be quick and never raise)."""
        self._finished_hooks.append(hook)

    def claim_ages(self) -> dict[str, ClaimAge]:
        """Per inbox path, its claimed file that has gone longest without progress (see
        :mod:`daemon.delivery.stalls`); inboxes with no file claimed are left out."""
        now = time.monotonic()
        if not self.gate.is_open:
            self._held_at = now  # the API holds every file: none of them is stuck
        ages: dict[str, ClaimAge] = {}
        with self._cond:
            for lane in self._lanes:
                jobs = [job for job in lane.jobs if job.state != JobState.DONE]
                lane_progress = max(
                    [self._lane_progress.get(lane.conversation_id, -math.inf)]
                    + [job.progressed for job in jobs]
                )
                for job in jobs:
                    since = max(job.progressed, self._held_at)
                    if job.state in _WAITING_STATES:
                        since = max(since, lane_progress)
                    seconds = max(0.0, now - since)
                    path = str(job.inbox.path)
                    if path not in ages or seconds > ages[path].seconds:
                        ages[path] = ClaimAge(
                            job.inbox.name, path, job.entry.name, seconds, self._why(job)
                        )
        return ages

    def _why(self, job: Job) -> str:
        """Where ``job`` is, and the last error that held it (under the lock)."""
        entry = job.entry
        where = f"{job.state} (journal stage {entry.stage})"
        error = self._archive_errors.get(entry.claim_id)
        if error is not None:
            return f"{where}: archiving failed: {error}"
        error = job.last_error or entry.detail
        return f"{where}: last error: {error}" if error else where

    # -- intake ----------------------------------------------------------------------

    def take(self, inbox: InboxConfig, name: str, arrived_ns: int) -> bool:
        """Claim ``inbox/name`` and queue it; False when it was gone (another daemon)."""
        (taken,) = self.take_all(inbox, [(name, arrived_ns)])
        if isinstance(taken, Exception):
            raise taken
        return taken

    def take_all(
        self, inbox: InboxConfig, files: Sequence[tuple[str, int]]
    ) -> list[bool | Exception]:
        """Claim and queue each of ``files`` (name, arrival time) of ``inbox``; per file,
        True, False when it was gone (another daemon), or the error that left it in its
        inbox. Their renames are made durable together and their claims journaled in one
        commit: one thread claims every file, and each sync of its own (with the workers
        busy, a wait for the interpreter lock too) is a wait for every file behind it."""
        if self._stopping:
            return [False] * len(files)
        try:
            claims = self.owner.claim_all(inbox.path, [name for name, _ in files])
        except OSError as error:
            return [error] * len(files)
        taken: list[bool | Exception] = [
            claim if isinstance(claim, OSError) else claim is not None for claim in claims
        ]
        new: list[tuple[int, Claim, int, Route]] = []
        for index, claim in enumerate(claims):
            if not isinstance(claim, Claim):
                continue
            try:
                route = self.router.route(inbox.route, claim.name)
            except Exception as error:  # noqa: BLE001 - its own file's error, below
                self._give_back(claim, inbox)
                taken[index] = error
                continue
            new.append((index, claim, files[index][1], route))
        try:
            entries: list[Entry | Exception] = [
                *self._record_claims(inbox, [(c, arrived, r) for _, c, arrived, r in new])
            ]
        except Exception:  # noqa: BLE001 - each file on its own, so the error is its own
            entries = []
            for _, claim, arrived, route in new:
                try:
                    entries.extend(self._record_claims(inbox, [(claim, arrived, route)]))
                except Exception as error:  # noqa: BLE001 - said for its file
                    entries.append(error)
        jobs: list[Job] = []
        for (index, claim, _, route), entry in zip(new, entries, strict=True):
            if isinstance(entry, Exception):
                self._give_back(claim, inbox)
                taken[index] = entry
            else:
                jobs.append(Job(claim, inbox, entry, route_fields=route.fields))
        self._enqueue(*jobs)
        return taken

    def _give_back(self, claim: Claim, inbox: InboxConfig) -> None:
        """A claim that could not be journaled goes back to its inbox for a later scan,
        rather than wait unjournaled in its claim folder until a restart (the journal
        refused: a full disk, a locked or foreign database). If even that fails, the
        restart adopts it."""
        with contextlib.suppress(OSError):
            move_no_overwrite(claim.path, inbox.path, claim.name)
            drop_claim_folder(claim)

    def _record_claims(
        self, inbox: InboxConfig, claims: Sequence[tuple[Claim, int, Route]]
    ) -> list[Entry]:
        """Journal new claims, each for its routed conversation (the lane it waits in), in
        one commit; one that cannot be routed is journaled ``no_route`` for its delivery to
        fail."""
        entries = self.journal.record_claims(
            [
                NewClaim(
                    claim.claim_id,
                    inbox.path,
                    route.conversation_id or inbox.conversation_id,
                    claim.name,
                    arrived_ns,
                )
                for claim, arrived_ns, route in claims
            ]
        )
        for index, (claim, _, route) in enumerate(claims):
            entry = entries[index]
            if route.problem is not None and entry.stage == Stage.CLAIMED and entry.reason is None:
                self.journal.update(claim.claim_id, reason=Reason.NO_ROUTE, detail=route.problem)
                entries[index] = entry.changed(reason=Reason.NO_ROUTE, detail=route.problem)
        return entries

    def resume(self, inbox: InboxConfig, adopted: Iterable[Claim] | None = None) -> int:
        """Queue this inbox's unfinished claims: ours, and those of dead daemons; or only
        ``adopted``, claims just taken over from a dead daemon while we run."""
        if adopted is None:
            self.owner.adopt_orphans(inbox.path)
        known = {job.claim.claim_id for job in self._jobs()}
        jobs: list[Job] = []
        for claim in self.owner.own_claims(inbox.path) if adopted is None else adopted:
            if claim.claim_id in known:
                continue
            entry = self.journal.get(claim.claim_id)
            if not claim.name:  # already archived; only the bookkeeping was cut short
                self.finish.recover(inbox, claim, entry)
                continue
            route = self.router.route(inbox.route, claim.name)
            if entry is None or entry.name != claim.name:
                # Claimed but not journaled (crash in between, or another state_dir):
                # nothing was sent for it, and its claim id stays its Idempotency-Key.
                arrived = claim.path.lstat().st_mtime_ns
                (entry,) = self._record_claims(inbox, [(claim, arrived, route)])
            jobs.append(Job(claim, inbox, entry, route_fields=route.fields))
        self._enqueue(*sorted(jobs, key=lambda job: job.order))  # appends: no re-sorting
        return len(jobs)

    def _jobs(self) -> Iterator[Job]:
        with self._cond:
            jobs = self._lanes.jobs()
        yield from jobs

    def _enqueue(self, *jobs: Job) -> None:
        with self._cond:
            for job in jobs:
                self._lanes.of(job.entry.conversation_id).insert(job)
                self._open[job.inbox.path] = self._open.get(job.inbox.path, 0) + 1
                self.outcomes.queued(job.inbox)
            self._cond.notify(len(jobs))

    # -- scheduling ------------------------------------------------------------------

    def _next_task(self) -> tuple[Lane, Job] | None:
        """Block until a file may be started; None when stopping."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                now = time.monotonic()
                while self._retry_due and self._retry_due[0][0] <= now:
                    _, _, due = heapq.heappop(self._retry_due)
                    if due.state == JobState.PARKED:
                        due.state = JobState.QUEUED
                room = self._in_flight < self._workers
                picked = self._lanes.pick(self._workers, room=room)
                if picked is not None:
                    lane, job = picked
                    job.state = JobState.PREPARING
                    job.progressed = now
                    lane.in_flight += 1
                    self._in_flight += 1
                    return picked
                self._cond.wait(self._retry_due[0][0] - now if self._retry_due else None)

    def _work(self) -> None:
        while (task := self._next_task()) is not None:
            lane, job = task
            if self._guarded(lane, job, self._prepare):
                self._drive(lane)

    def _guarded(self, lane: Lane, job: Job, step: Callable[[Job], None]) -> bool:
        """Run one step of a file; False when the file was parked instead."""
        try:
            step(job)
        except ArchiveDeferred as deferred:
            self._defer_archive(lane, job, deferred)  # the step is over: the archiver retries
            return True
        except Stopped:
            self._park(lane, job)
        except (AuthRefused, ApiMisconfigured) as held:  # the policy stops the run
            self._refuse(held)
            self._park(lane, job)
        except Exception as error:  # noqa: BLE001 - see _broken
            self._broken(lane, job, error)
        else:
            return True
        return False

    def _broken(self, lane: Lane, job: Job, error: Exception) -> None:
        """A bug or an unforeseen OS error must not kill a worker or lose the file: it
        stays claimed and is tried again later, with a growing wait; or, when the run's
        policy says so (``--once``), left with the rest of its conversation (to keep the
        order) to the next run."""
        job.errors += 1
        if job.first_error is None:
            job.first_error = time.monotonic()
        job.last_error = f"{type(error).__name__}: {error}"
        fields = {"inbox": job.inbox.name, "file": job.entry.name, "attempt": job.errors}
        if not self.policy.retry_unexpected_errors:
            self._log.exception("file_error", **fields, retry_in_s=None)
            with self._cond:
                lane.stalled = True
                self.broken += 1
            self._park(lane, job)
            return
        retry = self.config.retry
        backoff = Backoff(RETRY_BROKEN_SECONDS, max(RETRY_BROKEN_SECONDS, retry.max_delay))
        delay = backoff.delay(job.errors)
        self._log.exception("file_error", **fields, retry_in_s=round(delay, 3))
        with self._cond:
            heapq.heappush(self._retry_due, (time.monotonic() + delay, next(self._seq), job))
            self._cond.notify_all()  # every waiting worker now waits at most until it is due
        self._park(lane, job)

    def _given_up(self, job: Job) -> FileRejected | None:
        """A file that kept hitting an unforeseen error for ``retry.give_up_after``."""
        if job.first_error is None or job.entry.stage not in _MAY_GIVE_UP:
            return None
        waited = time.monotonic() - job.first_error
        if waited < self.config.retry.give_up_after:
            return None
        return FileRejected(
            Reason.RETRIES_EXHAUSTED,
            f"unexpected error, {job.errors} attempts over {waited:.0f} s: {job.last_error}",
        )

    def _prepare(self, job: Job) -> None:
        given_up = self._given_up(job)
        if given_up is not None:
            self.finish.failed(job, given_up)
            ready = False
        else:
            ready = self.delivery.prepare(job)
        with self._cond:
            job.state = JobState.READY if ready else JobState.FAILED
        if not ready:
            self._finish(self._lanes.of(job.entry.conversation_id), job)

    def _park(self, lane: Lane, job: Job) -> None:
        """Stopping mid-file: the claim stays, journaled, for the next run."""
        with self._cond:
            job.state = JobState.PARKED
            lane.rewind()  # it may have been sent, waiting for the archiver
            self._leave(lane, job)
            self._cond.notify()
            self._idle.notify_all()

    def _leave(self, lane: Lane, job: Job) -> None:
        """``job`` is no longer in flight (under the lock)."""
        lane.in_flight -= 1
        if job in self._network_done:
            self._network_done.discard(job)
        else:
            self._in_flight -= 1

    def _done_with_network(self, job: Job) -> None:
        """``job`` only waits for its archiving now: its slot of ``workers`` is free for
        another file (under the lock)."""
        if job not in self._network_done:
            self._network_done.add(job)
            self._in_flight -= 1
            self._cond.notify()

    def _refuse(self, held: AuthRefused | ApiMisconfigured) -> None:
        """The API refused the credentials, or cannot be used as configured, and the policy
        says stop: said once, however many workers hear it at the same time."""
        with self._cond:
            first = self.auth_refused is None and self.misconfigured is None
            if first:
                if isinstance(held, AuthRefused):
                    self.auth_refused = held
                else:
                    self.misconfigured = held
        if first:
            if isinstance(held, AuthRefused):
                self._log.error("auth_failed", status=held.error.status, detail=held.error.detail)
            else:
                self._log.error("api_misconfigured", **held.fields())
        self._stop_all()

    def _finish(self, lane: Lane, job: Job) -> None:
        with self._cond:
            if job.state != JobState.DONE:
                folder = job.inbox.path
                if self._open.get(folder, 0) > 1:
                    self._open[folder] -= 1
                else:
                    self._open.pop(folder, None)
            job.state = JobState.DONE
            self._leave(lane, job)
            self._lane_progress[lane.conversation_id] = time.monotonic()
            self._archive_errors.pop(job.claim.claim_id, None)
            lane.drop_done()
            self._cond.notify()
            self._idle.notify_all()
        for hook in self._finished_hooks:
            hook(job.inbox.path)

    def _drive(self, lane: Lane) -> None:
        """Send the lane's head while it is ready; one driver per lane at a time. A worker
        that finds the lane driven journals the files waiting for their turn ``sending``
        instead, while the driver's request is in flight."""
        with self._cond:
            driven = lane.driving
            lane.driving = True
        if driven:
            # Should the journal refuse, the driver writes the same before the send, and
            # its error is handled there.
            with contextlib.suppress(Exception):
                self._journal_ahead(lane)
            return
        try:
            while True:
                with self._cond:
                    head = lane.next_to_send()
                    if head is None or head.state != JobState.READY or self._stopping:
                        lane.driving = False
                        return
                    head.state = JobState.SENDING
                    head.progressed = time.monotonic()
                if self._guarded(lane, head, self._send) and head.state == JobState.FAILED:
                    self._finish(lane, head)
        except BaseException:
            with self._cond:
                lane.driving = False
            raise

    def _journal_ahead(self, lane: Lane, head: Job | None = None) -> None:
        """Journal ``sending``, in one commit, for the files of ``lane`` that wait, uploaded,
        for their turn (and its ``head``, which the driver is about to send): each is
        durable before its request, as before, only earlier, so that no commit stands
        between one reply and the next send. Their checks before the send still run at
        their turn (:attr:`Job.sending_ahead`). A file with the same bytes as one in front
        of it, or as one sent before, is left to its turn: a likely duplicate, journaled
        ``sending`` only should it be sent, so that a run killed meanwhile cannot resend it
        unchecked."""
        with lane.ahead:
            with self._cond:
                turn = lane.in_turn()
            chosen: list[Job] = []
            seen: set[str] = set()
            for job in turn:
                sha256 = job.entry.sha256
                if (
                    (job.state == JobState.READY or job is head)
                    and job.entry.stage == Stage.UPLOADED
                    and not job.sending_ahead
                ):
                    if self.delivery.skips_duplicates(job) and (
                        sha256 in seen or self.delivery.sent_earlier(job, sha256) is not None
                    ):
                        break
                    chosen.append(job)
                    if len(chosen) == SENDING_AHEAD:
                        break
                if sha256 is not None:
                    seen.add(sha256)
            if not chosen:
                return
            self.journal.update_many([job.claim.claim_id for job in chosen], stage=Stage.SENDING)
            now = time.monotonic()
            for job in chosen:
                job.entry = job.entry.changed(stage=Stage.SENDING)
                job.sending_ahead = True
                job.progressed = now

    def _send(self, job: Job) -> None:
        with self._cond:
            lane = self._lanes.of(job.entry.conversation_id)
        if job.entry.stage == Stage.UPLOADED and not job.sending_ahead:
            self._journal_ahead(lane, job)
        sent = self.delivery.send(job)
        with self._cond:
            job.state = JobState.ARCHIVING if sent else JobState.FAILED
            if sent:
                self._done_with_network(job)
        if sent:
            self._to_archive.put(_ToArchive(0.0, next(self._seq), lane, job, self._sent_step(job)))

    def _sent_step(self, job: Job) -> Callable[[], Closing]:
        return lambda: self.finish.archive_sent(job)

    def _defer_archive(self, lane: Lane, job: Job, deferred: ArchiveDeferred) -> None:
        """Archiving failed (``archive_failed`` said so): the archiver tries again later;
        the file holds its lane, not a slot of ``workers``."""
        with self._cond:
            job.state = JobState.ARCHIVING
            self._done_with_network(job)
            self._archive_errors[job.claim.claim_id] = str(deferred.error)
            due = time.monotonic() + deferred.retry_in
            self._to_archive.put(_ToArchive(due, next(self._seq), lane, job, deferred.again))

    def _archive(self) -> None:
        """Archive files as they come, each when it is due. One that cannot be archived
        now goes back into the heap for a later try and holds up no other file: one
        thread, never sleeping on one inbox. The files due together are archived together
        (:meth:`_archive_batch`)."""
        due: list[_ToArchive] = []
        stopping = False
        while not stopping:
            wait = max(0.0, due[0].due - time.monotonic()) if due else None
            try:
                item = self._to_archive.get(timeout=wait)
                while item is not None:
                    heapq.heappush(due, item)
                    item = self._to_archive.get_nowait()
                stopping = True  # after what came before it; files not yet due stay claimed
            except queue.Empty:
                pass
            now = time.monotonic()
            while due and due[0].due <= now:
                batch = [heapq.heappop(due)]
                while due and due[0].due <= now and len(batch) < ARCHIVE_BATCH:
                    batch.append(heapq.heappop(due))
                self._archive_batch(batch)

    def _archive_batch(self, batch: list[_ToArchive]) -> None:
        """Archive the files of ``batch``: their replies journaled in one commit, each one
        moved, and their archiving journaled in one commit; then each is reported. Two
        commits for the batch, not two per file: the archiver is one thread, and with the
        workers busy every wait of its own (a sync, a rename) is a wait for the interpreter
        lock too. Should a commit fail, each file is taken on its own again, and the
        error reaches only the files it belongs to."""
        with contextlib.suppress(Exception):  # each file's own step journals it again
            self.finish.journal_replies([item.job for item in batch])
        archived: list[tuple[_ToArchive, Closing]] = []
        for item in batch:
            closing = self._archive_step(item)
            if closing is not None:
                archived.append((item, closing))
        if len(archived) > 1:
            try:
                self.finish.close([closing for _, closing in archived])
            except Exception:  # noqa: BLE001, S110 - each file on its own, below
                pass
            else:
                for item, _ in archived:
                    self._finish(item.lane, item.job)
                return
        for item, closing in archived:
            self._archive_step(item, functools.partial(self.finish.close, [closing]))

    def _archive_step(
        self, item: _ToArchive, step: Callable[[], object] | None = None
    ) -> Closing | None:
        """Run one file's archiving ``step`` (its own by default); what it returned, or None
        when it failed (then the file is retried later, or parked) or when closing it (a
        ``step`` given) finished the file."""
        lane, job = item.lane, item.job
        try:
            done = (step or item.step)()
        except ArchiveDeferred as deferred:
            self._defer_archive(lane, job, deferred)
        except Stopped:
            self._park(lane, job)
        except Exception as error:  # noqa: BLE001 - see _broken
            self._broken(lane, job, error)
        else:
            if isinstance(done, Closing):
                return done
            self._finish(lane, job)
        return None

    # -- the steps of one file -------------------------------------------------------

    def _client(self) -> ApiClient:
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            if getattr(local, "client", None) is not None:
                local.client.close()
                with self._cond:
                    self._clients.remove(local.client)
            local.client = api_client(self.config.api, on_request=self.outcomes.request)
            local.generation = self._generation
            with self._cond:
                self._clients.append(local.client)
        client: ApiClient = local.client
        return client
