"""The SendSeven client: a streamed upload and an idempotent send.

One :class:`ApiClient` holds one ``requests.Session`` (keep-alive) and is used by one thread
at a time: sessions are not documented as thread-safe, so the pipeline gives each worker
its own client.

The upload body is streamed (:mod:`daemon.api.body`); replies become typed values or typed
errors in :mod:`daemon.api.replies`. Every request has a wall-clock deadline that covers the
reply too (:meth:`ApiClient.budget`, enforced by :mod:`daemon.api.deadlines`).

Whom it trusts for TLS, first found: ``api.ca_bundle``; ``$REQUESTS_CA_BUNDLE`` or
``$CURL_CA_BUNDLE`` (as requests reads them); the system store (OpenSSL's default paths,
which honour ``$SSL_CERT_FILE`` and ``$SSL_CERT_DIR``), or certifi's bundle (requests' own
default) on a machine that has no system store. Verification is never turned off.
``$HTTPS_PROXY``, ``$HTTP_PROXY``, ``$ALL_PROXY`` and ``$NO_PROXY`` are honoured as requests
honours them.
"""

from __future__ import annotations

import json
import math
import os
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3 import HTTPConnectionPool

from daemon import __version__
from daemon.api import deadlines
from daemon.api.body import MultipartBody
from daemon.api.deadlines import WATCHDOG, Cut, InFlight
from daemon.api.replies import Attachment, Message, public_url, raise_for_status, tls_problem
from daemon.config import ApiConfig
from daemon.errors import (
    ApiMisconfigured,
    FileChanged,
    RequestRejected,
    ServerBusy,
    Stopped,
    TransportError,
    UploadDeadline,
)

