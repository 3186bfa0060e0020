"""The steps of one claimed file: classify → upload → send; :mod:`.finish` archives it.

With :mod:`daemon.delivery.finish`, the one place that turns errors into outcomes and log events.
Each step is journaled before the side effect that depends on it, and a step the journal
records as done is never repeated: an ``uploaded`` file is sent without a new upload, a
``sent`` one is archived without a new send. Between ``uploaded`` and ``sent`` the file is
``sending``: a send may have reached the API, so a restart repeats it with the same
``Idempotency-Key`` (the claim id, fixed at claim time).

The job's :class:`~daemon.store.journal.Entry` is kept in memory alongside the journal
(:mod:`daemon.delivery.job`), so the hot path writes each stage once and never reads it back.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from daemon.api.client import ApiClient
from daemon.api.replies import Attachment
from daemon.config import Config
from daemon.config.caption import render_caption
from daemon.delivery.finish import Finisher
from daemon.delivery.job import Job, record
from daemon.delivery.outcomes import Outcomes
from daemon.delivery.retry import Attempts, AuthGate, Backoff, RetryPolicy
from daemon.errors import FileChanged, FileRejected, trim
from daemon.logs import get_logger
from daemon.media.classify import classify_file, extension_mismatch
from daemon.states import Reason, Stage
from daemon.store.journal import Journal
from daemon.watch.names import signature


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
        finish: Finisher,
        once: bool,
    ) -> None:
        self._config = config
        self.journal = journal
        self.outcomes = outcomes
        self.gate = gate
        self.stop = stop
        self._client = client
        self.finish = finish
        self.once = once
        self._log = get_logger()

    def _record(self, job: Job, **changes: Any) -> None:
        record(self.journal, job, **changes)

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
        if stage in (Stage.UPLOADED, Stage.SENDING, Stage.SENT):
            return True
        if stage == Stage.FAILED:
            entry = job.entry  # failed before a crash: archive it as it was failed
            self.finish.failed(
                job, FileRejected(entry.reason or Reason.REJECTED, entry.detail or "", entry.status)
            )
            return False
        try:
            self._upload(job)
        except FileRejected as rejected:
            self.finish.failed(job, rejected)
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
            stage=Stage.UPLOADED,
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
            raise FileRejected(kind.reason or Reason.UNSUPPORTED_TYPE, kind.detail or "")
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
        if entry.stage != Stage.SENT:
            if not (entry.attachment_id and entry.message_type):
                raise RuntimeError(f"claim {entry.claim_id} is {entry.stage} without an upload")
            self._record(job, stage=Stage.SENDING)
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
                self.finish.failed(job, rejected)
                return False
            except BaseException:
                self._keep_attempts(job, attempts)
                raise
            self._record(
                job,
                stage=Stage.SENT,
                message_id=message.id,
                attempts=attempts.count,
                first_failure=attempts.first_failure,
            )
        return True
