"""The fake SendSeven API's HTTP side: its server and its request handler.

The handler routes each request, applies the fault the fake's state picks, reads the body
(uploads are parsed while they stream in, :mod:`daemon.fake.multipart`) and turns a
:class:`daemon.fake.rules.Refusal` into a JSON error reply. What it needs from the state is
the :class:`Backend` protocol, which :class:`daemon.fake.api.FakeApi` implements; what the
fake accepts is in :mod:`daemon.fake.rules`.

Besides the API's own replies it can answer like the things that stand in front of an API
when a deployment goes wrong (:class:`daemon.fake.rules.Faults`): a redirect, a proxy's
HTML error page, and a web server's HTML 404 for any path outside the API's prefix.
"""

from __future__ import annotations

import html
import json
import socket
import socketserver
import ssl
import sys
import time
import uuid
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast

from daemon.fake.multipart import Body, ClientLeftError, FramingError, read_file_part
from daemon.fake.rules import (
    DOCUMENT_LIMIT_BYTES,
    DROP,
    LIMIT_BYTES_BY_MESSAGE_TYPE,
    MAX_JSON_BODY_BYTES,
    MB,
    MESSAGE_TYPE_BY_CONTENT_TYPE,
    Faults,
    ReceivedAttachment,
    Refusal,
    RequestRecord,
)

#: A silent client (no byte for this long) loses its connection; a backstop, not a feature.
IDLE_TIMEOUT_S = 120.0
_HEALTH_NAMES = ("health", "healthz")
_ENDPOINT_NAMES = {"attachments": "upload", "messages": "send"}
_REASONS = {
    301: "Moved Permanently",
    302: "Found",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    404: "Not Found",
    405: "Not Allowed",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


class Backend(Protocol):
    """What the request handler needs from the fake's state (:class:`~daemon.fake.FakeApi`)."""

    verbose: bool
    """Write an access log line on stderr for every request."""

    @property
    def prefix(self) -> str:
        """The path the API is served under (``/api/v1``); anything else is a web server's 404."""

    @property
    def faults(self) -> Faults:
        """The fault knobs in force."""

    def handler_connected(self, sock: socket.socket) -> None:
        """A connection's handler thread started (so that stop can close the connection)."""

    def note_request(self, record: RequestRecord) -> None:
        """A request was answered (or dropped)."""

    def note_error(self, text: str) -> None:
        """An unexpected exception inside the server: a bug in the fake."""

    def pause_before_reply(self, endpoint: str) -> None:
        """Wait out the latency configured for ``endpoint`` (``upload`` or ``send``)."""

    def next_fault(self, endpoint: str) -> int | None:
        """The status this request is answered with instead of being processed, if any."""

    def lose_reply(self) -> bool:
        """Whether to answer an accepted message with a 502 anyway."""

    def check_auth(self, authorization: str, tenant: str, endpoint: str) -> None:
        """Raise a 401/403 :class:`~daemon.fake.rules.Refusal` unless the caller may do this."""

    def store_attachment(self, attachment: ReceivedAttachment) -> dict[str, object]:
        """Keep an accepted upload; returns the reply body."""

    def create_message(self, payload: object, key: str | None) -> dict[str, object]:
        """Validate and create (or repeat) a message; returns the reply body."""


class Server(ThreadingHTTPServer):
    """Serves one :class:`Backend`, a thread per connection, over TLS when given a context."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], api: Backend, tls: ssl.SSLContext | None = None
    ) -> None:
        self.api = api
        self.tls = tls
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall on a slow resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        # The handshake runs here, in the connection's own thread, never in the accept loop:
        # a client that connects and says nothing must not stall the server.
        request.settimeout(IDLE_TIMEOUT_S)
        with self.tls.wrap_socket(request, server_side=True) as tls_socket:
            super().finish_request(tls_socket, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exception()
        if isinstance(error, OSError):  # the client left (or refused our certificate)
            return
        self.api.note_error(repr(error))
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
        self.api.handler_connected(self.connection)

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
                if not self._in_front():
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

    def _in_front(self) -> bool:
        """Answer as whatever stands in front of the API, if anything does; True if it did."""
        faults, prefix = self.api.faults, self.api.prefix
        if faults.redirect_to is not None:
            self._body.drain()
            location = faults.redirect_to.rstrip("/") + self.path
            self._page(faults.redirect_status, {"Location": location})
            return True
        if faults.html_status is not None:
            self._body.drain()
            self._page(faults.html_status)
            return True
        if self._path.lstrip("/") in _HEALTH_NAMES:
            return False  # the health checks answer at the root too
        if self._path != prefix and not self._path.startswith(prefix.rstrip("/") + "/"):
            self._body.drain()
            self._page(404)  # not the API's: the web server's own page
            return True
        return False

    def _route(self) -> None:
        prefix = self.api.prefix.rstrip("/")
        inside = self._path.startswith(prefix + "/")
        name = (self._path[len(prefix) :] if inside else self._path).strip("/")
        if name in _HEALTH_NAMES:
            if self.command != "GET":
                raise Refusal(405, "method_not_allowed", "use GET")
            self._body.drain()
            self._reply(200, {"status": "ok"}, record=False)
            return
        endpoint = _ENDPOINT_NAMES.get(name)
        if endpoint is None:
            raise Refusal(404, "not_found", f"no such endpoint: {self._path}")
        if self.command != "POST":
            raise Refusal(405, "method_not_allowed", "use POST")
        self._endpoint = endpoint
        fault = self.api.next_fault(endpoint)
        if fault == DROP:
            self.api.pause_before_reply(endpoint)
            self.close_connection = True
            self._record(0)
            return
        if fault is not None:
            words = {
                429: ("rate_limited", "Too many requests"),
                404: ("not_found", "Injected: not found"),
            }
            if fault < 500:
                error, message = words.get(fault, ("bad_request", "Injected rejection"))
            else:
                error, message = ("server_error", "Injected server failure")
            raise Refusal(fault, error, message)
        self.api.check_auth(
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
        self._reply(201, self.api.store_attachment(attachment))

    def _send(self) -> None:
        raw = self._body.read_all(MAX_JSON_BODY_BYTES)
        if raw is None:
            raise Refusal(413, "payload_too_large", "message body too large")
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise Refusal(400, "bad_request", f"body is not JSON: {exc}") from exc
        reply = self.api.create_message(payload, self.headers.get("Idempotency-Key"))
        if self.api.lose_reply():
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
        self.api.note_request(
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
        health = self._path.rsplit("/", 1)[-1] in _HEALTH_NAMES
        allow = {"Allow": "GET" if health else "POST"} if status == 405 else {}
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
            self.api.pause_before_reply(self._endpoint)
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

    def _page(self, status: int, headers: dict[str, str] | None = None) -> None:
        """An HTML page, as a web server or a proxy answers: never the API's JSON."""
        title = f"{status} {_REASONS.get(status, 'Error')}"
        page = (
            f"<html>\r\n<head><title>{html.escape(title)}</title></head>\r\n<body>\r\n"
            f"<center><h1>{html.escape(title)}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        ).encode()
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(page)
