"""The SendSeven client: a streamed upload and an idempotent send.

One :class:`ApiClient` holds one ``requests.Session`` (keep-alive) and is used by one thread
at a time: sessions are not documented as thread-safe, so the pipeline gives each worker
its own client.

The upload body is streamed (:mod:`daemon.api.body`); replies become typed values or typed
errors in :mod:`daemon.api.replies`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool

from daemon import __version__
from daemon.api.body import MultipartBody
from daemon.api.replies import Attachment, Message, raise_for_status
from daemon.config.model import ApiConfig
from daemon.errors import FileChanged, ServerBusy, TransportError

#: The slowest upload rate tolerated before an upload is abandoned, in bytes per second.
#: With ``read_timeout`` on top, it sets the wall-clock deadline of an upload (requests'
#: own timeouts are per socket operation, never a limit on the whole transfer).
MIN_UPLOAD_BYTES_PER_SECOND = 100 * 1024
#: The retry policy is the pipeline's (journal, Idempotency-Key): urllib3 never retries.
NO_RETRIES = urllib3.Retry(0, read=False)  # what requests' HTTPAdapter uses


class ApiClient:
    """Talks to ``{url}/attachments`` and ``{url}/messages`` with one keep-alive session."""

    def __init__(
        self,
        url: str,
        token: str,
        tenant_id: str,
        *,
        connect_timeout: float = ApiConfig.connect_timeout,
        read_timeout: float = ApiConfig.read_timeout,
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

    @classmethod
    def from_config(
        cls,
        api: ApiConfig,
        *,
        on_request: Callable[[str, int | None, float], None] | None = None,
    ) -> ApiClient:
        """A client for the configured URL, credentials and timeouts."""
        return cls(
            api.url,
            api.token,
            api.tenant_id,
            connect_timeout=api.connect_timeout,
            read_timeout=api.read_timeout,
            on_request=on_request,
        )

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
                if isinstance(body, MultipartBody) and body.error is not None:
                    raise body.error from None  # the body reader stopped the upload
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
                raise FileChanged("file changed while it was uploaded")
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
