"""The closed sets of words the daemon uses: journal stages, job states, failure reasons,
exit codes.

Each is a :class:`~enum.StrEnum` (an :class:`~enum.IntEnum` for exit codes) whose values are
the words written to the journal, sidecars and log lines, so those stay compatible while the
code can no longer misspell one: mypy checks every use.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Stage(StrEnum):
    """A claimed file's stage in the journal (the ``stage`` column), in order::

    claimed ──► uploaded(attachment_id) ──► sending ──► sent(message_id) ──► archived
        └──────────────┴──────────────────────┴──► failed(reason) ─────────► archived
    """

    CLAIMED = "claimed"
    """Taken out of the inbox; nothing sent yet."""
    UPLOADED = "uploaded"
    """The API holds the attachment (``attachment_id``); no message yet."""
    SENDING = "sending"
    """The send may have reached the API: a restart repeats it with the same key."""
    SENT = "sent"
    """The API accepted the message (``message_id``); the file still has to be archived."""
    FAILED = "failed"
    """The file failed for good (``reason``); it still has to be archived."""
    ARCHIVED = "archived"
    """In ``sent/`` or ``failed/``, outcome logged: nothing left to do."""


class JobState(StrEnum):
    """Where a claimed file is in this run's scheduling (in memory only)."""

    QUEUED = "queued"
    """Waiting for a worker."""
    PREPARING = "preparing"
    """A worker classifies and uploads it."""
    READY = "ready"
    """Uploaded; waiting for its turn to be sent (order within the conversation)."""
    SENDING = "sending"
    """The conversation's driver sends it."""
    ARCHIVING = "archiving"
    """Sent; waiting to be moved to ``sent/``."""
    DONE = "done"
    """Archived and reported."""
    FAILED = "failed"
    """Failed for good and archived into ``failed/``."""
    PARKED = "parked"
    """Left claimed: stopping, credentials refused, or an unexpected error to retry later."""


class Reason(StrEnum):
    """Why a file went to ``failed/`` (the sidecar's and ``file_failed``'s ``reason``)."""

    UNSUPPORTED_TYPE = "unsupported_type"
    """Not a type the API takes (decided locally, or the API's 415)."""
    TOO_LARGE = "too_large"
    """Over the limit of its type (decided locally, or the API's 413)."""
    EMPTY_FILE = "empty_file"
    """Zero bytes."""
    UNREADABLE = "unreadable"
    """The file cannot be read (permissions, I/O error)."""
    CONVERSATION_NOT_FOUND = "conversation_not_found"
    """The API's 404 for the conversation."""
    REJECTED = "rejected"
    """Any other 4xx but 401/403/429 (the sidecar's ``status`` holds it)."""
    RETRIES_EXHAUSTED = "retries_exhausted"
    """Transient errors (or unexpected ones) for longer than ``retry.give_up_after``."""
    UNCONFIRMED = "unconfirmed"
    """The send was retried for ``retry.give_up_after`` without a usable reply, so the
    message may exist: ``requeue`` sends it again with the same Idempotency-Key (the
    sidecar's ``idempotency_key``), never a new one."""
    CHANGED_AFTER_SEND = "changed_after_send"
    """The file changed after it was sent: the message may carry a partial file (the
    sidecar's ``message_id`` and ``size_sent``); ``requeue`` sends the complete file."""
    DUPLICATE = "duplicate"
    """The same bytes were sent to the same conversation within ``duplicate_window`` (the
    sidecar's ``duplicate_of`` names the earlier message, file and time); ``requeue``
    sends it anyway."""
    NO_ROUTE = "no_route"
    """``route`` named no conversation for the file (its ``conversation_id`` group
    captured nothing) and its inbox has none of its own."""


class ExitCode(IntEnum):
    """What a command's exit status means."""

    OK = 0
    """Success (``run --once``: every file ended in ``sent/`` or ``failed/``)."""
    FAILURE = 1
    """Anything else: work left for the next run, a command that could not do its job."""
    USAGE = 2
    """Invalid configuration or usage: one line on stderr names the key or file."""
    AUTH = 3
    """``run --once`` stopped because the API refused the credentials (files kept)."""
