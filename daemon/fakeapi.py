"""A local SendSeven-compatible API server with fault knobs.

Used by the tests, by ``sendseven-watch fake-api`` and ``demo``, and by the benchmark. It
speaks the two endpoints the daemon uses (``POST /attachments``, ``POST /messages``) the way
SendSeven documents them, records what it received, and misbehaves on request: latency, 5xx,
dropped connections, 429 with ``Retry-After``, a lost reply after accepting a message,
refused tokens.

Standard library only. Uploads are parsed while they stream in (:mod:`daemon.multipart`),
so a 95 MB benchmark upload costs a read buffer, not 95 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

from daemon.multipart import Body, ClientLeftError, FramingError, read_file_part

API_PREFIX = "/api/v1"
MB = 1024 * 1024

#: SPEC §4 as the upstream API enforces it. Kept apart from ``classify.py`` on purpose: the
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
#: A silent client (no byte for this long) loses its connection; a backstop, not a feature.
IDLE_TIMEOUT_S = 120.0
#: How long :meth:`FakeApi.stop` waits for each request handler to finish.
STOP_GRACE_S = 5.0
#: A ``force_status`` entry meaning "close the connection without a reply".
DROP = 0
DEFAULT_TOKEN = "test-token"  # noqa: S105 — the fake's well-known test value, not a secret
DEFAULT_TENANT = "test-tenant"
_HEALTH_PATHS = frozenset({f"{API_PREFIX}/health", f"{API_PREFIX}/healthz", "/health", "/healthz"})
_ENDPOINTS = {f"{API_PREFIX}/attachments": "upload", f"{API_PREFIX}/messages": "send"}
_SCOPES = {"upload": "attachments:create", "send": "messages:create"}


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
    seed: int | None = None
    """Seed of the RNG behind the rates, for reproducible runs (applied when set on the API)."""

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_rate", "lose_reply_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("latency_s", "retry_after_s", "rate_limit_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


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


class _Refusal(Exception):
    """An error reply: ``status`` with a JSON body ``{"error", "message"}``."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


