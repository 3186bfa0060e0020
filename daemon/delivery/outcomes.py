"""What happened to files: the events behind the metrics.

The delivery reports every outcome to :class:`Outcomes`, which hands it to each
:class:`OutcomeListener` it holds (the metrics exporter is one). A listener runs on the
reporting worker's thread, so a listener that raises is logged (``outcome_listener_failed``)
and skipped: counting a file must never be what stops it from being archived.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from daemon.config import InboxConfig
from daemon.logs import get_logger
from daemon.states import Reason
from daemon.store.journal import Entry


class OutcomeListener(Protocol):
    """Hears every outcome; each method is called on the thread that reports it."""

    def queued(self, inbox: InboxConfig) -> None:
        """A file was claimed (or resumed) and queued."""
        ...

    def sent(self, inbox: InboxConfig, entry: Entry) -> None:
        """A file went to ``sent/``; ``entry`` is what the journal knows of it."""
        ...

    def failed(self, inbox: InboxConfig, reason: Reason, message_type: str | None) -> None:
        """A file went to ``failed/`` (``message_type`` None: not classified)."""
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

    def sent(self, inbox: InboxConfig, entry: Entry) -> None:
        self._tell("sent", lambda listener: listener.sent(inbox, entry), inbox=inbox.name)

    def failed(self, inbox: InboxConfig, reason: Reason, message_type: str | None = None) -> None:
        self._tell(
            "failed",
            lambda listener: listener.failed(inbox, reason, message_type),
            inbox=inbox.name,
        )

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
