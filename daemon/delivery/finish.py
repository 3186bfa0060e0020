"""The last step of a file: archive it into ``sent/`` or ``failed/``, journal it, say so.

Each outcome is reported once (:class:`~daemon.delivery.outcomes.Outcomes`: the metrics,
and the ``file_sent``/``file_failed`` log line), after the file is archived and the journal
says so, and only then is the claim folder dropped: a run killed in between leaves an empty
claim folder, and :meth:`Finisher.recover` in the next run reports the outcome from the
journal. Archiving is retried until it works (a full disk, a read-only ``sent/``): a file
is never dropped. The daemon's finisher does not wait for that itself (``defer``): it
raises :class:`ArchiveDeferred`, and the pipeline's archiver tries again later, so that one
inbox that cannot archive holds up nobody else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.config import InboxConfig
from daemon.delivery.job import Job, record
from daemon.delivery.outcomes import FailedFile, Outcomes, SentFile
from daemon.errors import FileRejected, Stopped
from daemon.logs import get_logger
from daemon.media.table import LIMITS
from daemon.states import Reason, Stage
from daemon.store.archive import (
    SIDECAR_DRAFT,
    archived_name,
    move_to_failed,
    move_to_sent,
    place_sidecar_draft,
    utc_now,
)
from daemon.store.claims import Claim, drop_claim_folder
from daemon.store.journal import Entry, Journal, SentBefore
from daemon.watch.names import signature

#: Seconds between attempts at a local step that failed (full disk, read-only ``sent/``).
LOCAL_RETRY_SECONDS = 5.0


class DuplicateFile(FileRejected):
    """Identical bytes went to the same conversation within ``duplicate_window``."""

    def __init__(self, earlier: SentBefore) -> None:
        self.earlier = earlier
        super().__init__(
            Reason.DUPLICATE,
            f"the same bytes were sent to this conversation at {utc_iso(earlier.sent_at)}"
            f" as {earlier.name!r} (message {earlier.message_id}); requeue sends it anyway",
        )


def utc_iso(epoch: float) -> str:
    """``epoch`` as ISO 8601 UTC with a ``Z``."""
    when = datetime.fromtimestamp(epoch, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Closing:
    """A file archived (or found vanished) whose archiving is not journaled and reported
    yet: :meth:`Finisher.close` does that, for several files in one commit."""

    job: Job
    archived_as: str | None
    """Its path below ``sent/`` or ``failed/``; None: it vanished (``file_vanished``)."""
    rejected: FileRejected | None = None
    """Why it failed; None: it was sent."""
    size: int | None = None
    """A failed file's size, as its outcome says it."""
    duration_ms: int | None = None
    """A sent file's time from its claim to its archiving."""


class ArchiveDeferred(Exception):
    """Archiving failed (``archive_failed`` said so); call :attr:`again` later to archive
    the file, and :meth:`Finisher.close` what it returns. Raised only by a finisher made
    with ``defer=True``; never leaves the delivery."""

    def __init__(self, again: Callable[[], Closing], error: OSError, retry_in: float) -> None:
        super().__init__(str(error))
        self.again = again
        self.error = error
        self.retry_in = retry_in


