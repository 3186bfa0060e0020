"""What happened to files: the events behind the metrics.

The pipeline reports every outcome here; listeners (the metrics exporter) subscribe. A
listener runs on the reporting worker's thread, so a listener that raises is logged and
skipped: counting a file must never be what stops it from being archived.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.config import InboxConfig
from daemon.logs import get_logger
from daemon.store.journal import Entry

#: (what, inbox, fields): what is queued, sent (``entry``), failed (``reason``,
#: ``message_type``) or retried.
Listener = Callable[[str, InboxConfig, dict[str, Any]], None]
#: (endpoint, status or None, seconds) for every API request.
RequestListener = Callable[[str, int | None, float], None]


class Outcomes:
    """Hands every outcome (queued, sent, failed, retried, API request) to its listeners."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._request_listeners: list[RequestListener] = []
        self._log = get_logger()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, what: str, inbox: InboxConfig, **fields: Any) -> None:
        for listener in self._listeners:
            try:
                listener(what, inbox, fields)
            except Exception:  # noqa: BLE001 - see the module docstring
                self._log.exception("outcome_listener_failed", outcome=what, inbox=inbox.name)

    def queued(self, inbox: InboxConfig) -> None:
        self._emit("queued", inbox)

    def sent(self, inbox: InboxConfig, entry: Entry) -> None:
        self._emit("sent", inbox, entry=entry)

    def failed(self, inbox: InboxConfig, reason: str, message_type: str | None = None) -> None:
        self._emit("failed", inbox, reason=reason, message_type=message_type)

    def retried(self, inbox: InboxConfig) -> None:
        self._emit("retried", inbox)

    def request(self, endpoint: str, status: int | None, seconds: float) -> None:
        """One API request finished (``status`` None: no HTTP reply at all)."""
        for listener in self._request_listeners:
            try:
                listener(endpoint, status, seconds)
            except Exception:  # noqa: BLE001 - see the module docstring
                self._log.exception("outcome_listener_failed", endpoint=endpoint)

    def subscribe_requests(self, listener: RequestListener) -> None:
        self._request_listeners.append(listener)
