"""The steps of one file: classify → upload → send; :mod:`.finish` archives it.

The steps are shared by the daemon and ``send``: each takes an :class:`OutgoingFile`, which
says what the steps need to know of the file (where its bytes are, its name, conversation
and caption), where they write down what they learned of it (:class:`Recorder`: the
journal for a claimed file, nothing for ``send``) and who hears what the retry policy does
to it (:class:`~daemon.delivery.retry.RetryEvents`). :class:`RunContext` is what every file
of a run shares.

For the daemon, :class:`Delivery` runs the steps of a claimed file. With
:mod:`daemon.delivery.finish`, it is the one place that turns errors into outcomes and log
events. Each step is journaled before the side effect that depends on it, and a step the
journal records as done is never repeated: an ``uploaded`` file is sent without a new
upload, a ``sent`` one is archived without a new send. Between ``uploaded`` and ``sent``
the file is ``sending``: a send may have reached the API, so a restart repeats it with the
same ``Idempotency-Key`` (the claim id, fixed at claim time).

The job's :class:`~daemon.store.journal.Entry` is kept in memory alongside the journal
(:mod:`daemon.delivery.job`), so the hot path writes each stage once and never reads it back.

A claimed file is watched until it is archived by its :func:`~daemon.watch.names.signature`
(size, mtime, ctime, inode), taken before the upload and compared after it, before the send
and (in :mod:`.finish`) before archiving. A stat works on every filesystem (a claim folder
on an NFS share sends no events), costs no watch or thread per file in flight, and ctime,
which every write moves and no writer can set back, leaves no write unseen. A change before
the send starts the file over once it stands still again; after the send it is
``changed_after_send``, never a silent ``file_sent``.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from daemon.api.client import ApiClient
from daemon.api.replies import Attachment, Message
from daemon.config import ApiConfig, Config
from daemon.config.caption import render_caption
from daemon.config.model import Duplicates
from daemon.delivery.finish import (
    DuplicateFile,
    Finisher,
    changed_since_upload,
    lstat_or_none,
    sha256_of,
)
from daemon.delivery.job import Job, record
from daemon.delivery.outcomes import Outcomes
from daemon.delivery.retry import (
    SYSTEM_CLOCK,
    WATCH,
    ApiGate,
    Attempts,
    Backoff,
    Clock,
    RetryEvents,
    RetryPolicy,
    RunPolicy,
)
from daemon.errors import (
    ApiMisconfigured,
    AuthError,
    FileChanged,
    FileRejected,
    TransientError,
    trim,
)
from daemon.logs import get_logger
from daemon.media.classify import classify_file, extension_mismatch
from daemon.states import Reason, Stage
from daemon.store.journal import Journal, SentBefore
from daemon.store.requeued import requeued_key
from daemon.watch.names import Signature, signature
from daemon.watch.settle import wait_until_still


def api_client(
    api: ApiConfig, on_request: Callable[[str, int | None, float], None] | None = None
) -> ApiClient:
    """The API client for ``api`` (the daemon's workers and ``send`` alike)."""
    return ApiClient.from_config(api, on_request=on_request)


@dataclass(frozen=True)
class RunContext:
    """What every file of one run shares."""

    config: Callable[[], Config]
    """The configuration now (a reload changes it for the next step)."""
    client: Callable[[], ApiClient]
    """The API client of the calling thread."""
    gate: ApiGate
    """Open while the API can be used (credentials accepted, ``api.url`` right)."""
    stop: threading.Event
    """Set when the run stops: leave the file, it is resumed."""
    policy: RunPolicy = WATCH
    """What to do when a file cannot go on (refused credentials, a deployment mistake)."""
    clock: Clock = SYSTEM_CLOCK
    """Where the retry policy reads the time and waits."""

    def retry_policy(self, events: RetryEvents) -> RetryPolicy:
        """The retry policy for one step of a file, with the retry settings now."""
        retry = self.config().retry
        return RetryPolicy(
            Backoff(retry.initial_delay, retry.max_delay),
            retry.give_up_after,
            self.gate,
            self.stop,
            events,
            run=self.policy,
            clock=self.clock,
        )


class Recorder(Protocol):
    """Where the steps write down what they learned of a file."""

    def note(self, **facts: Any) -> None:
        """In memory: what the file is (size, types), for its sidecar should it fail."""
        ...

    def record(self, **changes: Any) -> None:
        """Durably: a step done (``stage``) and what it produced."""
        ...


class NotRecorded:
    """The :class:`Recorder` of a file nobody keeps a record of (``send``)."""

    def note(self, **facts: Any) -> None:
        """Nothing to remember."""

    def record(self, **changes: Any) -> None:
        """Nothing to journal."""


@dataclass(frozen=True)
class OutgoingFile:
    """One file on its way out: claimed by the daemon, or given to ``send``."""

    path: Path
    """Where its bytes are read (its claim folder, or the path as given)."""
    name: str
    """Its name for the API and the caption."""
    label: str
    """How log lines name it (``file``): its name, or for ``send`` the path as given."""
    conversation_id: str
    """Where it goes."""
    caption: str | None
    """The caption template (None: no caption)."""
    inbox: str
    """The caption's ``{inbox}``: the folder it was dropped into."""
    idempotency_key: str
    """The same for every attempt at sending it."""
    recorder: Recorder
    """Where the steps write down what they learned."""
    events: RetryEvents
    """Who hears what the retry policy does to it."""
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """More caption placeholders: the named groups its inbox's ``route`` matched."""


@dataclass(frozen=True)
class Uploaded:
    """What the send needs of a file the API holds."""

    message_type: str
    content_type: str | None
    size: int | None
    attachment_id: str
    signature: Signature | None = None
    """The file's size and times as uploaded (None: not known, e.g. after a restart)."""


def upload(
    context: RunContext,
    file: OutgoingFile,
    attempts: Attempts,
    *,
    looked: os.stat_result | None = None,
) -> Uploaded:
    """Classify and upload ``file``; :class:`FileRejected` when it can never be sent.
    ``looked``: the file's ``lstat`` taken just now, so that the first try need not look
    again before it starts."""
    policy = context.retry_policy(file.events)
    while True:
        before = signature(looked) if looked is not None else _signature_of(file.path)
        looked = None  # a later try looks afresh
        try:
            message_type, content_type = _classify(file)
        except FileRejected as rejected:
            # Created empty, written later (rsync --inplace, a pausing writer): an empty
            # file is empty_file only once it stayed empty for a quiet period.
            if rejected.reason == Reason.EMPTY_FILE and _changes(context, file, policy):
                continue
            raise
        try:
            attachment = _upload_as(context, file, content_type, policy, attempts)
        except FileChanged:
            attachment = None
        uploaded_as = _signature_of(file.path)
        if (
            attachment is not None
            and uploaded_as is not None
            and uploaded_as == before
            and uploaded_as[0] == attachment.size
        ):
            break  # the bytes uploaded are the file as it is now
        # Someone still holds it open and writes. Not a failed attempt (the give-up
        # clock is left alone): wait until it stands still, then classify it again,
        # as its type and size may have changed.
        file_changed(file, Stage.CLAIMED)
        _wait_until_still(context, file.path, policy)
    file.recorder.record(
        stage=Stage.UPLOADED,
        size=attachment.size,
        message_type=message_type,
        content_type=content_type,
        attachment_id=attachment.id,
        sha256=attachment.sha256,
        attempts=attempts.count,
        first_failure=attempts.first_failure,
    )
    return Uploaded(message_type, content_type, attachment.size, attachment.id, uploaded_as)


def _signature_of(path: Path) -> Signature | None:
    st = lstat_or_none(path)
    return None if st is None else signature(st)


def _sha256_now(path: Path, st: os.stat_result | None) -> str | None:
    """The sha256 of the file at ``path`` (whose ``lstat`` is ``st``) as it is now, for
    the duplicate check before its upload (None: unreadable, or larger than any the API
    takes)."""
    if st is None:
        return None
    return sha256_of(path, st.st_size)


def file_changed(file: OutgoingFile, stage: Stage) -> None:
    """Say that ``file`` changed before its send and starts over."""
    get_logger().warning("file_changed", file=file.label, inbox=file.inbox, stage=stage)


def _changes(context: RunContext, file: OutgoingFile, policy: RetryPolicy) -> bool:
    """Whether ``file`` changes within a quiet period from now (then it starts over)."""
    before = _signature_of(file.path)
    _wait_until_still(context, file.path, policy)
    changed = _signature_of(file.path) != before
    if changed:
        file_changed(file, Stage.CLAIMED)
    return changed


def _classify(file: OutgoingFile) -> tuple[str, str]:
    """What ``file`` is (message and content type), or :class:`FileRejected`; warns when
    its name says another type than its bytes."""
    kind = classify_file(file.path)
    file.recorder.note(
        size=kind.size, message_type=kind.message_type, content_type=kind.content_type
    )
    if kind.reason is not None or kind.message_type is None or kind.content_type is None:
        raise FileRejected(kind.reason or Reason.UNSUPPORTED_TYPE, kind.detail or "")
    mismatch = extension_mismatch(file.name, kind.content_type)
    if mismatch is not None:
        get_logger().warning(
            "extension_mismatch",
            file=file.label,
            extension=mismatch,
            content_type=kind.content_type,
        )
    return kind.message_type, kind.content_type


def _upload_as(
    context: RunContext,
    file: OutgoingFile,
    content_type: str,
    policy: RetryPolicy,
    attempts: Attempts,
) -> Attachment:
    """One upload under ``policy`` (a function: the lambda closes over no loop variable)."""
    return policy.call(
        # A file from a subfolder goes out under its own name, not its relative path.
        lambda: context.client().upload(file.path, file.name.rpartition("/")[2], content_type),
        attempts,
    )


def _wait_until_still(context: RunContext, path: Path, policy: RetryPolicy) -> None:
    """Until the file's size and times stood still for ``settle_seconds`` (at least 1 s).
    A file that vanished waits no more: classifying it will say so."""
    wait_until_still(path, max(context.config().settle_seconds, 1.0), policy.sleep)


def send(
    context: RunContext, file: OutgoingFile, uploaded: Uploaded, attempts: Attempts
) -> Message:
    """Send the uploaded ``file`` as a message; :class:`FileRejected` when it cannot be.

    ``sending`` is recorded before the request; what the reply says (``sent``, the message
    id) is the caller's to record: the daemon journals it off the path to the next send
    (:meth:`Delivery.send`)."""
    file.recorder.record(stage=Stage.SENDING)
    text = render_caption(
        file.caption,
        name=file.name,
        message_type=uploaded.message_type,
        content_type=uploaded.content_type,
        size=uploaded.size,
        inbox=file.inbox,
        fields=file.fields,
    )
    client = context.client
    return context.retry_policy(file.events).call(
        lambda: client().send(
            file.conversation_id,
            uploaded.message_type,
            [uploaded.attachment_id],
            text,
            file.idempotency_key,
        ),
        attempts,
    )


# -- the daemon: claimed, journaled files ---------------------------------------------


class JournaledFile:
    """A claimed file's journal, as the steps and the retry policy see it: a
    :class:`Recorder` and the :class:`~daemon.delivery.retry.RetryEvents` of the daemon
    (journaled, logged and counted)."""

    def __init__(self, job: Job, journal: Journal, outcomes: Outcomes) -> None:
        self.job = job
        self._journal = journal
        self._outcomes = outcomes
        self._log = get_logger()

    def note(self, **facts: Any) -> None:
        self.job.entry = self.job.entry.changed(**facts)

    def record(self, **changes: Any) -> None:
        if changes == {"stage": Stage.SENDING} and self.job.entry.stage == Stage.SENDING:
            return  # journaled ahead of its turn, or by a run before this one
        record(self._journal, self.job, **changes)

    def keep(self, attempts: Attempts) -> None:
        """Journal the retry state of ``attempts`` unless the entry already has it."""
        entry = self.job.entry
        if (entry.attempts, entry.first_failure) != (attempts.count, attempts.first_failure):
            self.record(attempts=attempts.count, first_failure=attempts.first_failure)

    def retry_scheduled(self, attempts: Attempts, delay: float, error: TransientError) -> None:
        job = self.job
        fields: dict[str, Any] = {"status": error.status} if error.status else {"error": str(error)}
        # Journaled before it is said: first_failure is the give-up clock, which a
        # restart (even right after this line is logged) must not reset.
        self.record(
            attempts=attempts.count,
            first_failure=attempts.first_failure,
            detail=trim(str(error)),
            status=error.status,
        )
        self._log.warning(
            "retry_scheduled",
            inbox=job.inbox.name,
            file=job.entry.name,
            attempt=attempts.count,
            delay_s=round(delay, 3),
            **fields,
        )
        self._outcomes.retried(job.inbox)

    def auth_failed(self, error: AuthError) -> None:
        self._log.error("auth_failed", status=error.status, detail=error.detail)

    def auth_restored(self) -> None:
        self._log.info("auth_restored")

    def api_misconfigured(self, error: ApiMisconfigured) -> None:
        self._log.error("api_misconfigured", **error.fields())

    def api_restored(self) -> None:
        self._log.info("api_restored")

    def clock_moved(self, attempts: Attempts) -> None:
        self.keep(attempts)


class Delivery:
    """Runs the steps of a claimed file; shared by every worker thread."""

    def __init__(
        self, context: RunContext, journal: Journal, outcomes: Outcomes, finish: Finisher
    ) -> None:
        self.context = context
        self.journal = journal
        self.outcomes = outcomes
        self.finish = finish

    def _outgoing(self, job: Job) -> tuple[OutgoingFile, JournaledFile]:
        journaled = JournaledFile(job, self.journal, self.outcomes)
        file = OutgoingFile(
            path=job.claim.path,
            name=job.entry.name,
            label=job.entry.name,
            conversation_id=job.entry.conversation_id,
            caption=job.inbox.text,
            inbox=job.inbox.name,
            idempotency_key=job.entry.idempotency_key or job.claim.claim_id,
            recorder=journaled,
            events=journaled,
            fields=job.route_fields,
        )
        return file, journaled

    def prepare(self, job: Job) -> bool:
        """Classify and upload (unless already done). False: the file failed for good."""
        stage = job.entry.stage
        if stage in (Stage.UPLOADED, Stage.SENDING, Stage.SENT):
            return True
        if stage == Stage.ARCHIVED:
            return False  # its outcome was said; what someone left in its claim folder stays
        entry = job.entry
        if stage == Stage.FAILED or entry.reason == Reason.NO_ROUTE:
            # Failed before a crash: archived as it was failed; or not routed when claimed.
            self.finish.failed(
                job, FileRejected(entry.reason or Reason.REJECTED, entry.detail or "", entry.status)
            )
            return False
        # One look at the claimed file for the three questions before its upload: a key
        # left by requeue, its size for the duplicate check, and what it was like before.
        st = lstat_or_none(job.claim.path)
        if (
            job.entry.idempotency_key is None
            and not job.entry.send_anyway
            and (requeued := requeued_key(job.claim.inbox, job.claim.path, st))
        ):
            # Journaled, then forgotten.
            record(
                self.journal,
                job,
                idempotency_key=requeued.key,
                send_anyway=requeued.send_anyway or None,
            )
            requeued.forget()
        file, journaled = self._outgoing(job)
        attempts = Attempts(job.entry.attempts, job.entry.first_failure)
        if self._duplicate(job, lambda: _sha256_now(job.claim.path, st)):
            return False
        try:
            job.uploaded_as = upload(self.context, file, attempts, looked=st).signature
        except FileRejected as rejected:
            journaled.keep(attempts)  # the sidecar counts the requests made
            self.finish.failed(job, rejected)
            return False
        except BaseException:
            journaled.keep(attempts)
            raise
        return True

    def _duplicate(self, job: Job, hashed: Callable[[], str | None]) -> bool:
        """Fail ``job`` as ``duplicate`` when its bytes (``hashed()``, asked only where
        duplicates are skipped: it may read the whole file) were sent to its conversation
        within ``duplicate_window``; a requeued file is sent anyway."""
        if not self.skips_duplicates(job):
            return False
        earlier = self.sent_earlier(job, hashed())
        if earlier is None:
            return False
        self.finish.failed(job, DuplicateFile(earlier))
        return True

    def sent_earlier(self, job: Job, sha256: str | None) -> SentBefore | None:
        """The latest file of ``job``'s conversation with the bytes ``sha256`` sent within
        its inbox's ``duplicate_window``: one whose reply just came (its ``sent`` not yet
        journaled), else one the journal remembers. None where duplicates are sent anyway."""
        if not self.skips_duplicates(job) or sha256 is None:
            return None
        conversation, claim_id = job.entry.conversation_id, job.claim.claim_id
        return self.finish.replied_before(
            conversation, sha256, claim_id
        ) or self.journal.sent_before(
            conversation, sha256, job.inbox.duplicate_window, claim_id=claim_id
        )

    @staticmethod
    def skips_duplicates(job: Job) -> bool:
        """Whether ``job`` is failed as ``duplicate`` when its bytes were sent just before
        (its inbox says ``duplicates: skip``, and it was not requeued to be sent anyway)."""
        return job.inbox.duplicates == Duplicates.SKIP and not job.entry.send_anyway

    def send(self, job: Job) -> bool:
        """Send (unless already sent). False: the file failed for good (and is archived)."""
        entry = job.entry
        if entry.stage == Stage.SENT:
            return True
        if not (entry.attachment_id and entry.message_type):
            raise RuntimeError(f"claim {entry.claim_id} is {entry.stage} without an upload")
        uploaded = Uploaded(entry.message_type, entry.content_type, entry.size, entry.attachment_id)
        # Nothing of it went out yet: uploaded, or journaled `sending` ahead of its turn.
        unsent = entry.stage == Stage.UPLOADED or job.sending_ahead
        if unsent and self._duplicate(job, lambda: entry.sha256):
            return False  # its twin, prepared alongside it, went out first
        file, journaled = self._outgoing(job)
        attempts = Attempts(entry.attempts, entry.first_failure)
        try:
            if unsent and changed_since_upload(job, lstat_or_none(job.claim.path)):
                # Written again after its upload, before its send: what the API holds is
                # not the file. Start over once it stands still (nothing was sent yet).
                file_changed(file, Stage.UPLOADED)
                _wait_until_still(
                    self.context, job.claim.path, self.context.retry_policy(file.events)
                )
                uploaded = upload(self.context, file, attempts)
                job.uploaded_as = uploaded.signature
            job.sending_ahead = False  # from here on, the send may reach the API
            message = send(self.context, file, uploaded, attempts)
        except FileRejected as rejected:
            journaled.keep(attempts)
            self.finish.failed(job, rejected)
            return False
        except BaseException:
            journaled.keep(attempts)
            raise
        # Journaled `sent` by the archiver, before the move: the next send of the
        # conversation need not wait for that commit.
        self.finish.replied(job, message.id, attempts.count, attempts.first_failure)
        return True