class Finisher:
    """Archives finished files and reports them; shared by every worker thread."""

    def __init__(
        self, journal: Journal, outcomes: Outcomes, stop: threading.Event, *, defer: bool = False
    ) -> None:
        self.journal = journal
        self.outcomes = outcomes
        self.stop = stop
        #: True: a failed archiving raises :class:`ArchiveDeferred` instead of waiting.
        self.defer = defer
        self._log = get_logger()
        #: Claim id -> archived name (None: vanished) of files archived whose move is not
        #: journaled yet: see :meth:`_archive`.
        self._archived: dict[str, str | None] = {}
        #: (conversation id, sha256) -> (claim id, what was sent) of files whose reply
        #: came and whose ``sent`` is not journaled yet: the duplicate check sees them.
        self._replied: dict[tuple[str, str], tuple[str, SentBefore]] = {}
        self._mutex = threading.Lock()

    def replied(
        self, job: Job, message_id: str, attempts: int, first_failure: float | None
    ) -> None:
        """The API accepted ``job``'s send: note it in memory, for :meth:`sent` to journal
        before the move. Until then a crash leaves it ``sending``, and the next run sends it
        again under the same Idempotency-Key (one message); the duplicate check of the files
        after it sees it here meanwhile (:meth:`replied_before`)."""
        changes: dict[str, Any] = {
            "stage": Stage.SENT,
            "message_id": message_id,
            "attempts": attempts,
            "first_failure": first_failure,
        }
        entry = job.entry
        if entry.sha256 is not None:
            earlier = SentBefore(message_id, entry.name, time.time())
            with self._mutex:
                self._replied[(entry.conversation_id, entry.sha256)] = (job.claim.claim_id, earlier)
        job.unjournaled = changes
        job.progressed = time.monotonic()
        job.entry = entry.changed(**changes)

    def replied_before(self, conversation_id: str, sha256: str, claim_id: str) -> SentBefore | None:
        """A file of ``conversation_id`` with these bytes, other than ``claim_id``, whose
        reply came and whose ``sent`` is not journaled yet (the latest one)."""
        with self._mutex:
            found = self._replied.get((conversation_id, sha256))
        if found is None or found[0] == claim_id:
            return None
        return found[1]

    def journal_replies(self, jobs: list[Job]) -> None:
        """Journal what the replies of ``jobs``' sends changed, in one commit, durably; then
        the memory of them for the duplicate check is the journal's (``sent_hashes``). The
        archiver does so for the files it takes together, before it archives any of them;
        should the journal refuse, each file's :meth:`archive_sent` tries its own again,
        and its error is handled there."""
        waiting = [(job, job.unjournaled) for job in jobs if job.unjournaled is not None]
        if not waiting:
            return
        self.journal.update_each([(job.claim.claim_id, changes) for job, changes in waiting])
        now = time.monotonic()
        for job, _ in waiting:
            # Its changes are in its entry already (replied()): only forget them.
            job.unjournaled = None
            job.progressed = now
            sha256 = job.entry.sha256
            if sha256 is not None:
                key = (job.entry.conversation_id, sha256)
                with self._mutex:
                    if self._replied.get(key, ("",))[0] == job.claim.claim_id:
                        del self._replied[key]

    def sent(self, job: Job) -> None:
        """Journal a sent file ``sent``, then move it into ``sent/`` and say so; or, when it
        was written after its upload, into ``failed/`` (``changed_after_send``): the
        message may carry a part."""
        self.close([self.archive_sent(job)])

    def archive_sent(self, job: Job) -> Closing:
        """:meth:`sent` up to the move, with the rest for :meth:`close`."""
        self.journal_replies([job])
        st = lstat_or_none(job.claim.path)  # one look for both questions below
        if changed_since_upload(job, st):
            return self._changed_after_send(job)
        target = self._archive(
            job,
            lambda: move_to_sent(job.claim, job.inbox.archive_layout),
            lambda: self.archive_sent(job),
            looked=st,
        )
        return Closing(job, target, duration_ms=round((time.monotonic() - job.started) * 1000))

    def _changed_after_send(self, job: Job) -> Closing:
        entry = job.entry
        size_now = _size_of(job.claim.path)
        self._log.error(
            "changed_after_send",
            inbox=job.inbox.name,
            conversation_id=entry.conversation_id,
            file=entry.name,
            message_id=entry.message_id,
            size_sent=entry.size,
            size=size_now,
            detail="written after it was sent: the message may carry a partial file",
        )
        detail = f"written after it was sent ({entry.size} bytes sent, {size_now} now)"
        return self.archive_failed(job, FileRejected(Reason.CHANGED_AFTER_SEND, detail))

    def failed(self, job: Job, rejected: FileRejected) -> None:
        """Archive into ``failed/`` with a sidecar, and say so."""
        self.close([self.archive_failed(job, rejected)])

    def archive_failed(self, job: Job, rejected: FileRejected) -> Closing:
        """:meth:`failed` up to the move, with the rest for :meth:`close`."""
        if (
            rejected.reason == Reason.RETRIES_EXHAUSTED
            and job.entry.stage == Stage.SENDING
            and not job.sending_ahead  # journaled ahead, its request not yet made
        ):
            # Every attempt at the send ended without a usable reply (a timeout, a 5xx, a
            # garbled 201): the API may have recorded the message. Not a file to requeue
            # under a new key: `requeue` sends it again with this one.
            rejected = FileRejected(
                Reason.UNCONFIRMED,
                f"{rejected.detail}; the message may exist: requeue sends it again with the"
                " same Idempotency-Key",
                rejected.status,
            )
        record(
            self.journal,
            job,
            stage=Stage.FAILED,
            reason=rejected.reason,
            detail=rejected.detail,
            status=rejected.status,
            size=job.entry.size,
            message_type=job.entry.message_type,
            content_type=job.entry.content_type,
        )
        entry = job.entry
        size = entry.size if entry.size is not None else _size_of(job.claim.path)
        sidecar: dict[str, object] = {
            "reason": rejected.reason,
            "detail": rejected.detail,
            "status": rejected.status,
            "file": entry.name,
            "conversation_id": entry.conversation_id,
            "message_type": entry.message_type,
            "content_type": entry.content_type,
            "size": size,
            "sha256": entry.sha256 or sha256_of(job.claim.path, size),
            "attempts": entry.attempts,
            "failed_at": utc_now(),
        }
        if rejected.reason == Reason.UNCONFIRMED:
            sidecar["idempotency_key"] = entry.idempotency_key or job.claim.claim_id
            sidecar["attachment_id"] = entry.attachment_id
        if isinstance(rejected, DuplicateFile):
            earlier = rejected.earlier
            sidecar["duplicate_of"] = {
                "message_id": earlier.message_id,
                "file": earlier.name,
                "sent_at": utc_iso(earlier.sent_at),
            }
        if rejected.reason == Reason.CHANGED_AFTER_SEND:
            # What went out, apart from the file as it is now (size, sha256).
            size_now = _size_of(job.claim.path)
            sidecar |= {
                "size": size_now,
                "sha256": sha256_of(job.claim.path, size_now),
                "message_id": entry.message_id,
                "size_sent": entry.size,
                "sha256_sent": entry.sha256,
            }
        target = self._archive(
            job,
            lambda: move_to_failed(job.claim, sidecar, job.inbox.archive_layout),
            lambda: self.archive_failed(job, rejected),
        )
        return Closing(job, target, rejected=rejected, size=size)

    def close(self, closings: list[Closing]) -> None:
        """Journal the files of ``closings`` archived, in one commit, then say each one's
        outcome and close its claim. The archiver closes the files it archived together:
        one thread, it would otherwise wait for a sync per file."""
        changes = [
            (each.job.claim.claim_id, {"stage": Stage.ARCHIVED, "archived_as": each.archived_as})
            for each in closings
        ]
        self.journal.update_each(changes)
        now = time.monotonic()
        for each in closings:
            job = each.job
            entry = job.entry
            job.entry = entry.changed(stage=Stage.ARCHIVED, archived_as=each.archived_as)
            job.progressed = now
            self._forget(job)
            if each.archived_as is not None:  # else file_vanished said it: one line per outcome
                self._report(each, entry)
            drop_claim_folder(job.claim)  # last: a crash before it is reported by recover()

    def _report(self, closing: Closing, entry: Entry) -> None:
        job, rejected = closing.job, closing.rejected
        if rejected is None:
            self.outcomes.sent(
                SentFile(
                    inbox=job.inbox,
                    entry=job.entry,
                    size=entry.size,
                    archived_as=closing.archived_as,
                    duration_ms=closing.duration_ms,
                )
            )
            return
        self.outcomes.failed(
            FailedFile(
                inbox=job.inbox,
                entry=entry,
                size=closing.size,
                archived_as=closing.archived_as,
                reason=rejected.reason,
                status=rejected.status,
                detail=rejected.detail,
            )
        )

    def recover(self, inbox: InboxConfig, claim: Claim, entry: Entry | None) -> None:
        """An empty claim folder: its file was archived by a run that died before it
        journaled and logged the outcome (the README: every outcome is one log line). Say it
        now, from the journal, with ``recovered: true``; then close the claim."""
        if entry is not None and entry.stage in (Stage.SENT, Stage.FAILED):
            target = (
                place_sidecar_draft(claim, entry.name, inbox.archive_layout)
                if entry.stage == Stage.FAILED
                else None
            )
            archived_as = archived_name(claim, target) if target is not None else None
            self.journal.update(claim.claim_id, stage=Stage.ARCHIVED, archived_as=archived_as)
            if entry.stage == Stage.SENT:
                self.outcomes.sent(
                    SentFile(
                        inbox=inbox,
                        entry=entry,
                        size=entry.size,
                        archived_as=archived_as,
                        recovered=True,
                        duration_ms=None,
                    )
                )
            else:
                self.outcomes.failed(
                    FailedFile(
                        inbox=inbox,
                        entry=entry,
                        size=entry.size,
                        archived_as=archived_as,
                        recovered=True,
                        reason=entry.reason or Reason.REJECTED,
                        status=entry.status,
                        detail=entry.detail,
                    )
                )
        elif entry is not None and entry.stage != Stage.ARCHIVED:
            self.journal.update(claim.claim_id, stage=Stage.ARCHIVED)
        with contextlib.suppress(OSError):  # a draft whose file is gone: nothing to put
            (claim.folder / SIDECAR_DRAFT).unlink(missing_ok=True)
        drop_claim_folder(claim)

    def _archive(
        self,
        job: Job,
        step: Callable[[], Path],
        again: Callable[[], Closing],
        *,
        looked: os.stat_result | None = None,
    ) -> str | None:
        """Archive the claimed file; the archived name, or None when it vanished.

        Retried until it works: a full disk or a read-only ``sent/`` keeps the file
        claimed, never drops it (``defer``: :class:`ArchiveDeferred` with ``again``, this
        archiving step, for the caller to retry and then close). A file someone deleted from
        its claim folder (or put something else than a file in its place) is gone: that is
        its outcome, logged once as ``file_vanished`` (with the message id when it was sent
        before it went), and the claim is closed. ``looked``: the claimed file's ``lstat``
        the caller took just now, so that the first try need not look again.

        Done once per claim: when the bookkeeping after it fails (the journal refuses to
        record it) and the file's outcome is tried again, the file is already in
        ``sent/`` or ``failed/``, and what happened to it is kept until it is journaled.
        """
        claim_id = job.claim.claim_id
        with self._mutex:
            if claim_id in self._archived:
                return self._archived[claim_id]
        while True:
            if looked is None:
                looked = lstat_or_none(job.claim.path)
            regular = looked is not None and stat.S_ISREG(looked.st_mode)
            looked = None  # a later try looks afresh
            if not regular:
                entry = job.entry
                self._log.error(
                    "file_vanished",
                    inbox=job.inbox.name,
                    conversation_id=entry.conversation_id,
                    file=entry.name,
                    message_id=entry.message_id,
                )
                return self._remember(claim_id, None)
            try:
                return self._remember(claim_id, archived_name(job.claim, step()))
            except OSError as error:
                self._log.error(
                    "archive_failed",
                    inbox=job.inbox.name,
                    file=job.entry.name,
                    error=str(error),
                    retry_in_s=LOCAL_RETRY_SECONDS,
                )
                if self.defer:
                    raise ArchiveDeferred(again, error, LOCAL_RETRY_SECONDS) from None
                if self.stop.wait(LOCAL_RETRY_SECONDS):
                    raise Stopped from None

    def _remember(self, claim_id: str, archived_as: str | None) -> str | None:
        with self._mutex:
            self._archived[claim_id] = archived_as
        return archived_as

    def _forget(self, job: Job) -> None:
        """The archive move is journaled: nothing to remember of it any more."""
        with self._mutex:
            self._archived.pop(job.claim.claim_id, None)


