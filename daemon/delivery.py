"""The steps of one claimed file: classify → upload → send → archive.

The one place that turns errors into outcomes and log events. Each step is journaled before
the side effect that depends on it, and a step the journal records as done is never
repeated: an ``uploaded`` file is sent without a new upload, a ``sent`` one is archived
without a new send. Between ``uploaded`` and ``sent`` the file is ``sending``: a send may
have reached the API, so a restart repeats it with the same ``Idempotency-Key`` (the claim
id, fixed at claim time).

The job's :class:`~daemon.journal.Entry` is kept in memory alongside the journal, so the
hot path writes each stage once and never reads it back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.api import ApiClient, Attachment
from daemon.archive import (
    SIDECAR_DRAFT,
    Claim,
    drop_claim_folder,
    move_to_failed,
    move_to_sent,
    place_sidecar_draft,
    utc_now,
)
from daemon.caption import render_caption
from daemon.classify import classify_file, extension_mismatch
from daemon.config import Config, InboxConfig
from daemon.errors import FileChanged, FileRejected, trim
from daemon.journal import Entry, Journal
from daemon.logs import get_logger
from daemon.outcomes import Outcomes
from daemon.retry import Attempts, AuthGate, Backoff, RetryPolicy, Stopped
from daemon.settle import signature

#: Seconds between attempts at a local step that failed (full disk, read-only ``sent/``).
LOCAL_RETRY_SECONDS = 5.0


@dataclass(eq=False)
class Job:
    """One claimed file on its way through the pipeline."""

    claim: Claim
    """Where the file waits."""
    inbox: InboxConfig
    """The inbox it was dropped into."""
    entry: Entry
    """What the journal knows of it (kept in step with the journal)."""
    state: str = "queued"
    """Scheduling state: queued → preparing → ready → sending → done (or failed, parked)."""
    started: float = field(default_factory=time.monotonic)
    """When this run took it on (for ``duration_ms``)."""
    errors: int = 0
    """Unforeseen errors (bugs, odd OS errors) its steps hit in this run."""
    first_error: float | None = None
    """``time.monotonic()`` of the first of them."""
    last_error: str = ""
    """The latest of them, as ``Type: message``."""

    @property
    def order(self) -> tuple[int, str]:
        """Arrival order within the conversation: mtime, then name."""
        return (self.entry.arrived_ns, self.entry.name)


class Delivery:
    """Runs the steps of a job; shared by every worker thread."""

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        journal: Journal,
        outcomes: Outcomes,
        gate: AuthGate,
        stop: threading.Event,
        client: Callable[[], ApiClient],
        once: bool,
    ) -> None:
        self._config = config
        self.journal = journal
        self.outcomes = outcomes
        self.gate = gate
        self.stop = stop
        self._client = client
        self.once = once
        self._log = get_logger()

    def _record(self, job: Job, **changes: Any) -> None:
        """Journal ``changes`` durably, and keep the in-memory entry in step."""
        self.journal.update(job.claim.claim_id, **changes)
        job.entry = dataclasses.replace(job.entry, **changes)

    def _keep_attempts(self, job: Job, attempts: Attempts) -> None:
        """Journal the retry state of ``attempts`` unless the entry already has it."""
        if (job.entry.attempts, job.entry.first_failure) != (
            attempts.count,
            attempts.first_failure,
        ):
            self._record(job, attempts=attempts.count, first_failure=attempts.first_failure)

    def _policy(self, job: Job, attempts: Attempts) -> RetryPolicy:
        """The retry policy for one step of ``job``, journaling ``attempts`` as it goes."""
        retry = self._config().retry

        def on_retry(attempt: int, delay: float, error: Exception) -> None:
            status = getattr(error, "status", None)
            fields: dict[str, Any] = {"status": status} if status else {"error": str(error)}
            # Journaled before it is said: first_failure is the give-up clock, which a
            # restart (even right after this line is logged) must not reset.
            self._record(
                job,
                attempts=attempt,
                first_failure=attempts.first_failure,
                detail=trim(str(error)),
                status=status,
            )
            self._log.warning(
                "retry_scheduled",
                inbox=job.inbox.name,
                file=job.entry.name,
                attempt=attempt,
                delay_s=round(delay, 3),
                **fields,
            )
            self.outcomes.retried(job.inbox)

        return RetryPolicy(
            Backoff(retry.initial_delay, retry.max_delay),
            retry.give_up_after,
            self.gate,
            self.stop,
            once=self.once,
            on_retry=on_retry,
            on_auth_failed=lambda e: self._log.error(
                "auth_failed", status=e.status, detail=e.detail
            ),
            on_auth_ok=lambda: self._log.info("auth_restored"),
            on_clock=lambda: self._keep_attempts(job, attempts),
            raise_file_changed=True,
        )

    # -- the steps -------------------------------------------------------------------

    def prepare(self, job: Job) -> bool:
        """Classify and upload (unless already done). False: the file failed for good."""
        stage = job.entry.stage
        if stage in ("uploaded", "sending", "sent"):
            return True
        if stage == "failed":
            entry = job.entry  # failed before a crash: archive it as it was failed
            self.fail(
                job, FileRejected(entry.reason or "rejected", entry.detail or "", entry.status)
            )
            return False
        try:
            self._upload(job)
        except FileRejected as rejected:
            self.fail(job, rejected)
            return False
        return True

    def _upload(self, job: Job) -> None:
        attempts = Attempts(job.entry.attempts, job.entry.first_failure)
        policy = self._policy(job, attempts)
        try:
            while True:
                content_type = self._classify(job)
                try:
                    attachment = self._upload_as(job, content_type, policy, attempts)
                    break
                except FileChanged:
                    # Someone still holds it open and writes. Not a failed attempt (the
                    # give-up clock is left alone): wait until it stands still, then
                    # classify it again, as its type and size may have changed.
                    self._wait_until_still(job, policy)
        except BaseException:
            self._keep_attempts(job, attempts)  # the sidecar counts the requests made
            raise
        self._record(
            job,
            stage="uploaded",
            size=attachment.size,
            message_type=job.entry.message_type,
            content_type=content_type,
            attachment_id=attachment.id,
            sha256=attachment.sha256,
            attempts=attempts.count,
            first_failure=attempts.first_failure,
        )

    def _classify(self, job: Job) -> str:
        """Classify the claimed file into ``job.entry``; its content type, or
        :class:`FileRejected`."""
        kind = classify_file(job.claim.path)
        job.entry = dataclasses.replace(
            job.entry,
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

    def _upload_as(
        self, job: Job, content_type: str, policy: RetryPolicy, attempts: Attempts
    ) -> Attachment:
        """One upload under ``policy`` (a method: the lambda closes over no loop variable)."""
        return policy.call(
            lambda: self._client().upload(job.claim.path, job.entry.name, content_type),
            attempts,
        )

    def _wait_until_still(self, job: Job, policy: RetryPolicy) -> None:
        """Until the claimed file's size and times stood still for ``settle_seconds`` (at
        least 1 s). A file that vanished waits no more: classifying it will say so."""
        seconds = max(self._config().settle_seconds, 1.0)
        last = None
        while True:
            try:
                now = signature(job.claim.path.lstat())
            except OSError:
                return
            if now == last:
                return
            last = now
            policy.sleep(seconds)

    def send(self, job: Job) -> bool:
        """Send (unless already sent). False: the file failed for good (and is archived)."""
        entry = job.entry
        if entry.stage != "sent":
            if not (entry.attachment_id and entry.message_type):
                raise RuntimeError(f"claim {entry.claim_id} is {entry.stage} without an upload")
            self._record(job, stage="sending")
            attempts = Attempts(entry.attempts, entry.first_failure)
            text = render_caption(
                job.inbox.text,
                name=entry.name,
                message_type=entry.message_type,
                content_type=entry.content_type,
                size=entry.size,
                inbox=job.inbox.name,
            )
            send = self._client
            try:
                message = self._policy(job, attempts).call(
                    lambda: send().send(
                        job.inbox.conversation_id,
                        entry.message_type or "",
                        [entry.attachment_id or ""],
                        text,
                        job.claim.claim_id,
                    ),
                    attempts,
                )
            except FileRejected as rejected:
                self._keep_attempts(job, attempts)
                self.fail(job, rejected)
                return False
            except BaseException:
                self._keep_attempts(job, attempts)
                raise
            self._record(
                job,
                stage="sent",
                message_id=message.id,
                attempts=attempts.count,
                first_failure=attempts.first_failure,
            )
        return True

    def archive_sent(self, job: Job) -> None:
        """Move a sent file into ``sent/`` and say so."""
        target = self._archive(job, lambda: move_to_sent(job.claim))
        self._record(job, stage="archived", archived_as=target)
        entry = job.entry
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
        drop_claim_folder(job.claim)  # last: a crash before it is reported by recover()

    def fail(self, job: Job, rejected: FileRejected) -> None:
        """Archive into ``failed/`` with a sidecar, and say so."""
        self._record(
            job,
            stage="failed",
            reason=rejected.reason,
            detail=rejected.detail,
            status=rejected.status,
            size=job.entry.size,
            message_type=job.entry.message_type,
            content_type=job.entry.content_type,
        )
        entry = job.entry
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
            "sha256": entry.sha256 or _sha256_of(job.claim.path),
            "attempts": entry.attempts,
            "failed_at": utc_now(),
        }
        target = self._archive(job, lambda: move_to_failed(job.claim, sidecar))
        self._record(job, stage="archived", archived_as=target)
        self.outcomes.failed(job.inbox, rejected.reason, entry.message_type)
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
        drop_claim_folder(job.claim)  # last: a crash before it is reported by recover()

    def recover(self, inbox: InboxConfig, claim: Claim, entry: Entry | None) -> None:
        """An empty claim folder: its file was archived by a run that died before it
        journaled and logged the outcome (SPEC §6: every outcome is one log line). Say it
        now, from the journal, with ``recovered: true``; then close the claim."""
        if entry is not None and entry.stage in ("sent", "failed"):
            target = place_sidecar_draft(claim, entry.name) if entry.stage == "failed" else None
            archived_as = target.name if target is not None else None
            self.journal.update(claim.claim_id, stage="archived", archived_as=archived_as)
            fields: dict[str, Any] = {
                "inbox": inbox.name,
                "conversation_id": inbox.conversation_id,
                "file": entry.name,
                "size": entry.size,
                "message_type": entry.message_type,
                "content_type": entry.content_type,
                "attempts": entry.attempts,
                "archived_as": archived_as,
                "recovered": True,
            }
            if entry.stage == "sent":
                self.outcomes.sent(inbox, entry)
                self._log.info(
                    "file_sent",
                    **fields,
                    sha256=entry.sha256,
                    attachment_id=entry.attachment_id,
                    message_id=entry.message_id,
                    duration_ms=None,
                )
            else:
                self.outcomes.failed(inbox, entry.reason or "rejected", entry.message_type)
                self._log.warning(
                    "file_failed",
                    **fields,
                    reason=entry.reason,
                    status=entry.status,
                    detail=entry.detail,
                )
        elif entry is not None and entry.stage != "archived":
            self.journal.update(claim.claim_id, stage="archived")
        with contextlib.suppress(OSError):  # a draft whose file is gone: nothing to put
            (claim.folder / SIDECAR_DRAFT).unlink(missing_ok=True)
        drop_claim_folder(claim)

    def _archive(self, job: Job, step: Callable[[], Path]) -> str | None:
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
                if self.stop.wait(LOCAL_RETRY_SECONDS):
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
