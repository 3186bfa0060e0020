"""The fake SendSeven API's rules and values, without state or HTTP.

How the fake misbehaves when asked (:class:`Faults`, :data:`DROP`), what it accepts (media
types, size limits, the ``/messages`` body) and the error reply it refuses with
(:class:`Refusal`), and the frozen records :class:`daemon.fake.api.FakeApi` keeps of what it
received.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_TOKEN = "test-token"  # noqa: S105 — the fake's well-known test value, not a secret
DEFAULT_TENANT = "test-tenant"

#: Where the API is served by default; a path outside it gets a web server's HTML 404.
API_PREFIX = "/api/v1"
MB = 1024 * 1024

#: The media table as the upstream API enforces it. Kept apart from ``classify.py`` on purpose: the
#: fake plays the other side and must not agree with the daemon by construction.
MESSAGE_TYPE_BY_CONTENT_TYPE: dict[str, str] = {
    **dict.fromkeys(("image/jpeg", "image/png", "image/gif", "image/webp"), "image"),
    **dict.fromkeys(
        (
            "application/pdf",
            "application/msword",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/vnd.ms-excel",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/vnd.ms-powerpoint",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "text/plain",
        ),
        "document",
    ),
    **dict.fromkeys(("video/mp4", "video/3gpp"), "video"),
    **dict.fromkeys(("audio/aac", "audio/mpeg", "audio/ogg", "audio/amr", "audio/opus"), "audio"),
}
LIMIT_BYTES_BY_MESSAGE_TYPE = {"image": 16 * MB, "video": 16 * MB, "audio": 16 * MB}
DOCUMENT_LIMIT_BYTES = 100 * MB

MAX_JSON_BODY_BYTES = 1 * MB

#: What ``Faults.redirect_status`` may be.
REDIRECT_STATUSES = (301, 302, 307, 308)

#: A ``force_status`` entry meaning "close the connection without a reply".
DROP = 0


@dataclass
class Faults:
    """How the fake API misbehaves; change fields while it runs (each read is atomic).

    Faults apply to ``POST /attachments`` and ``POST /messages`` only (never to health
    checks), decided in this order: ``force_status``, ``rate_limit_every``, ``drop_rate``,
    ``error_rate``.
    """

    latency_s: float = 0.0
    """Seconds added before every reply (also before a dropped connection)."""
    upload_latency_s: float | None = None
    """Overrides ``latency_s`` for ``/attachments`` when set."""
    send_latency_s: float | None = None
    """Overrides ``latency_s`` for ``/messages`` when set."""
    error_rate: float = 0.0
    """Fraction of requests answered 500, 502 or 503 without being processed."""
    drop_rate: float = 0.0
    """Fraction of requests whose connection is closed without any reply or processing."""
    rate_limit_every: int = 0
    """Every Nth request is answered 429 (0: never)."""
    retry_after_s: float = 1.0
    """The ``Retry-After`` sent with 429 (fractions are sent as such, to keep tests fast)."""
    lose_reply_rate: float = 0.0
    """Fraction of accepted ``/messages`` (new or repeated): recorded, then answered 502."""
    force_status: list[int] = field(default_factory=list)
    """Statuses for the next requests, first first (``DROP``/0 closes the connection)."""
    force_upload_status: list[int] = field(default_factory=list)
    """Like ``force_status``, for the next ``/attachments`` requests only (taken first)."""
    force_send_status: list[int] = field(default_factory=list)
    """Like ``force_status``, for the next ``/messages`` requests only (taken first)."""
    redirect_to: str | None = None
    """Answer every request with ``redirect_status`` and ``Location: <redirect_to><path>``,
    as a server that sends http:// to https:// does (e.g. ``https://127.0.0.1:8443``)."""
    redirect_status: int = 301
    """The status of those redirects: 301, 302, 307 or 308."""
    html_status: int | None = None
    """Answer every request with this status and an HTML page, as a proxy's 502 page or a
    web server's 404/405 does (never the API's JSON error)."""
    seed: int | None = None
    """Seed of the RNG behind the rates, for reproducible runs (applied when set on the API)."""

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_rate", "lose_reply_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("latency_s", "retry_after_s", "rate_limit_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.redirect_status not in REDIRECT_STATUSES:
            raise ValueError(f"redirect_status must be one of {REDIRECT_STATUSES}")
        if self.html_status is not None and not 400 <= self.html_status <= 599:
            raise ValueError("html_status must be an error status (400-599)")


@dataclass(frozen=True)
class ReceivedAttachment:
    """An upload the fake API accepted (201)."""

    id: str
    """``att_<hex>``, as returned to the client."""
    filename: str
    """The ``file`` part's filename, decoded."""
    content_type: str
    """The part's media type, lower-cased, without parameters."""
    size: int
    """Bytes in the part."""
    sha256: str
    """Hex digest of the part's bytes."""
    head: bytes
    """The first 64 bytes of the part."""
    headers: dict[str, str]
    """The request's headers, names lower-cased, ``Authorization`` masked."""


@dataclass(frozen=True)
class ReceivedMessage:
    """A ``POST /messages`` that created a message or repeated one (idempotency)."""

    id: str
    """``msg_<hex>``; a repeat carries the original's id."""
    conversation_id: str
    message_type: str
    text: str | None
    attachment_ids: tuple[str, ...]
    idempotency_key: str | None
    """The ``Idempotency-Key`` header of the request that created the message."""
    created_at: str
    """ISO 8601 UTC, as in the reply."""
    duplicate: bool
    """True when this request was answered from the idempotency cache."""
    attachments: tuple[ReceivedAttachment, ...]


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request the fake API answered (or dropped); health checks are not recorded."""

    method: str
    path: str
    """The path without the query string."""
    status: int
    """The status sent, or 0 when no reply was sent (dropped on purpose, or the client left)."""
    headers: dict[str, str]
    """Names lower-cased, ``Authorization`` masked as ``Bearer ***``."""
    at: float
    """``time.monotonic()`` when the request line arrived."""
    peer: str
    """The client's ``host:port``: equal for requests on one kept-alive connection."""


class Refusal(Exception):
    """An error reply: ``status`` with a JSON body ``{"error", "message"}``."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def send_fields(payload: object) -> tuple[str, str, tuple[str, ...], str | None]:
    """The checked fields of a ``/messages`` body (400 for anything missing or ill-typed)."""
    if not isinstance(payload, dict):
        raise Refusal(400, "bad_request", "body must be a JSON object")
    required = ("conversation_id", "message_type", "attachments")
    missing = [name for name in required if name not in payload]
    if missing:
        raise Refusal(400, "bad_request", f"missing required fields: {', '.join(missing)}")
    conversation_id, message_type = payload["conversation_id"], payload["message_type"]
    attachments, text = payload["attachments"], payload.get("text")
    if not isinstance(conversation_id, str) or not conversation_id:
        raise Refusal(400, "bad_request", "conversation_id must be a non-empty string")
    if message_type not in ("image", "document", "video", "audio"):
        raise Refusal(400, "bad_request", "message_type must be image, document, video or audio")
    if not (
        isinstance(attachments, list)
        and attachments
        and all(isinstance(a, str) for a in attachments)
    ):
        raise Refusal(400, "bad_request", "attachments must be a non-empty list of ids")
    if text is not None and not isinstance(text, str):
        raise Refusal(400, "bad_request", "text must be a string")
    return conversation_id, message_type, tuple(attachments), text
