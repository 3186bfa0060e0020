"""A local SendSeven-compatible API server with fault knobs.

Used by the tests, by ``sendseven-watch fake-api`` and ``demo``, and by the benchmark. It
speaks the two endpoints the daemon uses (``POST /attachments``, ``POST /messages``) the way
SendSeven documents them, records what it received, and misbehaves on request: latency, 5xx,
dropped connections, 429 with ``Retry-After``, a lost reply after accepting a message,
refused tokens; and like the mistakes of a deployment (a redirect, a proxy's HTML error page,
a path outside the API's prefix, HTTPS with a certificate the client does not trust).

Standard library only. Uploads are parsed while they stream in (:mod:`daemon.fake.multipart`),
so a 95 MB benchmark upload costs a read buffer, not 95 MB.

The fake in parts: this module holds its state (:class:`FakeApi`); :mod:`daemon.fake.rules`
its fault knobs (:class:`~daemon.fake.rules.Faults`), what it accepts and the records it
keeps; :mod:`daemon.fake.http` the HTTP server and request handler; :mod:`daemon.fake.cli`
its command line.
"""

from __future__ import annotations

import random
import socket
import ssl
import threading
import uuid
from collections.abc import Collection
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from daemon.fake.http import Server
from daemon.fake.rules import (
    API_PREFIX,
    DEFAULT_TENANT,
    DEFAULT_TOKEN,
    DROP,
    MESSAGE_TYPE_BY_CONTENT_TYPE,
    Faults,
    ReceivedAttachment,
    ReceivedMessage,
    Refusal,
    RequestRecord,
    send_fields,
)

#: How long :meth:`FakeApi.stop` waits for each request handler to finish.
STOP_GRACE_S = 5.0
_SCOPES = {"upload": "attachments:create", "send": "messages:create"}


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
        prefix: str = API_PREFIX,
        tls: ssl.SSLContext | None = None,
        tls_cert: Path | str | None = None,
        tls_key: Path | str | None = None,
    ) -> None:
        """``prefix`` is where the API is served (anything else is an HTML 404); ``tls`` a
        server-side context, or ``tls_cert``/``tls_key`` PEM files to build one: HTTPS."""
        self._address = (host, port)
        if not prefix.startswith("/"):
            raise ValueError(f"prefix must start with /, got {prefix!r}")
        self._prefix = prefix.rstrip("/") or "/"
        if tls is None and tls_cert is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(tls_cert, tls_key)
        elif tls_key is not None:
            raise ValueError("tls_key needs tls_cert")
        self._tls = tls
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
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._origin = ""

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API base URL, ``http://127.0.0.1:<port>/api/v1`` (known once started)."""
        return self.origin + ("" if self._prefix == "/" else self._prefix)

    @property
    def origin(self) -> str:
        """``http(s)://host:port``, without the API's prefix (known once started)."""
        if not self._origin:
            raise RuntimeError("FakeApi is not started")
        return self._origin

    @property
    def prefix(self) -> str:
        """The path the API is served under (``/api/v1``)."""
        return self._prefix

    def start(self) -> FakeApi:
        """Bind and serve in a background daemon thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("FakeApi already started")
        self._stopping.clear()
        self._server = Server(self._address, self, self._tls)
        host, port = self._server.server_address[:2]
        # A wildcard bind is reached through loopback; an IPv6 literal needs brackets.
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(str(host), str(host))
        scheme = "http" if self._tls is None else "https"
        self._origin = (
            f"{scheme}://[{shown}]:{port}" if ":" in shown else f"{scheme}://{shown}:{port}"
        )
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

    def force(self, *statuses: int, endpoint: str | None = None) -> None:
        """Answer the next requests with ``statuses`` (``DROP`` closes the connection);
        only those to ``endpoint`` (``upload`` or ``send``) when given."""
        queues = {
            None: self._faults.force_status,
            "upload": self._faults.force_upload_status,
            "send": self._faults.force_send_status,
        }
        if endpoint not in queues:
            raise ValueError(f"endpoint must be upload or send, got {endpoint!r}")
        with self._lock:
            queues[endpoint].extend(statuses)

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

    # -- used by the request handler (the daemon.fake.http.Backend protocol) ----------------

    def handler_connected(self, sock: socket.socket) -> None:
        with self._lock:
            self._handlers = {t: s for t, s in self._handlers.items() if t.is_alive()}
            self._handlers[threading.current_thread()] = sock
            if self._stopping.is_set():  # accepted just before stop(): do not let it linger
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def note_request(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def note_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    def pause_before_reply(self, endpoint: str) -> None:
        faults = self._faults
        delay = faults.upload_latency_s if endpoint == "upload" else faults.send_latency_s
        delay = faults.latency_s if delay is None else delay
        if delay > 0:
            self._stopping.wait(delay)

    def next_fault(self, endpoint: str) -> int | None:
        """The status this request is answered with instead of being processed, if any."""
        with self._lock:
            faults = self._faults
            self._api_requests += 1
            own = faults.force_upload_status if endpoint == "upload" else faults.force_send_status
            if own:
                return own.pop(0)
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

    def lose_reply(self) -> bool:
        with self._lock:
            rate = self._faults.lose_reply_rate
            return bool(rate) and self._rng.random() < rate

    def check_auth(self, authorization: str, tenant: str, endpoint: str) -> None:
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            known = token in self._tokens or token in self._scopeless
            scopeless = token in self._scopeless
        if scheme.lower() != "bearer" or not known:
            raise Refusal(401, "unauthorized", "Invalid or expired token")
        if tenant != self.tenant_id:
            raise Refusal(403, "forbidden", "Token is not valid for this tenant")
        if scopeless:
            raise Refusal(403, "forbidden", f"Missing required scope: {_SCOPES[endpoint]}")

    def store_attachment(self, attachment: ReceivedAttachment) -> dict[str, object]:
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

    def create_message(self, payload: object, key: str | None) -> dict[str, object]:
        """Validate and create (or repeat) a message; returns the reply body."""
        conversation_id, message_type, attachment_ids, text = send_fields(payload)
        with self._changed:
            original = self._message_by_key.get(key) if key and self.honour_idempotency else None
            if original is not None:
                self._messages.append(replace(original, duplicate=True))
                self._changed.notify_all()
                return self._replies[original.id]
            unknown = [a for a in attachment_ids if a not in self._attachments]
            if unknown:
                raise Refusal(400, "bad_request", f"unknown attachment: {', '.join(unknown)}")
            if self._conversations is not None and conversation_id not in self._conversations:
                raise Refusal(404, "not_found", f"Conversation {conversation_id} not found")
            attachments = tuple(self._attachments[a] for a in attachment_ids)
            for attachment in attachments:
                family = MESSAGE_TYPE_BY_CONTENT_TYPE[attachment.content_type]
                if family != message_type:
                    raise Refusal(
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
