"""The fake SendSeven API's HTTP side: its server and its request handler.

The handler routes each request, applies the fault :class:`daemon.fake.api.FakeApi` picks,
reads the body (uploads are parsed while they stream in, :mod:`daemon.fake.multipart`) and turns
a :class:`daemon.fake.rules.Refusal` into a JSON error reply. The fake's state lives in
:mod:`daemon.fake.api`, what it accepts in :mod:`daemon.fake.rules`.
"""

from __future__ import annotations

import json
import socket
import socketserver
import sys
import time
import uuid
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

from daemon.fake.multipart import Body, ClientLeftError, FramingError, read_file_part
from daemon.fake.rules import (
    API_PREFIX,
    DOCUMENT_LIMIT_BYTES,
    DROP,
    LIMIT_BYTES_BY_MESSAGE_TYPE,
    MAX_JSON_BODY_BYTES,
    MB,
    MESSAGE_TYPE_BY_CONTENT_TYPE,
    ReceivedAttachment,
    Refusal,
    RequestRecord,
)

if TYPE_CHECKING:  # only for annotations: daemon.fake.api imports this module
    from daemon.fake.api import FakeApi

#: A silent client (no byte for this long) loses its connection; a backstop, not a feature.
IDLE_TIMEOUT_S = 120.0
_HEALTH_PATHS = frozenset({f"{API_PREFIX}/health", f"{API_PREFIX}/healthz", "/health", "/healthz"})
_ENDPOINTS = {f"{API_PREFIX}/attachments": "upload", f"{API_PREFIX}/messages": "send"}


class Server(ThreadingHTTPServer):
    """Serves one :class:`~daemon.fake.api.FakeApi`, a thread per connection."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: FakeApi) -> None:
        self.api = api
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

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


class Handler(BaseHTTPRequestHandler):
    """Answers the requests of one connection (``bench/fakeserver.py`` subclasses it)."""

    protocol_version = "HTTP/1.1"  # keep-alive, so clients can reuse connections
    server_version = "FakeSendSeven/1"
    # Headers and body go out in separate writes; with Nagle on, a keep-alive client
    # waits for the delayed ACK (~40 ms) on every reply, as no real API server would.
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        self.api = cast(Server, self.server).api
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
            except Refusal as refusal:
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
                raise Refusal(405, "method_not_allowed", "use GET")
            self._body.drain()
            self._reply(200, {"status": "ok"}, record=False)
            return
        endpoint = _ENDPOINTS.get(self._path)
        if endpoint is None:
            raise Refusal(404, "not_found", f"no such endpoint: {self._path}")
        if self.command != "POST":
            raise Refusal(405, "method_not_allowed", "use POST")
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
            raise Refusal(fault, error, message)
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
            raise Refusal(400, "bad_request", "expected multipart/form-data with a boundary")
        try:
            part = read_file_part(self._body, boundary.encode("latin-1"), "file")
        except ValueError as exc:
            raise Refusal(400, "bad_request", f"malformed multipart body: {exc}") from exc
        if part is None:
            raise Refusal(400, "bad_request", "missing file part")
        headers = part.headers
        filename = headers.get_filename()
        if not filename:
            raise Refusal(400, "bad_request", "file part has no filename")
        # RFC 7578 would default a part without Content-Type to text/plain; refusing it
        # instead catches a client that forgot to say what it sends.
        media_type = headers.get_content_type() if "Content-Type" in headers else ""
        message_type = MESSAGE_TYPE_BY_CONTENT_TYPE.get(media_type)
        if message_type is None:
            shown = media_type or "(none)"
            raise Refusal(415, "unsupported_media_type", f"File type {shown} is not allowed")
        limit = LIMIT_BYTES_BY_MESSAGE_TYPE.get(message_type, DOCUMENT_LIMIT_BYTES)
        if part.size > limit:
            raise Refusal(
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
            raise Refusal(413, "payload_too_large", "message body too large")
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise Refusal(400, "bad_request", f"body is not JSON: {exc}") from exc
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