def changed_since_upload(job: Job, st: os.stat_result | None) -> bool:
    """Whether the claimed file, whose ``lstat`` is ``st`` (None: it is gone, and archiving
    says so: ``file_vanished``), is no longer what was uploaded: its signature moved (or,
    when only the journal's ``size`` is known, after a restart, its size did)."""
    if st is None:
        return False
    now = signature(st)
    if job.uploaded_as is not None:
        if now == job.uploaded_as:
            return False
        # A file with other names (hard links) has its ctime moved by the claim and the
        # archiving of those names too, at any moment: a write to it shows in its size
        # or mtime.
        size, mtime, _, inode = job.uploaded_as
        return st.st_nlink == 1 or (now[0], now[1], now[3]) != (size, mtime, inode)
    return job.entry.size is not None and now[0] != job.entry.size


def sha256_of(path: Path, size: int | None) -> str | None:
    """The file's sha256 for its sidecar; None for a file larger than any the API takes
    (rejected by its size, it is read no further than its type needed: a sparse 100 GB
    file must not cost minutes of reading)."""
    if size is None or size > max(LIMITS.values()):
        return None
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def lstat_or_none(path: Path) -> os.stat_result | None:
    """The ``lstat`` of ``path``; None when it cannot be looked at (gone)."""
    try:
        return path.lstat()
    except OSError:
        return None


def _size_of(path: Path) -> int | None:
    st = lstat_or_none(path)
    return None if st is None else st.st_size