#: The slowest upload rate tolerated before an upload is abandoned, in bytes per second.
#: It adds ``size / rate`` to an upload's wall-clock deadline (:meth:`ApiClient.budget`).
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
        ca_bundle: Path | str | None = None,
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
        self._verify = trusted_cas(ca_bundle)
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._pools: dict[str, tuple[HTTPConnectionPool, str]] = {}
        self._lock = threading.Lock()
        self._in_flight: InFlight | None = None
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
            ca_bundle=api.ca_bundle,
            on_request=on_request,
        )

    def close(self) -> None:
        self._session.close()

    def budget(self, body_bytes: int = 0) -> float:
        """The wall-clock deadline of one request, in seconds from its start: connecting,
        sending the body and reading the whole reply. ``connect_timeout + read_timeout``,
        plus ``body_bytes`` at :data:`MIN_UPLOAD_BYTES_PER_SECOND` for an upload. A
        request still going then is cut off (a :class:`~daemon.errors.TransportError`,
        retried like any other)."""
        connect_timeout, read_timeout = self._timeouts
        return connect_timeout + read_timeout + body_bytes / MIN_UPLOAD_BYTES_PER_SECOND

    def abort(self) -> None:
        """Cut the request in flight short (from another thread): it raises
        :class:`~daemon.errors.Stopped`. For a stop that will not wait any longer."""
        with self._lock:
            request = self._in_flight
        if request is not None:
            request.cut(Cut.STOPPED)

    @property
    def proxy(self) -> str | None:
        """The proxy the environment names for the API's URL (without credentials), if any."""
        chosen = requests.utils.select_proxy(self.url, self._proxies)
        return public_url(chosen) if chosen else None

    def endpoint_url(self, endpoint: str) -> str:
        """The URL of ``endpoint`` (``attachments``, ``messages``)."""
        return f"{self.url}/{endpoint}"

    def _pool(self, endpoint: str) -> tuple[HTTPConnectionPool, str]:
        """The keep-alive pool for ``endpoint`` and the URL to ask it for, looked up once
        (as ``HTTPAdapter.send`` would look them up for every request)."""
        known = self._pools.get(endpoint)
        if known is not None:
            return known
        request = requests.PreparedRequest()
        request.prepare(method="POST", url=self.endpoint_url(endpoint))
        pool = self._adapter.get_connection_with_tls_context(request, self._verify, self._proxies)
        if not isinstance(pool, HTTPConnectionPool):
            raise TypeError(f"no HTTP connection pool for {request.url}")
        # Connections the deadline watchdog can cut (the pool makes them from now on).
        cuttable = deadlines.deadline_connection_class(pool.ConnectionCls)
        if cuttable is None:
            raise TypeError(f"unknown connection class {pool.ConnectionCls!r} for {request.url}")
        pool.ConnectionCls = cuttable
        known = self._pools[endpoint] = (pool, self._adapter.request_url(request, self._proxies))
        return known

    def _post(
        self,
        endpoint: str,
        body: bytes | MultipartBody,
        headers: dict[str, str],
        budget: float | None = None,
    ) -> dict[str, Any]:
        pool, url = self._pool(endpoint)
        started = time.monotonic()
        budget = self.budget() if budget is None else budget
        request = InFlight(started + budget)
        status: int | None = None
        with self._lock:
            self._in_flight = request
        deadlines.set_current(request)
        WATCHDOG.watch(request)
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
                if request.cut_by == Cut.STOPPED:
                    raise Stopped from None  # the file stays claimed for the next run
                if isinstance(body, MultipartBody) and body.error is not None:
                    raise body.error from None  # the body reader stopped the upload
                if request.cut_by == Cut.DEADLINE:
                    raise _past_deadline(endpoint, body, budget) from None
                misconfigured = tls_problem(exc, endpoint, self.endpoint_url(endpoint))
                if misconfigured is not None:
                    raise misconfigured from None
                # The text can carry the URL but never the headers: no token here.
                raise TransportError(f"{type(exc).__name__}: {exc}", endpoint=endpoint) from None
            request.finish()
            if request.cut_by is not None:
                # Cut while the reply came: the end of the socket may have read as the end
                # of the headers or of the body, so what arrived is not the whole reply.
                raise _past_deadline(endpoint, body, budget)
            status = response.status
            raise_for_status(response, endpoint, self.endpoint_url(endpoint))
            try:
                reply = json.loads(response.data)
            except ValueError:
                raise ServerBusy("reply is not JSON", status=status, endpoint=endpoint) from None
        finally:
            request.finish()
            WATCHDOG.forget(request)
            deadlines.set_current(None)
            with self._lock:
                self._in_flight = None
            if self.on_request is not None:
                self.on_request(endpoint, status, time.monotonic() - started)
        if not isinstance(reply, dict) or not isinstance(reply.get("id"), str):
            raise ServerBusy("reply has no id", status=status, endpoint=endpoint)
        return reply

    def upload(self, path: Path, filename: str, content_type: str) -> Attachment:
        """Upload a file as multipart/form-data, streamed from disk."""
        with MultipartBody(path, filename, content_type, deadline=math.inf) as body:
            # The size of the file as opened, not as it was a moment before. The body
            # checks the deadline too, to say "upload deadline" when it is the sending
            # that took too long; the watchdog covers the reply.
            budget = self.budget(body.size)
            body.deadline = time.monotonic() + budget
            reply = self._post("attachments", body, {"Content-Type": body.content_type}, budget)
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

    def probe(self, endpoint: str) -> RequestRejected:
        """Ask ``endpoint`` something it must refuse with 400, creating nothing: an upload
        without a file part, or an empty message. Returns that 400; raises what else came
        (:class:`~daemon.errors.AuthError`, :class:`~daemon.errors.ApiMisconfigured`, ...),
        and :class:`~daemon.errors.ApiMisconfigured` when something accepted it."""
        if endpoint == "attachments":
            boundary = uuid.uuid4().hex
            body = f"--{boundary}--\r\n".encode()
            content_type = f"multipart/form-data; boundary={boundary}"
        elif endpoint == "messages":
            body, content_type = b"{}", "application/json"
        else:
            raise ValueError(f"no such endpoint: {endpoint}")
        try:
            reply = self._post(endpoint, body, {"Content-Type": content_type})
        except RequestRejected as rejected:
            return rejected
        except ServerBusy as busy:
            if busy.status is not None and 200 <= busy.status < 300:
                reply = {}  # accepted, with a body that is not the API's: handled below
            else:
                raise
        raise ApiMisconfigured(
            f"an empty request was accepted (id {reply.get('id')!r}): this is not the "
            "SendSeven API; api.url should end in /api/v1 on the API's host",
            endpoint=endpoint,
            url=public_url(self.endpoint_url(endpoint)),
        )


def _past_deadline(endpoint: str, body: bytes | MultipartBody, budget: float) -> TransportError:
    """The error of a request cut off at its deadline (transient: retried, same key)."""
    text = f"no complete reply within the deadline ({budget:.3g} s)"
    if isinstance(body, MultipartBody):
        return UploadDeadline(text, endpoint=endpoint)
    return TransportError(text, endpoint=endpoint)


def trusted_cas(ca_bundle: Path | str | None) -> str | bool:
    """What to verify the server's certificate against, as requests' ``verify`` takes it:
    a CA file or folder, or True for the system store. Never False."""
    if ca_bundle is not None:
        return str(ca_bundle)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        return bundle
    paths = ssl.get_default_verify_paths()  # honours $SSL_CERT_FILE and $SSL_CERT_DIR
    if paths.cafile is None and paths.capath is None:
        return DEFAULT_CA_BUNDLE_PATH  # no system store on this machine: requests' own default
    return True
