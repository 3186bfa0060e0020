"""What the API answered: typed values for its replies, typed errors for its error replies.

:func:`raise_for_status` is the one place where an HTTP status becomes an error the
delivery acts on (see :mod:`daemon.errors` for the tree).
"""

from __future__ import annotations

import email.utils
import json
import re
import ssl
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from urllib3 import BaseHTTPResponse

from daemon.errors import ApiMisconfigured, AuthError, RequestRejected, ServerBusy

#: Where the API's endpoints live on its host; the hint for a wrong path.
API_PATH = "/api/v1"
WRONG_PATH_HINT = f"api.url should end in {API_PATH}"
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
#: OpenSSL's words for "the other side does not speak TLS" (an https:// URL to an http port).
_NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "HTTP_REQUEST"}
)


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


def public_url(url: str) -> str:
    """``url`` as it may be shown: without credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def api_error_text(response: BaseHTTPResponse) -> str | None:
    """The API's own words when the body is its JSON error, else None (a page, nothing)."""
    try:
        body: Any = json.loads(response.data)
    except ValueError:  # also a body that is not UTF-8
        return None
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            text = body.get(key)
            if isinstance(text, str) and text:
                return text
    return None


def _error_detail(response: BaseHTTPResponse) -> str:
    """The API's own words for an error, falling back to the raw body or the reason."""
    text = api_error_text(response)
    if text is not None:
        return text
    text = response.data.decode("utf-8", "replace")
    title = _HTML_TITLE.search(text)
    if title is not None or "html" in response.headers.get("Content-Type", "").lower():
        # A proxy's or web server's page: its title says it all, the markup says nothing.
        shown = " ".join(title.group(1).split()) if title else (response.reason or "")
        return f"{_body_kind(response)}: {shown}".rstrip(": ")
    return " ".join(text.split()) or response.reason or f"HTTP {response.status}"


def _body_kind(response: BaseHTTPResponse) -> str:
    media_type = response.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if not response.data:
        return "an empty body"
    return f"a {media_type} page" if media_type else "a body that is not JSON"


def _redirect_hint(response: BaseHTTPResponse, endpoint: str, url: str) -> str:
    location = response.headers.get("Location")
    if not location:
        return f"the server redirects without a Location: {WRONG_PATH_HINT} on the API's host"
    target = public_url(urljoin(url, location))
    suffix = f"/{endpoint}"
    base = target.rstrip("/").removesuffix(suffix)
    if base != target.rstrip("/"):
        return f"the server redirects to {target}: set api.url to {base}"
    return f"the server redirects to {target}: set api.url to the API's address there"


def raise_for_status(response: BaseHTTPResponse, endpoint: str, url: str = "") -> None:
    """Turn a reply that is not a success into the typed error the pipeline acts on.

    ``url`` is the URL that was asked, for :class:`~daemon.errors.ApiMisconfigured`.
    """
    status = response.status
    shown = public_url(url)
    if 300 <= status < 400:
        hint = _redirect_hint(response, endpoint, url)
        raise ApiMisconfigured(hint, endpoint=endpoint, url=shown, status=status)
    if status < 400:
        if response.headers.get("Content-Type", "").lower().startswith("text/html"):
            hint = f"a web page answered, not the API: {WRONG_PATH_HINT}"
            raise ApiMisconfigured(hint, endpoint=endpoint, url=shown, status=status)
        return
    if status == 429 or status >= 500:  # busy whatever the body: a proxy's 502 page passes
        detail = _error_detail(response)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise ServerBusy(detail, status=status, endpoint=endpoint, retry_after=retry_after)
    words = api_error_text(response)
    if status == 404 and endpoint == "attachments":  # the upload names no conversation
        hint = WRONG_PATH_HINT
        if urlsplit(url).path.rstrip("/").endswith(f"{API_PATH}/{endpoint}"):
            hint += " on the API's host (it does: is the host right?)"
        raise ApiMisconfigured(hint, endpoint=endpoint, url=shown, status=status)
    if status == 405:
        hint = f"the server does not take POST here: {WRONG_PATH_HINT} on the API's host"
        raise ApiMisconfigured(hint, endpoint=endpoint, url=shown, status=status)
    if words is None:
        hint = (
            f"HTTP {status} with {_body_kind(response)}, not the API's JSON error: something "
            f"else answered (a web server or a proxy); {WRONG_PATH_HINT} on the API's host"
        )
        raise ApiMisconfigured(hint, endpoint=endpoint, url=shown, status=status)
    if status in (401, 403):
        raise AuthError(words, status=status, endpoint=endpoint)
    raise RequestRejected(words, status=status, endpoint=endpoint)


def tls_problem(error: BaseException, endpoint: str, url: str) -> ApiMisconfigured | None:
    """The deployment mistake behind a failed connection, if it is one: an untrusted
    certificate, or no TLS where the URL says https://. None for anything else."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            words = current.verify_message or str(current)
            hint = (
                f"the server's TLS certificate is not trusted ({words}); if a private CA or a "
                "TLS-inspecting proxy signs it, set api.ca_bundle to that CA's PEM file"
            )
            return ApiMisconfigured(
                hint, endpoint=endpoint, url=public_url(url), error=f"certificate: {words}"
            )
        if isinstance(current, ssl.SSLError) and current.reason in _NOT_TLS_REASONS:
            hint = (
                f"the server does not speak TLS there ({current.reason}): use http://, "
                "or the port of its HTTPS"
            )
            return ApiMisconfigured(
                hint, endpoint=endpoint, url=public_url(url), error=f"TLS: {current.reason}"
            )
        followed = (getattr(current, "reason", None), current.__cause__, current.__context__)
        pending += [e for e in (*followed, *current.args) if isinstance(e, BaseException)]
    return None
