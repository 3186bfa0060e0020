"""One claimed file on its way through the pipeline, and how its journal entry changes.

A :class:`Job` carries the file's :class:`~daemon.store.journal.Entry` in memory alongside the
journal, so the hot path writes each stage once and never reads it back; :func:`record`
keeps the two in step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from daemon.config import InboxConfig
from daemon.states import JobState
from daemon.store.claims import Claim
from daemon.store.journal import Entry, Journal
from daemon.watch.names import Signature


@dataclass(eq=False)
class Job:
    """One claimed file on its way through the pipeline."""

    claim: Claim
    """Where the file waits."""
    inbox: InboxConfig
    """The inbox it was dropped into."""
    entry: Entry
    """What the journal knows of it (kept in step with the journal)."""
    state: JobState = JobState.QUEUED
    """Scheduling state: queued → preparing → ready → sending → done (or failed, parked)."""
    started: float = field(default_factory=time.monotonic)
    """When this run took it on (for ``duration_ms``)."""
    errors: int = 0
    """Unforeseen errors (bugs, odd OS errors) its steps hit in this run."""
    first_error: float | None = None
    """``time.monotonic()`` of the first of them."""
    last_error: str = ""
    """The latest of them, as ``Type: message``."""
    uploaded_as: Signature | None = None
    """The file's size and times when this run uploaded it: any change after that is
    caught before the send (it starts over) or before archiving (``changed_after_send``)."""
    route_fields: dict[str, str] = field(default_factory=dict)
    """The caption placeholders its inbox's ``route`` took from its name."""
    progressed: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` of its last progress: taken on, a stage done, an attempt
    (:mod:`daemon.delivery.stalls`)."""
    sending_ahead: bool = False
    """Journaled ``sending`` ahead of its turn, with files in front of it: the checks
    before its send (a duplicate just sent, a change since its upload) are still to run."""
    unjournaled: dict[str, Any] | None = None
    """What its send's reply changed in :attr:`entry` (``sent``, the message id), not yet
    journaled: the archiver journals it before it moves the file (:mod:`.finish`)."""

    @property
    def order(self) -> tuple[int, str]:
        """Arrival order within the conversation: mtime, then name."""
        return (self.entry.arrived_ns, self.entry.name)


def record(journal: Journal, job: Job, **changes: Any) -> None:
    """Journal ``changes`` durably, and keep the in-memory entry in step."""
    journal.update(job.claim.claim_id, **changes)
    if "stage" in changes or changes.get("attempts", job.entry.attempts) != job.entry.attempts:
        job.progressed = time.monotonic()
    job.entry = job.entry.changed(**changes)
