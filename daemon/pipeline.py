"""Per-conversation ordered workers: claim → classify → upload → send → archive.

The one place that turns errors into outcomes and log events.

Scheduling. Each conversation has a :class:`Lane`: its claimed files in arrival order.
``workers`` threads take tasks round-robin across lanes; a task is "classify and upload the
next file of this lane". Uploads of one lane may run ahead in parallel, but sends keep the
order: whichever worker finds the lane's head ready becomes the lane's *driver* and sends
files from the head for as long as they are ready. At most ``workers`` files are in flight
(uploading, uploaded and waiting for their turn, or sending) at once. Because a lane's files
are started in order, its head is always in flight before any later file, so a waiting file
never blocks the head: no deadlock, and no worker ever sits waiting for its turn.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.api import ApiClient, FileChanged
from daemon.archive import Claim, Owner, drop_claim_folder, move_to_failed, move_to_sent, utc_now
from daemon.classify import classify_file, extension_mismatch
from daemon.config import Config, InboxConfig, render_text
from daemon.errors import FileRejected, trim
from daemon.journal import Entry, Journal
from daemon.logs import get_logger
from daemon.outcomes import Outcomes
from daemon.retry import Attempts, AuthGate, AuthRefused, Backoff, RetryPolicy, Stopped

#: Seconds between attempts at a local step that failed (full disk, read-only ``sent/``).
LOCAL_RETRY_SECONDS = 5.0


@dataclass(eq=False)
class Job:
    """One claimed file on its way through the pipeline."""

    claim: Claim
    inbox: InboxConfig
    entry: Entry
    state: str = "queued"  # queued → preparing → ready → sending → done
    started: float = field(default_factory=time.monotonic)

    @property
    def order(self) -> tuple[int, str]:
        return (self.entry.arrived_ns, self.entry.name)


@dataclass(eq=False)
class Lane:
    """The claimed files of one conversation, oldest first."""

    conversation_id: str
    jobs: list[Job] = field(default_factory=list)
    in_flight: int = 0
    driving: bool = False

    def next_queued(self) -> Job | None:
        return next((job for job in self.jobs if job.state == "queued"), None)

    def insert(self, job: Job) -> None:
        """Insert in arrival order, but never ahead of a file already started."""
        first_queued = next(
            (i for i, other in enumerate(self.jobs) if other.state == "queued"), len(self.jobs)
        )
        keys = [other.order for other in self.jobs[first_queued:]]
        self.jobs.insert(first_queued + bisect.bisect_right(keys, job.order), job)


class Pipeline:
    """Takes settled files and carries each one to ``sent/`` or ``failed/``."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        owner: Owner,
        *,
        once: bool = False,
        outcomes: Outcomes | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.owner = owner
        self.once = once
        self.outcomes = outcomes or Outcomes()
        self.stop_event = threading.Event()
        self.gate = AuthGate()
        self.auth_refused: AuthRefused | None = None
        self._log = get_logger()
        self._cond = threading.Condition()
        self._lanes: dict[str, Lane] = {}
        self._rr: list[str] = []
        self._in_flight = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._local = threading.local()
        self._generation = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        for n in range(self.config.workers):
            thread = threading.Thread(target=self._work, name=f"worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float) -> bool:
        """Take no new file, let requests in flight finish; True when all workers ended."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def reload(self, config: Config) -> None:
        """Use a new configuration (new token, retry policy) from the next request on."""
        self.config = config
        self._generation += 1
        self.gate.wake()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no file is queued or in flight (or the run stopped)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while any(lane.jobs for lane in self._lanes.values()) and not self._stopping:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else 1.0)
        return True

    def counts(self) -> dict[str, int]:
        """Files claimed and not yet archived, per inbox path."""
        result: dict[str, int] = {}
        with self._cond:
            for lane in self._lanes.values():
                for job in lane.jobs:
                    key = str(job.inbox.path)
                    result[key] = result.get(key, 0) + 1
        return result

    # -- intake ----------------------------------------------------------------------

    def take(self, inbox: InboxConfig, name: str, arrived_ns: int) -> bool:
        """Claim ``inbox/name`` and queue it; False when it was gone (another daemon)."""
        if self._stopping:
            return False
        claim = self.owner.claim(inbox.path, name)
        if claim is None:
            return False
        entry = self.journal.record_claim(
            claim.claim_id, inbox.path, inbox.conversation_id, name, arrived_ns
        )
        self._enqueue(Job(claim, inbox, entry))
        return True

    def resume(self, inbox: InboxConfig) -> int:
        """Queue this inbox's unfinished claims: ours, and those of dead daemons."""
        self.owner.adopt_orphans(inbox.path)
        resumed = 0
        for claim in self.owner.own_claims(inbox.path):
            if any(job.claim.claim_id == claim.claim_id for job in self._jobs()):
                continue
            entry = self.journal.get(claim.claim_id)
            if not claim.name:  # already archived; only the bookkeeping was cut short
                if entry is not None:
                    self.journal.update(claim.claim_id, stage="archived")
                drop_claim_folder(claim)
                continue
            if entry is None or entry.name != claim.name:
                # Claimed but not journaled (crash in between, or another state_dir):
                # nothing was sent for it, and its claim id stays its Idempotency-Key.
                arrived = claim.path.lstat().st_mtime_ns
                entry = self.journal.record_claim(
                    claim.claim_id, inbox.path, inbox.conversation_id, claim.name, arrived
                )
            self._enqueue(Job(claim, inbox, entry))
            resumed += 1
        return resumed

    def _jobs(self) -> Iterator[Job]:
        with self._cond:
            jobs = [job for lane in self._lanes.values() for job in lane.jobs]
        yield from jobs

    def _enqueue(self, job: Job) -> None:
        with self._cond:
            lane = self._lanes.get(job.inbox.conversation_id)
            if lane is None:
                lane = self._lanes[job.inbox.conversation_id] = Lane(job.inbox.conversation_id)
                self._rr.append(lane.conversation_id)
            lane.insert(job)
            self.outcomes.queued(job.inbox)
            self._cond.notify_all()

    # -- scheduling ------------------------------------------------------------------

    def _next_task(self) -> tuple[Lane, Job] | None:
        """Block until a file may be started; None when stopping."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self._in_flight < self.config.workers:
                    picked = self._pick()
                    if picked is not None:
                        lane, job = picked
                        job.state = "preparing"
                        lane.in_flight += 1
                        self._in_flight += 1
                        return picked
                self._cond.wait()

    def _pick(self) -> tuple[Lane, Job] | None:
        busy = [cid for cid in self._rr if self._lanes[cid].next_queued() is not None]
        # One lane may use every worker only while no other lane is waiting.
        cap = self.config.workers if len(busy) <= 1 else max(1, self.config.workers - 1)
        for _ in range(len(self._rr)):
            cid = self._rr.pop(0)
            self._rr.append(cid)
            lane = self._lanes[cid]
            job = lane.next_queued()
            if job is not None and lane.in_flight < cap:
                return lane, job
        return None

    def _work(self) -> None:
        while (task := self._next_task()) is not None:
            lane, job = task
            if self._guarded(lane, job, self._prepare):
                if job.state == "failed":
                    self._finish(lane, job)
                self._drive(lane)

    def _guarded(self, lane: Lane, job: Job, step: Callable[[Job], None]) -> bool:
        """Run one step of a file; False when the file was parked instead."""
        try:
            step(job)
        except Stopped:
            self._park(lane, job)
        except AuthRefused as refused:
            self._refuse(refused)
            self._park(lane, job)
        except Exception:  # noqa: BLE001 - see below
            # A bug or an unforeseen OS error must not kill a worker or lose the file:
            # it stays claimed and is tried again a little later.
            self._log.exception("file_error", inbox=job.inbox.name, file=job.entry.name)
            self._park(lane, job)
            timer = threading.Timer(LOCAL_RETRY_SECONDS, self._unpark, (job,))
            timer.daemon = True
            timer.start()
        else:
            return True
        return False

    def _unpark(self, job: Job) -> None:
        with self._cond:
            if job.state == "parked" and not self._stopping:
                job.state = "queued"
                self._cond.notify_all()

    def _park(self, lane: Lane, job: Job) -> None:
        """Stopping mid-file: the claim stays, journaled, for the next run."""
        with self._cond:
            job.state = "parked"
            lane.in_flight -= 1
            self._in_flight -= 1
            self._cond.notify_all()

    def _refuse(self, refused: AuthRefused) -> None:
        if self.auth_refused is None:
            self.auth_refused = refused
            self._log.error("auth_failed", status=refused.error.status, detail=refused.error.detail)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.stop_event.set()

    def _finish(self, lane: Lane, job: Job) -> None:
        with self._cond:
            job.state = "done"
            lane.in_flight -= 1
            self._in_flight -= 1
            while lane.jobs and lane.jobs[0].state == "done":
                lane.jobs.pop(0)
            self._cond.notify_all()

    def _drive(self, lane: Lane) -> None:
        """Send the lane's head while it is ready; one driver per lane at a time."""
        with self._cond:
            if lane.driving:
                return
            lane.driving = True
        try:
            while True:
                with self._cond:
                    while lane.jobs and lane.jobs[0].state == "done":
                        lane.jobs.pop(0)
                    head = lane.jobs[0] if lane.jobs else None
                    if head is None or head.state != "ready" or self._stopping:
                        lane.driving = False
                        self._cond.notify_all()
                        return
                    head.state = "sending"
                if self._guarded(lane, head, self._deliver):
                    self._finish(lane, head)
        except BaseException:
            with self._cond:
                lane.driving = False
            raise

    # -- the steps of one file -------------------------------------------------------

    def _client(self) -> ApiClient:
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            if getattr(local, "client", None) is not None:
                local.client.close()
            api = self.config.api
            local.client = ApiClient(
                api.url,
                api.token,
                api.tenant_id,
                connect_timeout=api.connect_timeout,
                read_timeout=api.read_timeout,
                on_request=self.outcomes.request,
            )
            local.generation = self._generation
        client: ApiClient = local.client
        return client

    def _policy(self, job: Job) -> RetryPolicy:
        retry = self.config.retry

        def on_retry(attempt: int, delay: float, error: Exception) -> None:
            status = getattr(error, "status", None)
            fields: dict[str, Any] = {"status": status} if status else {"error": str(error)}
            self._log.warning(
                "retry_scheduled",
                inbox=job.inbox.name,
                file=job.entry.name,
                attempt=attempt,
                delay_s=round(delay, 3),
                **fields,
            )
            self.outcomes.retried(job.inbox)
            self.journal.update(
                job.claim.claim_id, attempts=attempt, detail=trim(str(error)), status=status
            )

        return RetryPolicy(
            Backoff(retry.initial_delay, retry.max_delay),
            retry.give_up_after,
            self.gate,
            self.stop_event,
            once=self.once,
            on_retry=on_retry,
            on_auth_failed=lambda e: self._log.error(
                "auth_failed", status=e.status, detail=e.detail
            ),
            on_auth_ok=lambda: self._log.info("auth_restored"),
        )

    def _attempts(self, job: Job) -> Attempts:
        entry = self.journal.get(job.claim.claim_id) or job.entry
        return Attempts(entry.attempts, entry.first_failure)

    def _save_attempts(self, job: Job, attempts: Attempts) -> None:
        self.journal.update(
            job.claim.claim_id, attempts=attempts.count, first_failure=attempts.first_failure
        )

    def _prepare(self, job: Job) -> None:
        """Classify and upload (unless the journal says that is done already)."""
        entry = self.journal.get(job.claim.claim_id) or job.entry
        job.entry = entry
        if entry.stage in ("uploaded", "sending", "sent"):
            self._ready(job)
            return
        if entry.stage == "failed":
            self._fail(job, FileRejected(entry.reason or "unreadable", entry.detail or ""))
            return
        try:
            content_type = self._classify(job)
            attempts = self._attempts(job)
            policy = self._policy(job)
            while True:
                try:
                    attachment = policy.call(
                        lambda: self._client().upload(job.claim.path, job.entry.name, content_type),
                        attempts,
                    )
                    break
                except FileChanged:
                    # Still being written by someone holding it open: wait it out.
                    self._save_attempts(job, attempts)
                    policy.sleep(max(self.config.settle_seconds, 1.0))
            self._save_attempts(job, attempts)
            self.journal.update(
                job.claim.claim_id,
                stage="uploaded",
                attachment_id=attachment.id,
                sha256=attachment.sha256,
                size=attachment.size,
            )
        except FileRejected as rejected:
            self._fail(job, rejected)
            return
        self._ready(job)

    def _classify(self, job: Job) -> str:
        """Classify by the bytes; journal the result; the content type to upload as."""
        kind = classify_file(job.claim.path)
        self.journal.update(
            job.claim.claim_id,
            size=kind.size,
            message_type=kind.message_type,
            content_type=kind.content_type,
        )
        if kind.reason is not None or kind.message_type is None or kind.content_type is None:
            raise FileRejected(kind.reason or "unsupported_type", kind.detail or "")
        mismatch = extension_mismatch(job.entry.name, kind.content_type)
        if mismatch is not None:
            self._log.warning(
                "extension_mismatch",
                file=job.entry.name,
                extension=mismatch,
                content_type=kind.content_type,
            )
        return kind.content_type

    def _ready(self, job: Job) -> None:
        with self._cond:
            job.state = "ready"

    def _deliver(self, job: Job) -> None:
        """Send (unless already sent) and archive into ``sent/``."""
        entry = self.journal.get(job.claim.claim_id) or job.entry
        if entry.stage != "sent":
            if not (entry.attachment_id and entry.message_type):
                raise RuntimeError(
                    f"journal entry {entry.claim_id} is {entry.stage} without upload"
                )
            self.journal.update(job.claim.claim_id, stage="sending")
            attempts = Attempts(entry.attempts, entry.first_failure)
            text = render_caption(
                job.inbox.text,
                name=entry.name,
                message_type=entry.message_type,
                content_type=entry.content_type,
                size=entry.size,
                inbox=job.inbox.name,
            )
            try:
                message = self._policy(job).call(
                    lambda: self._client().send(
                        job.inbox.conversation_id,
                        entry.message_type or "",
                        [entry.attachment_id or ""],
                        text,
                        job.claim.claim_id,
                    ),
                    attempts,
                )
            except FileRejected as rejected:
                self._save_attempts(job, attempts)
                self._fail(job, rejected)
                return
            self._save_attempts(job, attempts)
            self.journal.update(job.claim.claim_id, stage="sent", message_id=message.id)
            entry = self.journal.get(job.claim.claim_id) or entry
        target = self._locally(job, lambda: move_to_sent(job.claim))
        self.journal.update(job.claim.claim_id, stage="archived", archived_as=target)
        self.outcomes.sent(job.inbox, entry)
        self._log.info(
            "file_sent",
            inbox=job.inbox.name,
            conversation_id=job.inbox.conversation_id,
            file=entry.name,
            size=entry.size,
            sha256=entry.sha256,
            message_type=entry.message_type,
            content_type=entry.content_type,
            attachment_id=entry.attachment_id,
            message_id=entry.message_id,
            attempts=entry.attempts,
            duration_ms=round((time.monotonic() - job.started) * 1000),
            archived_as=target,
        )

    def _fail(self, job: Job, rejected: FileRejected) -> None:
        """Archive into ``failed/`` with a sidecar, and say so."""
        self.journal.update(
            job.claim.claim_id,
            stage="failed",
            reason=rejected.reason,
            detail=rejected.detail,
            status=rejected.status,
        )
        entry = self.journal.get(job.claim.claim_id) or job.entry
        sha256 = entry.sha256 or _sha256_of(job.claim.path)
        size = entry.size if entry.size is not None else _size_of(job.claim.path)
        sidecar = {
            "reason": rejected.reason,
            "detail": rejected.detail,
            "status": rejected.status,
            "file": entry.name,
            "conversation_id": job.inbox.conversation_id,
            "message_type": entry.message_type,
            "content_type": entry.content_type,
            "size": size,
            "sha256": sha256,
            "attempts": entry.attempts,
            "failed_at": utc_now(),
        }
        target = self._locally(job, lambda: move_to_failed(job.claim, sidecar))
        self.journal.update(job.claim.claim_id, stage="archived", archived_as=target)
        self.outcomes.failed(job.inbox, rejected.reason)
        self._log.warning(
            "file_failed",
            inbox=job.inbox.name,
            conversation_id=job.inbox.conversation_id,
            file=entry.name,
            size=size,
            message_type=entry.message_type,
            content_type=entry.content_type,
            reason=rejected.reason,
            status=rejected.status,
            detail=rejected.detail,
            attempts=entry.attempts,
            archived_as=target,
        )
        job.state = "failed"

    def _locally(self, job: Job, step: Callable[[], Path]) -> str | None:
        """Archive the claimed file; the archived name, or None when it vanished.

        Retried until it works: a full disk or a read-only ``sent/`` keeps the file
        claimed, never drops it. A file someone deleted from its claim folder is gone:
        that is logged and the claim is closed.
        """
        while True:
            if not job.claim.path.exists() and not job.claim.path.is_symlink():
                self._log.error("file_vanished", inbox=job.inbox.name, file=job.entry.name)
                drop_claim_folder(job.claim)
                return None
            try:
                return step().name
            except OSError as error:
                self._log.error(
                    "archive_failed",
                    inbox=job.inbox.name,
                    file=job.entry.name,
                    error=str(error),
                    retry_in_s=LOCAL_RETRY_SECONDS,
                )
                if self.stop_event.wait(LOCAL_RETRY_SECONDS):
                    raise Stopped from None


def _sha256_of(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _size_of(path: Path) -> int | None:
    with contextlib.suppress(OSError):
        return path.lstat().st_size
    return None


def render_caption(
    template: str | None,
    *,
    name: str,
    message_type: str | None,
    content_type: str | None,
    size: int | None,
    inbox: str,
) -> str | None:
    """The message text for a file from its inbox's caption template (None: no text)."""
    if not template:
        return None
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, ext = name, ""
    now = datetime.now().astimezone()
    return render_text(
        template,
        {
            "filename": name,
            "stem": stem,
            "ext": ext if dot else "",
            "message_type": message_type,
            "content_type": content_type,
            "size": size,
            "inbox": inbox,
            "date": now.strftime("%Y-%m-%d"),
            "time": now.strftime("%H:%M:%S"),
        },
    )
