"""What the API answered: typed values for its replies, typed errors for its error replies.

:func:`raise_for_status` is the one place where an HTTP status becomes an error the
delivery acts on (see :mod:`daemon.errors` for the tree).
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from urllib3 import BaseHTTPResponse

from daemon.errors import AuthError, RequestRejected, ServerBusy


@dataclass(frozen=True)
class Attachment:
    """An uploaded file, as the API answered."""

    id: str
    """The attachment id, used in the send."""
    sha256: str
    """The sha256 of the bytes that were streamed (hex)."""
    size: int
    """How many bytes of file content were sent."""


@dataclass(frozen=True)
class Message:
    """A sent message, as the API answered."""

    id: str
    """The message id."""
    status: str | None
    """The API's delivery status (``pending`` right after the send)."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)


def _error_detail(response: BaseHTTPResponse) -> str:
    """The API's own words for an error, falling back to the raw body or the reason."""
    try:
        body: Any = json.loads(response.data)
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            text = body.get(key)
            if isinstance(text, str) and text:
                return text
    text = response.data.decode("utf-8", "replace").strip()
    return text or response.reason or f"HTTP {response.status}"


def raise_for_status(response: BaseHTTPResponse, endpoint: str) -> None:
    """Turn an error reply into the typed error the pipeline acts on."""
    status = response.status
    if status < 400:
        return
    detail = _error_detail(response)
    if status in (401, 403):
        raise AuthError(detail, status=status, endpoint=endpoint)
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise ServerBusy(detail, status=status, endpoint=endpoint, retry_after=retry_after)
    raise RequestRejected(detail, status=status, endpoint=endpoint)
