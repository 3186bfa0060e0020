"""The exception tree of sendseven-watch: every exception the package raises on purpose.

::

    WatchError
    ├── ConfigError                 bad configuration or usage (exit 2); names the key/file
    │   └── ConfigErrors            every problem of one configuration file, in one error
    ├── FileRejected                a file that can never be sent (goes to failed/, ``reason``)
    ├── FileChanged                 the file changed while it was uploaded: not the API's
    │                               fault; the delivery waits for it to stand still and
    │                               starts over
    ├── Stopped                     the daemon is stopping: leave the file, it is resumed
    ├── AuthRefused                 ``--once``: the API refused the credentials (exit 3)
    ├── JournalUnusable             the journal cannot be opened or read (``path``, a hint)
    └── ApiError                    anything that went wrong talking to the API
        ├── TransientError          worth retrying with backoff
        │   ├── TransportError      connection refused/reset, timeout
        │   │   └── UploadDeadline  the upload outlived its wall-clock deadline
        │   └── ServerBusy          429 and 5xx (``retry_after`` when the API said so)
        ├── AuthError               401/403: the credentials are wrong for *every* file
        ├── ApiMisconfigured        not the API answering, or not reachable as configured:
        │                           a redirect, a wrong path, a web server's or proxy's
        │                           page, an untrusted certificate; wrong for *every* file
        │                           (``url``, ``error``, ``hint``)
        └── RequestRejected         any other 4xx: wrong for *this* file (``reason``)

Errors carry what is needed to act on them: ``status``, ``detail`` (the API's own text,
trimmed), ``reason`` (the stable word that goes into sidecars and logs). HTTP replies become
these errors in one place, :func:`daemon.api.replies.raise_for_status`.
Messages never contain the API token; :func:`redact` is applied wherever text from
outside (exception strings, API replies) enters an error.
"""

from __future__ import annotations

from collections.abc import Iterable

from daemon.states import Reason

#: The API's own error text is trimmed to this many characters in logs and sidecars.
DETAIL_MAX_CHARS = 500

_SECRETS: set[str] = set()


def register_secret(secret: str | None) -> None:
    """Remember a secret so that :func:`redact` removes it from any text."""
    if secret and len(secret) >= 4:
        _SECRETS.add(secret)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every registered secret (and ``secrets``) replaced."""
    for secret in (*_SECRETS, *secrets):
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return text


def trim(text: str, limit: int = DETAIL_MAX_CHARS) -> str:
    """Trim (and redact) outside text for a log line or a sidecar."""
    text = redact(text.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def os_error_text(error: BaseException) -> str:
    """An OS error as a person reads it ("Permission denied"), anything else as its text."""
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


class WatchError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(WatchError):
    """The configuration (or the command line) is invalid.

    ``key`` is the dotted config key (``api.token``, ``inboxes[1].path``) or the file name
    that is wrong; the CLI prints ``str(error)`` as its one line and exits 2.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = redact(message)
        super().__init__(f"{key}: {self.message}")


class ConfigErrors(ConfigError):
    """Every problem found in one configuration file, so that one run can name them all.

    ``key`` and ``message`` are the first problem's (a log line keeps its ``key`` field);
    ``errors`` holds them all, in the order they were found. Each message is redacted
    again here: a problem found before the token was known must not show it either.
    """

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors = tuple(ConfigError(error.key, error.message) for error in errors)
        if not self.errors:
            raise ValueError("ConfigErrors needs at least one error")
        super().__init__(self.errors[0].key, self.errors[0].message)
        self.args = ("; ".join(str(error) for error in self.errors),)


class FileRejected(WatchError):
    """A file that can never be sent as it is: it goes to ``failed/`` with ``reason``."""

    def __init__(self, reason: Reason, detail: str, status: int | None = None) -> None:
        self.reason = reason
        self.detail = trim(detail)
        self.status = status
        super().__init__(f"{reason}: {self.detail}")


class FileChanged(WatchError):
    """The file changed (size, mtime or content) while it was being uploaded.

    Not the API's fault and not a failed attempt: the delivery waits until the file stands
    still, classifies it again and uploads it anew.
    """


class Stopped(WatchError):
    """The daemon is stopping: leave the file where it is, it will be resumed."""


class AuthRefused(WatchError):
    """``--once``: the API refused the credentials; stop the run (exit 3)."""

    def __init__(self, error: AuthError) -> None:
        super().__init__(str(error))
        self.error = error


class JournalUnusable(WatchError):
    """The journal file cannot be opened or read: damaged, not a database, no access.
    The text names the file and says what to do."""

    def __init__(self, path: str, problem: str, hint: str) -> None:
        self.path = path
        super().__init__(f"journal {path}: {problem}; {hint}")


class ApiError(WatchError):
    """Something went wrong talking to the API."""

    def __init__(self, detail: str, *, status: int | None = None, endpoint: str = "") -> None:
        self.detail = trim(detail)
        self.status = status
        self.endpoint = endpoint
        where = f"{endpoint}: " if endpoint else ""
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{where}{code}{self.detail}")


class TransientError(ApiError):
    """Worth trying again later; ``retry_after`` is the API's own hint in seconds."""

    retry_after: float | None = None


class TransportError(TransientError):
    """No usable HTTP reply: connection refused or reset, a timeout, the upload deadline."""


class UploadDeadline(TransportError):
    """The upload took longer than its deadline."""


class ServerBusy(TransientError):
    """429 or 5xx."""

    def __init__(
        self,
        detail: str,
        *,
        status: int,
        endpoint: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail, status=status, endpoint=endpoint)
        self.retry_after = retry_after


class AuthError(ApiError):
    """401 or 403: the token (or its scopes) is refused. No file is failed for this."""


class ApiMisconfigured(ApiError):
    """The configured ``api.url`` does not reach the API as it should: a deployment mistake.

    A redirect, a 404 from ``/attachments``, a 4xx that is not the API's JSON error, a TLS
    certificate the client does not trust. It is the same for every file, so, like
    :class:`AuthError`, no file is failed for it. ``status`` is the HTTP status when there
    was a reply, ``error`` the transport's words when there was none (TLS); ``url`` is the
    URL asked, without credentials; ``hint`` says what to change.
    """

    def __init__(
        self,
        hint: str,
        *,
        endpoint: str,
        url: str,
        status: int | None = None,
        error: str | None = None,
    ) -> None:
        self.hint = redact(hint)
        self.url = redact(url)
        self.error = None if error is None else trim(error)
        super().__init__(self.hint, status=status, endpoint=endpoint)

    def fields(self) -> dict[str, object]:
        """The fields of its ``api_misconfigured`` log line (``status`` or ``error``)."""
        found: dict[str, object] = {"endpoint": self.endpoint, "url": self.url}
        if self.status is not None:
            found["status"] = self.status
        if self.error is not None:
            found["error"] = self.error
        found["hint"] = self.hint
        return found


class RequestRejected(ApiError):
    """Any other 4xx: this file cannot be sent; ``reason`` is the sidecar's word."""

    def __init__(self, detail: str, *, status: int, endpoint: str = "") -> None:
        super().__init__(detail, status=status, endpoint=endpoint)
        self.reason = REASON_BY_STATUS.get(status, Reason.REJECTED)


#: The sidecar ``reason`` for each 4xx status the API documents (others: ``rejected``).
REASON_BY_STATUS = {
    404: Reason.CONVERSATION_NOT_FOUND,
    413: Reason.TOO_LARGE,
    415: Reason.UNSUPPORTED_TYPE,
}
