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
from requests.structures import CaseInsensitiveDict

from daemon import __version__
from daemon.errors import (
    ApiError,
    AuthError,
    RequestRejected,
    ServerBusy,
    TransientError,
    TransportError,
)

#: Bytes read from the file per chunk of the upload body.
CHUNK_BYTES = 256 * 1024
#: The slowest upload rate tolerated before an upload is abandoned, in bytes per second.
#: With ``read_timeout`` on top, it sets the wall-clock deadline of an upload (requests'
#: own timeouts are per socket operation, never a limit on the whole transfer).
MIN_UPLOAD_BYTES_PER_SECOND = 100 * 1024


class FileChanged(TransientError):
    """The file changed (size, mtime or content) while it was being uploaded."""


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


def _error_detail(response: requests.Response) -> str:
    """The API's own words for an error, falling back to the raw body or the reason."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            text = body.get(key)
            if isinstance(text, str) and text:
                return text
    text = response.text.strip()
    return text or response.reason or f"HTTP {response.status_code}"


def raise_for_status(response: requests.Response, endpoint: str) -> None:
    """Turn an error reply into the typed error the pipeline acts on."""
    status = response.status_code
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
        # The session owns the keep-alive pool; requests go straight to its adapter with
        # a request prepared here. Session.request would merge settings, cookies, hooks
        # and the environment on every call: two thirds of requests' CPU per request, and
        # the daemon is CPU-bound on busy spools. What the environment would add is looked
        # up once instead (HTTPS_PROXY/NO_PROXY, REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE).
        self._session = requests.Session()
        self._adapter = self._session.get_adapter(self.url)
        self._proxies = requests.utils.get_environ_proxies(self.url)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._verify: bool | str = bundle or True
        self._headers = {
            "Authorization": f"Bearer {token}",
            "X-Tenant-ID": tenant_id,
            "User-Agent": f"sendseven-watch/{__version__}",
            "Accept": "application/json",
        }

    def close(self) -> None:
        self._session.close()

    def _post(
        self, endpoint: str, body: bytes | MultipartBody, headers: dict[str, str]
    ) -> dict[str, Any]:
        request = requests.PreparedRequest()
        request.method = "POST"
        request.url = f"{self.url}/{endpoint}"
        request.headers = CaseInsensitiveDict(
            {**self._headers, **headers, "Content-Length": str(len(body))}
        )
        request.body = body  # type: ignore[assignment]  # a file-like body streams
        started = time.monotonic()
        status: int | None = None
        try:
            try:
                response = self._adapter.send(
                    request, timeout=self._timeouts, verify=self._verify, proxies=self._proxies
                )
            except requests.RequestException as exc:
                cause = exc.__context__
                if isinstance(cause, ApiError):  # raised inside the body reader
                    raise cause from None
                # The text can carry the URL but never the headers: no token here.
                raise TransportError(f"{type(exc).__name__}: {exc}", endpoint=endpoint) from None
            with response:
                status = response.status_code
                raise_for_status(response, endpoint)
                try:
                    body = response.json()
                except ValueError:
                    raise ServerBusy(
                        "reply is not JSON", status=status, endpoint=endpoint
                    ) from None
        finally:
            if self.on_request is not None:
                self.on_request(endpoint, status, time.monotonic() - started)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ServerBusy("reply has no id", status=status, endpoint=endpoint)
        return body

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
