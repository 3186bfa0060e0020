"""The SendSeven client: a streamed upload and an idempotent send.

One :class:`ApiClient` holds one ``requests.Session`` (keep-alive) and is used by one thread
at a time: sessions are not documented as thread-safe, so the pipeline gives each worker
its own client.

The upload body is a :class:`MultipartBody`: a file-like object that yields the multipart
preamble, the file in chunks and the epilogue, with a Content-Length known up front. A 95 MB
file therefore costs one chunk of memory, not the >200 MB that ``requests``' ``files=``
would build. A body is single-use: every attempt builds a fresh one.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse, HTTPConnectionPool

from daemon import __version__
from daemon.errors import (
    ApiError,
    AuthError,
    FileChanged,
    RequestRejected,
    ServerBusy,
    TransportError,
)

#: Bytes read from the file per chunk of the upload body.
CHUNK_BYTES = 256 * 1024
#: The slowest upload rate tolerated before an upload is abandoned, in bytes per second.
#: With ``read_timeout`` on top, it sets the wall-clock deadline of an upload (requests'
#: own timeouts are per socket operation, never a limit on the whole transfer).
MIN_UPLOAD_BYTES_PER_SECOND = 100 * 1024
#: The retry policy is the pipeline's (journal, Idempotency-Key): urllib3 never retries.
NO_RETRIES = urllib3.Retry(0, read=False)  # what requests' HTTPAdapter uses


class UploadDeadline(TransportError):
    """The upload took longer than its deadline."""


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


class MultipartBody:
    """A multipart/form-data body with one ``file`` part, streamed from an open file."""

    def __init__(self, path: Path, filename: str, content_type: str, deadline: float) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(self._fd)
        except OSError:
            os.close(self._fd)
            raise
        self._initial = (st.st_size, st.st_mtime_ns)
        self.size = st.st_size
        self.boundary = uuid.uuid4().hex
        quoted = filename.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D")
        quoted = quoted.replace("\n", "%0A")
        self._preamble = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        self._epilogue = f"\r\n--{self.boundary}--\r\n".encode()
        self.length = len(self._preamble) + self.size + len(self._epilogue)
        #: Monotonic time after which reading the body fails (:class:`UploadDeadline`).
        self.deadline = deadline
        self._sent_file = 0
        self._stage = 0  # 0 preamble, 1 file, 2 epilogue, 3 done
        self._sha = hashlib.sha256()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        """Return the next piece of the body (``size`` is a hint; chunks are whole)."""
        if time.monotonic() > self.deadline:
            raise UploadDeadline("upload deadline passed", endpoint="attachments")
        if self._stage == 0:
            self._stage = 1
            return self._preamble
        if self._stage == 1:
            want = min(CHUNK_BYTES, self.size - self._sent_file)
            chunk = os.read(self._fd, want) if want > 0 else b""
            if want > 0 and not chunk:
                raise FileChanged("file shrank while it was uploaded", endpoint="attachments")
            self._sha.update(chunk)
            self._sent_file += len(chunk)
            if self._sent_file >= self.size:
                self._stage = 2
            if chunk:
                return chunk
        if self._stage == 2:
            self._stage = 3
            return self._epilogue
        return b""

    def unchanged(self) -> bool:
        """Whether the file still has the size and mtime it had when the body was built."""
        try:
            st = os.fstat(self._fd)
        except OSError:
            return False
        return (st.st_size, st.st_mtime_ns) == self._initial

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> MultipartBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


class ApiClient:
    """Talks to ``{url}/attachments`` and ``{url}/messages`` with one keep-alive session."""

    def __init__(
        self,
        url: str,
        token: str,
        tenant_id: str,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        on_request: Callable[[str, int | None, float], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        #: Called after every request with (endpoint, status or None, seconds): metrics.
        self.on_request = on_request
        self._timeouts = (connect_timeout, read_timeout)
        # The session's adapter owns the keep-alive pools and decides, once per endpoint,
        # which pool (direct, proxy, TLS settings) and which URL a request goes to. The
        # requests themselves go straight to that urllib3 pool: Session.request merges
        # settings, cookies, hooks and the environment on every call, and the adapter
        # wraps every reply in a Response: most of the CPU of a request, and the daemon is
        # CPU-bound on busy spools. What the environment would add is looked up once
        # instead (HTTPS_PROXY/NO_PROXY, REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE).
        self._session = requests.Session()
        adapter = self._session.get_adapter(self.url)
        if not isinstance(adapter, HTTPAdapter):
            raise TypeError(f"no HTTP adapter for {self.url}")
        self._adapter = adapter
        self._proxies = requests.utils.get_environ_proxies(self.url)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._verify: bool | str = bundle or True
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._pools: dict[str, tuple[HTTPConnectionPool, str]] = {}
        self._headers = {
            "Authorization": f"Bearer {token}",
            "X-Tenant-ID": tenant_id,
            "User-Agent": f"sendseven-watch/{__version__}",
            "Accept": "application/json",
        }

    def close(self) -> None:
        self._session.close()

    def _pool(self, endpoint: str) -> tuple[HTTPConnectionPool, str]:
        """The keep-alive pool for ``endpoint`` and the URL to ask it for, looked up once
        (as ``HTTPAdapter.send`` would look them up for every request)."""
        known = self._pools.get(endpoint)
        if known is not None:
            return known
        request = requests.PreparedRequest()
        request.prepare(method="POST", url=f"{self.url}/{endpoint}")
        pool = self._adapter.get_connection_with_tls_context(request, self._verify, self._proxies)
        if not isinstance(pool, HTTPConnectionPool):
            raise TypeError(f"no HTTP connection pool for {request.url}")
        known = self._pools[endpoint] = (pool, self._adapter.request_url(request, self._proxies))
        return known

    def _post(
        self, endpoint: str, body: bytes | MultipartBody, headers: dict[str, str]
    ) -> dict[str, Any]:
        pool, url = self._pool(endpoint)
        started = time.monotonic()
        status: int | None = None
        try:
            try:
                response = pool.urlopen(
                    "POST",
                    url,
                    body=body,  # type: ignore[arg-type]  # file-like: the upload streams
                    headers={**self._headers, **headers, "Content-Length": str(len(body))},
                    redirect=False,
                    assert_same_host=False,
                    retries=NO_RETRIES,
                    timeout=self._timeout,
                    preload_content=True,
                    decode_content=True,
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                cause = exc.__context__
                if isinstance(cause, ApiError):  # raised inside the body reader
                    raise cause from None
                # The text can carry the URL but never the headers: no token here.
                raise TransportError(f"{type(exc).__name__}: {exc}", endpoint=endpoint) from None
            status = response.status
            raise_for_status(response, endpoint)
            try:
                reply = json.loads(response.data)
            except ValueError:
                raise ServerBusy("reply is not JSON", status=status, endpoint=endpoint) from None
        finally:
            if self.on_request is not None:
                self.on_request(endpoint, status, time.monotonic() - started)
        if not isinstance(reply, dict) or not isinstance(reply.get("id"), str):
            raise ServerBusy("reply has no id", status=status, endpoint=endpoint)
        return reply

    def upload(self, path: Path, filename: str, content_type: str) -> Attachment:
        """Upload a file as multipart/form-data, streamed from disk."""
        connect_timeout, read_timeout = self._timeouts
        with MultipartBody(path, filename, content_type, deadline=math.inf) as body:
            # The size of the file as opened, not as it was a moment before.
            body.deadline = time.monotonic() + connect_timeout + read_timeout
            body.deadline += body.size / MIN_UPLOAD_BYTES_PER_SECOND
            reply = self._post("attachments", body, {"Content-Type": body.content_type})
            if not body.unchanged():
                raise FileChanged("file changed while it was uploaded", endpoint="attachments")
            return Attachment(id=reply["id"], sha256=body.sha256, size=body.size)

    def send(
        self,
        conversation_id: str,
        message_type: str,
        attachment_ids: list[str],
        text: str | None,
        idempotency_key: str,
    ) -> Message:
        """Send a media message; the same ``idempotency_key`` for every attempt at a file."""
        payload: dict[str, Any] = {
            "conversation_id": conversation_id,
            "message_type": message_type,
            "attachments": attachment_ids,
        }
        if text:
            payload["text"] = text
        reply = self._post(
            "messages",
            json.dumps(payload, ensure_ascii=False).encode(),
            {"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
        )
        status = reply.get("status")
        return Message(id=reply["id"], status=status if isinstance(status, str) else None)