class FakeApi:
    """The fake server; ``with FakeApi(...) as api:`` serves on a free loopback port."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        tenant_id: str = DEFAULT_TENANT,
        conversations: Collection[str] | None = None,
        faults: Faults | None = None,
        honour_idempotency: bool = True,
        scopeless_tokens: Collection[str] = (),
        verbose: bool = False,
    ) -> None:
        self._address = (host, port)
        self.tenant_id = tenant_id
        self.honour_idempotency = honour_idempotency
        self.verbose = verbose
        self._conversations = None if conversations is None else frozenset(conversations)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._tokens = frozenset({token})
        self._scopeless = frozenset(scopeless_tokens)
        self._faults = faults or Faults()
        self._rng = random.Random(self._faults.seed)  # noqa: S311 — fault injection, not crypto
        self._api_requests = 0
        self._attachments: dict[str, ReceivedAttachment] = {}
        self._messages: list[ReceivedMessage] = []
        self._replies: dict[str, dict[str, object]] = {}
        self._message_by_key: dict[str, ReceivedMessage] = {}
        self._requests: list[RequestRecord] = []
        self._errors: list[str] = []
        self._handlers: dict[threading.Thread, socket.socket] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._origin = ""

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API base URL, ``http://127.0.0.1:<port>/api/v1`` (known once started)."""
        if not self._origin:
            raise RuntimeError("FakeApi is not started")
        return self._origin + API_PREFIX

    def start(self) -> FakeApi:
        """Bind and serve in a background daemon thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("FakeApi already started")
        self._stopping.clear()
        self._server = _Server(self._address, self)
        host, port = self._server.server_address[:2]
        # A wildcard bind is reached through loopback; an IPv6 literal needs brackets.
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(str(host), str(host))
        self._origin = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.name = f"fakeapi-{port}"
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: close kept-alive connections, cut latency short, join the threads."""
        server, self._server = self._server, None
        if server is None:
            return
        with self._lock:
            self._stopping.set()
            handlers = dict(self._handlers)
        server.shutdown()
        server.server_close()
        for sock in handlers.values():
            # An idle keep-alive connection would otherwise hold its thread in readline().
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in handlers:
            thread.join(STOP_GRACE_S)
        if self._thread is not None:
            self._thread.join(STOP_GRACE_S)

    def __enter__(self) -> FakeApi:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- knobs -----------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The fault knobs; mutate fields in place, or assign a new ``Faults`` (re-seeds)."""
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        with self._lock:
            self._faults = value
            self._rng = random.Random(value.seed)  # noqa: S311 — fault injection, not crypto

    def force(self, *statuses: int) -> None:
        """Answer the next requests with ``statuses`` (``DROP`` closes the connection)."""
        with self._lock:
            self._faults.force_status.extend(statuses)

    def accept_tokens(self, *tokens: str) -> None:
        """Replace the accepted tokens (none: every request is 401)."""
        with self._lock:
            self._tokens = frozenset(tokens)

    # -- what was received -----------------------------------------------------------------

    def attachments(self) -> list[ReceivedAttachment]:
        """Accepted uploads, in arrival order."""
        with self._lock:
            return list(self._attachments.values())

    def messages(self) -> list[ReceivedMessage]:
        """Every ``/messages`` that created or repeated a message, duplicates included."""
        with self._lock:
            return list(self._messages)

    def requests(self) -> list[RequestRecord]:
        """Every request answered or dropped, in the order the replies were decided."""
        with self._lock:
            return list(self._requests)

    def errors(self) -> list[str]:
        """Unexpected exceptions inside the server (a bug in the fake); empty when healthy."""
        with self._lock:
            return list(self._errors)

    def wait_for_messages(self, n: int, timeout: float) -> list[ReceivedMessage]:
        """Wait until ``n`` messages were created (repeats not counted); return those created."""

        def created() -> list[ReceivedMessage]:
            return [m for m in self._messages if not m.duplicate]

        with self._changed:
            self._changed.wait_for(lambda: len(created()) >= n, timeout)
            return created()

    # -- used by the request handler -------------------------------------------------------

    def _register_handler(self, sock: socket.socket) -> None:
        with self._lock:
            self._handlers = {t: s for t, s in self._handlers.items() if t.is_alive()}
            self._handlers[threading.current_thread()] = sock
            if self._stopping.is_set():  # accepted just before stop(): do not let it linger
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    def _pause(self, endpoint: str) -> None:
        faults = self._faults
        delay = faults.upload_latency_s if endpoint == "upload" else faults.send_latency_s
        delay = faults.latency_s if delay is None else delay
        if delay > 0:
            self._stopping.wait(delay)

    def _next_fault(self) -> int | None:
        """The status this request is answered with instead of being processed, if any."""
        with self._lock:
            faults = self._faults
            self._api_requests += 1
            if faults.force_status:
                return faults.force_status.pop(0)
            every = faults.rate_limit_every
            if every and self._api_requests % every == 0:
                return 429
            if faults.drop_rate and self._rng.random() < faults.drop_rate:
                return DROP
            if faults.error_rate and self._rng.random() < faults.error_rate:
                return self._rng.choice((500, 502, 503))
            return None

    def _lose_reply(self) -> bool:
        with self._lock:
            rate = self._faults.lose_reply_rate
            return bool(rate) and self._rng.random() < rate

    def _check_auth(self, authorization: str, tenant: str, endpoint: str) -> None:
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            known = token in self._tokens or token in self._scopeless
            scopeless = token in self._scopeless
        if scheme.lower() != "bearer" or not known:
            raise _Refusal(401, "unauthorized", "Invalid or expired token")
        if tenant != self.tenant_id:
            raise _Refusal(403, "forbidden", "Token is not valid for this tenant")
        if scopeless:
            raise _Refusal(403, "forbidden", f"Missing required scope: {_SCOPES[endpoint]}")

    def _store_attachment(self, attachment: ReceivedAttachment) -> dict[str, object]:
        with self._lock:
            self._attachments[attachment.id] = attachment
        return self._attachment_json(attachment)

    def _attachment_json(self, attachment: ReceivedAttachment) -> dict[str, object]:
        return {
            "id": attachment.id,
            "filename": attachment.filename,
            "content_type": attachment.content_type,
            "file_size": attachment.size,
            "url": f"{self._origin}/files/{attachment.id}?signature=fake",
        }

    def _create_message(self, payload: object, key: str | None) -> dict[str, object]:
        """Validate and create (or repeat) a message; returns the reply body."""
        conversation_id, message_type, attachment_ids, text = _send_fields(payload)
        with self._changed:
            original = self._message_by_key.get(key) if key and self.honour_idempotency else None
            if original is not None:
                self._messages.append(replace(original, duplicate=True))
                self._changed.notify_all()
                return self._replies[original.id]
            unknown = [a for a in attachment_ids if a not in self._attachments]
            if unknown:
                raise _Refusal(400, "bad_request", f"unknown attachment: {', '.join(unknown)}")
            if self._conversations is not None and conversation_id not in self._conversations:
                raise _Refusal(404, "not_found", f"Conversation {conversation_id} not found")
            attachments = tuple(self._attachments[a] for a in attachment_ids)
            for attachment in attachments:
                family = MESSAGE_TYPE_BY_CONTENT_TYPE[attachment.content_type]
                if family != message_type:
                    raise _Refusal(
                        400,
                        "bad_request",
                        f"message_type {message_type} does not match attachment "
                        f"{attachment.id} ({attachment.content_type} is {family})",
                    )
            created_at = datetime.now(UTC).isoformat(timespec="milliseconds")
            message = ReceivedMessage(
                id=f"msg_{uuid.uuid4().hex}",
                conversation_id=conversation_id,
                message_type=message_type,
                text=text,
                attachment_ids=attachment_ids,
                idempotency_key=key,
                created_at=created_at.replace("+00:00", "Z"),
                duplicate=False,
                attachments=attachments,
            )
            self._replies[message.id] = {
                "id": message.id,
                "conversation_id": conversation_id,
                "direction": "outbound",
                "message_type": message_type,
                "text": text,
                "attachments": [self._attachment_json(a) for a in attachments],
                "status": "pending",
                "created_at": message.created_at,
            }
            if key and self.honour_idempotency:
                self._message_by_key[key] = message
            self._messages.append(message)
            self._changed.notify_all()
            return self._replies[message.id]


def _send_fields(payload: object) -> tuple[str, str, tuple[str, ...], str | None]:
    """The checked fields of a ``/messages`` body (400 for anything missing or ill-typed)."""
    if not isinstance(payload, dict):
        raise _Refusal(400, "bad_request", "body must be a JSON object")
    required = ("conversation_id", "message_type", "attachments")
    missing = [name for name in required if name not in payload]
    if missing:
        raise _Refusal(400, "bad_request", f"missing required fields: {', '.join(missing)}")
    conversation_id, message_type = payload["conversation_id"], payload["message_type"]
    attachments, text = payload["attachments"], payload.get("text")
    if not isinstance(conversation_id, str) or not conversation_id:
        raise _Refusal(400, "bad_request", "conversation_id must be a non-empty string")
    if message_type not in ("image", "document", "video", "audio"):
        raise _Refusal(400, "bad_request", "message_type must be image, document, video or audio")
    if not (
        isinstance(attachments, list)
        and attachments
        and all(isinstance(a, str) for a in attachments)
    ):
        raise _Refusal(400, "bad_request", "attachments must be a non-empty list of ids")
    if text is not None and not isinstance(text, str):
        raise _Refusal(400, "bad_request", "text must be a string")
    return conversation_id, message_type, tuple(attachments), text


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: FakeApi) -> None:
        self.api = api
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall on a slow resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exception()
        if isinstance(error, OSError):  # the client left, or stop() closed the socket
            return
        self.api._record_error(repr(error))
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients can reuse connections
    server_version = "FakeSendSeven/1"
    # Headers and body go out in separate writes; with Nagle on, a keep-alive client
    # waits for the delayed ACK (~40 ms) on every reply, as no real API server would.
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        self.api = cast(_Server, self.server).api
        self.api._register_handler(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.api.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815 — names http.server calls

    def _dispatch(self) -> None:
        self._arrived = time.monotonic()
        self._path = self.path.split("?", 1)[0].rstrip("/") or "/"
        self._endpoint = ""
        try:
            self._body = Body.of_request(self.rfile, self.headers)
            try:
                self._route()
            except _Refusal as refusal:
                self._body.drain()  # so the connection can carry the next request
                self._error(refusal.status, refusal.error, refusal.message)
        except FramingError as exc:  # the stream position is lost: reply, then hang up
            self.close_connection = True
            self._error(400, "bad_request", str(exc))
        except ClientLeftError:
            self.close_connection = True
            self._record(0)

    def _route(self) -> None:
        if self._path in _HEALTH_PATHS:
            if self.command != "GET":
                raise _Refusal(405, "method_not_allowed", "use GET")
            self._body.drain()
            self._reply(200, {"status": "ok"}, record=False)
            return
        endpoint = _ENDPOINTS.get(self._path)
        if endpoint is None:
            raise _Refusal(404, "not_found", f"no such endpoint: {self._path}")
        if self.command != "POST":
            raise _Refusal(405, "method_not_allowed", "use POST")
        self._endpoint = endpoint
        fault = self.api._next_fault()
        if fault == DROP:
            self.api._pause(endpoint)
            self.close_connection = True
            self._record(0)
            return
        if fault is not None:
            words = {429: ("rate_limited", "Too many requests")}
            error, message = words.get(fault, ("server_error", "Injected server failure"))
            raise _Refusal(fault, error, message)
        self.api._check_auth(
            self.headers.get("Authorization", ""), self.headers.get("X-Tenant-ID", ""), endpoint
        )
        if endpoint == "upload":
            self._upload()
        else:
            self._send()

    def _upload(self) -> None:
        content_type = self.headers.get("Content-Type", "")
        envelope = Message()
        envelope["Content-Type"] = content_type
        boundary = envelope.get_boundary()
        if envelope.get_content_type() != "multipart/form-data" or not boundary:
            raise _Refusal(400, "bad_request", "expected multipart/form-data with a boundary")
        try:
            part = read_file_part(self._body, boundary.encode("latin-1"), "file")
        except ValueError as exc:
            raise _Refusal(400, "bad_request", f"malformed multipart body: {exc}") from exc
        if part is None:
            raise _Refusal(400, "bad_request", "missing file part")
        headers = part.headers
        filename = headers.get_filename()
        if not filename:
            raise _Refusal(400, "bad_request", "file part has no filename")
        # RFC 7578 would default a part without Content-Type to text/plain; refusing it
        # instead catches a client that forgot to say what it sends.
        media_type = headers.get_content_type() if "Content-Type" in headers else ""
        message_type = MESSAGE_TYPE_BY_CONTENT_TYPE.get(media_type)
        if message_type is None:
            shown = media_type or "(none)"
            raise _Refusal(415, "unsupported_media_type", f"File type {shown} is not allowed")
        limit = LIMIT_BYTES_BY_MESSAGE_TYPE.get(message_type, DOCUMENT_LIMIT_BYTES)
        if part.size > limit:
            raise _Refusal(
                413, "payload_too_large", f"File exceeds the {limit // MB} MB {message_type} limit"
            )
        attachment = ReceivedAttachment(
            id=f"att_{uuid.uuid4().hex}",
            filename=filename,
            content_type=media_type,
            size=part.size,
            sha256=part.sha256,
            head=part.head,
            headers=self._masked_headers(),
        )
        self._reply(201, self.api._store_attachment(attachment))

    def _send(self) -> None:
        raw = self._body.read_all(MAX_JSON_BODY_BYTES)
        if raw is None:
            raise _Refusal(413, "payload_too_large", "message body too large")
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise _Refusal(400, "bad_request", f"body is not JSON: {exc}") from exc
        reply = self.api._create_message(payload, self.headers.get("Idempotency-Key"))
        if self.api._lose_reply():
            self._error(502, "bad_gateway", "Upstream failed after accepting the message")
        else:
            self._reply(201, reply)

    def _masked_headers(self) -> dict[str, str]:
        headers = {name.lower(): value for name, value in self.headers.items()}
        if "authorization" in headers:
            bearer = headers["authorization"].lower().startswith("bearer ")
            headers["authorization"] = "Bearer ***" if bearer else "***"
        return headers

    def _record(self, status: int) -> None:
        host, port = self.client_address[:2]
        self.api._record(
            RequestRecord(
                self.command,
                self._path,
                status,
                self._masked_headers(),
                self._arrived,
                f"{host}:{port}",
            )
        )

    def _error(self, status: int, error: str, message: str) -> None:
        retry = {"Retry-After": f"{self.api.faults.retry_after_s:g}"} if status == 429 else {}
        allow = {"Allow": "GET" if self._path in _HEALTH_PATHS else "POST"} if status == 405 else {}
        self._reply(status, {"error": error, "message": message}, {**retry, **allow})

    def _reply(
        self,
        status: int,
        payload: dict[str, object],
        headers: dict[str, str] | None = None,
        *,
        record: bool = True,
    ) -> None:
        if self._endpoint:
            self.api._pause(self._endpoint)
        data = json.dumps(payload).encode()
        # Recorded before the reply is written, so a client that sees the reply sees the record.
        if record:
            self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


# -- command line ----------------------------------------------------------------------------


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _non_negative(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text} is negative")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fake-api`` options to ``parser`` (for :func:`run_from_args`)."""
    env = os.environ
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_non_negative(int), default=8765, help="0: any free port")
    parser.add_argument(
        "--token",
        default=env.get("SENDSEVEN_API_TOKEN") or DEFAULT_TOKEN,
        help=f"accepted token (default: $SENDSEVEN_API_TOKEN, else {DEFAULT_TOKEN})",
    )
    parser.add_argument(
        "--tenant-id",
        default=env.get("SENDSEVEN_TENANT_ID") or DEFAULT_TENANT,
        help=f"required X-Tenant-ID (default: $SENDSEVEN_TENANT_ID, else {DEFAULT_TENANT})",
    )
    parser.add_argument(
        "--conversation",
        action="append",
        dest="conversations",
        metavar="ID",
        help="a conversation that exists (repeatable; default: every id exists)",
    )
    parser.add_argument("--latency", type=_non_negative(float), default=0.0, metavar="S")
    parser.add_argument("--error-rate", type=_rate, default=0.0, metavar="F", help="share of 5xx")
    parser.add_argument("--drop-rate", type=_rate, default=0.0, metavar="F")
    parser.add_argument("--lose-reply-rate", type=_rate, default=0.0, metavar="F")
    parser.add_argument("--rate-limit-every", type=_non_negative(int), default=0, metavar="N")
    parser.add_argument("--retry-after", type=_non_negative(float), default=1.0, metavar="S")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-idempotency", action="store_true", help="ignore Idempotency-Key")
    parser.add_argument("--verbose", action="store_true", help="access log on stderr")


def run_from_args(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM with the options of :func:`add_arguments`; returns 0."""
    faults = Faults(
        latency_s=args.latency,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        lose_reply_rate=args.lose_reply_rate,
        rate_limit_every=args.rate_limit_every,
        retry_after_s=args.retry_after,
        seed=args.seed,
    )
    api = FakeApi(
        host=args.host,
        port=args.port,
        token=args.token,
        tenant_id=args.tenant_id,
        conversations=args.conversations,
        faults=faults,
        honour_idempotency=not args.no_idempotency,
        verbose=args.verbose,
    )
    try:
        api.start()
    except OSError as exc:
        print(f"fake-api: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    try:
        with _stop_on_signals(stop):
            print(f"fake SendSeven API listening on {api.url}", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        api.stop()
    return 0


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signals can only be caught in the main thread; the caller stops us
        return
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m daemon.fakeapi [options]``: the same as ``sendseven-watch fake-api``."""
    parser = argparse.ArgumentParser(
        prog="sendseven-watch fake-api", description="A local SendSeven-compatible API."
    )
    add_arguments(parser)
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="accepted like every command's; the server logs only with --verbose",
    )
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
