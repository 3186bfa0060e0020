"""What happened to files: the events behind the log lines and the metrics.

The delivery reports every outcome to :class:`Outcomes`, which hands it to each
:class:`OutcomeListener` it holds, in the order they were subscribed: the metrics exporter
is one, :class:`LogOutcomes` (the ``file_sent`` and ``file_failed`` lines) another. A file's
outcome is one value (:class:`SentFile`, :class:`FailedFile`) that carries everything any
listener says of it. A listener runs on the reporting worker's thread, so a listener that
raises is logged (``outcome_listener_failed``) and skipped: counting or logging a file must
never be what stops it from being archived.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.config import InboxConfig
from daemon.logs import get_logger
from daemon.states import Reason
from daemon.store.journal import Entry


@dataclass(frozen=True, slots=True, kw_only=True)
class FileOutcome:
    """What is said of every file that reached ``sent/`` or ``failed/``."""

    inbox: InboxConfig
    """The inbox it was dropped into."""
    entry: Entry
    """What the journal knows of it."""
    size: int | None
    """Its size in bytes (None: not known)."""
    archived_as: str | None
    """Its name in ``sent/`` or ``failed/`` (None: not known, after a crash)."""
    recovered: bool = False
    """True: archived by a run that died before it said so; said now, from the journal."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SentFile(FileOutcome):
    """A file went to ``sent/``."""

    duration_ms: int | None
    """From this run taking it on to its archiving (None: recovered)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedFile(FileOutcome):
    """A file went to ``failed/``."""

    reason: Reason
    """Why (the sidecar's ``reason``)."""
    status: int | None
    """The HTTP status behind it, if any."""
    detail: str | None
    """Human text for it."""


class OutcomeListener(Protocol):
    """Hears every outcome; each method is called on the thread that reports it."""

    def queued(self, inbox: InboxConfig) -> None:
        """A file was claimed (or resumed) and queued."""
        ...

    def sent(self, outcome: SentFile) -> None:
        """A file went to ``sent/``."""
        ...

    def failed(self, outcome: FailedFile) -> None:
        """A file went to ``failed/``."""
        ...

    def retried(self, inbox: InboxConfig) -> None:
        """A retry was scheduled after a transient error."""
        ...

    def request(self, endpoint: str, status: int | None, seconds: float) -> None:
        """One API request finished (``status`` None: no HTTP reply at all)."""
        ...


class Outcomes:
    """Hands every outcome to the listeners it holds (and is itself an
    :class:`OutcomeListener`, so the delivery reports to one object)."""

    def __init__(self, *listeners: OutcomeListener) -> None:
        self._listeners: list[OutcomeListener] = list(listeners)
        self._log = get_logger()

    def subscribe(self, listener: OutcomeListener) -> None:
        self._listeners.append(listener)

    def queued(self, inbox: InboxConfig) -> None:
        self._tell("queued", lambda listener: listener.queued(inbox), inbox=inbox.name)

    def sent(self, outcome: SentFile) -> None:
        self._tell("sent", lambda listener: listener.sent(outcome), inbox=outcome.inbox.name)

    def failed(self, outcome: FailedFile) -> None:
        self._tell("failed", lambda listener: listener.failed(outcome), inbox=outcome.inbox.name)

    def retried(self, inbox: InboxConfig) -> None:
        self._tell("retried", lambda listener: listener.retried(inbox), inbox=inbox.name)

    def request(self, endpoint: str, status: int | None, seconds: float) -> None:
        self._tell(
            "request",
            lambda listener: listener.request(endpoint, status, seconds),
            endpoint=endpoint,
        )

    def _tell(self, outcome: str, call: Callable[[OutcomeListener], None], **where: Any) -> None:
        for listener in self._listeners:
            try:
                call(listener)
            except Exception:  # noqa: BLE001 - see the module docstring
                self._log.exception("outcome_listener_failed", outcome=outcome, **where)


class LogOutcomes:
    """The :class:`OutcomeListener` that says each file's outcome as one log line:
    ``file_sent`` (info) or ``file_failed`` (warning), with ``recovered: true`` when it is
    said from the journal after a crash (the README's Logs table)."""

    def __init__(self) -> None:
        self._log = get_logger()

    def queued(self, inbox: InboxConfig) -> None:
        """Not an outcome line: the claim is logged where it happens."""

    def sent(self, outcome: SentFile) -> None:
        entry = outcome.entry
        self._log.info(
            "file_sent",
            **_common_fields(outcome),
            sha256=entry.sha256,
            attachment_id=entry.attachment_id,
            message_id=entry.message_id,
            duration_ms=outcome.duration_ms,
        )

    def failed(self, outcome: FailedFile) -> None:
        self._log.warning(
            "file_failed",
            **_common_fields(outcome),
            reason=outcome.reason,
            status=outcome.status,
            detail=outcome.detail,
        )

    def retried(self, inbox: InboxConfig) -> None:
        """Not an outcome line: ``retry_scheduled`` said it."""

    def request(self, endpoint: str, status: int | None, seconds: float) -> None:
        """Not a line: requests are counted, not logged."""


def _common_fields(outcome: FileOutcome) -> dict[str, Any]:
    """What file_sent and file_failed both say, besides their own fields."""
    entry = outcome.entry
    fields: dict[str, Any] = {
        "inbox": outcome.inbox.name,
        "conversation_id": outcome.entry.conversation_id,  # routed by name, maybe
        "file": entry.name,
        "size": outcome.size,
        "message_type": entry.message_type,
        "content_type": entry.content_type,
        "attempts": entry.attempts,
        "archived_as": outcome.archived_as,
    }
    if outcome.recovered:
        fields["recovered"] = True
    return fields
