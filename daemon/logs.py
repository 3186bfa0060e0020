"""structlog setup: one JSON object per line on stdout (journald keeps them), or a console
renderer for humans at a terminal.

Every line has ``timestamp`` (ISO 8601 UTC), ``level`` and ``event``; exceptions are rendered
as a structured ``exception`` field, never a bare traceback on stderr. Every string that goes
out passes :func:`daemon.errors.redact`, so a registered token can never be printed.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import types
from typing import Any, TextIO

import structlog
import structlog.tracebacks
from structlog.typing import EventDict, WrappedLogger

from daemon.errors import redact

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _leading_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``timestamp``, ``level`` and ``event`` first: what a human scans for."""
    head = {
        key: event_dict.pop(key) for key in ("timestamp", "level", "event") if key in event_dict
    }
    return {**head, **event_dict}


def printable(text: str) -> str:
    """``text`` as valid UTF-8: the bytes of a file name that is not UTF-8 (surrogates, as
    the OS hands them over) become ``\\xNN`` escapes, so a log line is never dropped and never
    carries raw bytes (``Zo\\xeb.pdf``)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate that came from nowhere on disk
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
    return text


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(printable(value))
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def _redact_values(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Every string, however deep (tracebacks too), loses any registered secret."""
    return {key: _redacted(value) for key, value in event_dict.items()}


def _render_json(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    """The line as JSON, leading fields first, every string redacted and printable.

    Rendered once: nearly every line holds no secret and only valid UTF-8, and then the
    line as first rendered is already what the careful path makes of it. That path (each
    value through :func:`_redacted`, then rendered again) runs only when the line might
    hold a secret (:func:`redact` would change it, or it has a backslash, which any JSON
    escape of a secret would bring) or a name that is not UTF-8.
    """
    ordered = _leading_fields(_, __, event_dict)
    line = json.dumps(ordered, ensure_ascii=False, default=str)
    if "\\" not in line and redact(line) == line and _valid_utf8(line):
        return line
    return json.dumps(_redact_values(_, __, ordered), ensure_ascii=False, default=str)


def _valid_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _ascii(message: str) -> str:
    """``message`` with every non-ASCII character as a JSON ``\\uXXXX`` escape."""
    return "".join(char if char.isascii() else json.dumps(char)[1:-1] for char in message)


class _LineWriter:
    """A print-logger whose writes are whole lines under a lock (threads never interleave)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            try:
                try:
                    self._stream.write(message + "\n")
                except UnicodeEncodeError:
                    # A stream that takes only ASCII (LANG=C without UTF-8 mode): escape,
                    # never drop. \uXXXX is valid inside the JSON strings these come from.
                    self._stream.write(_ascii(message) + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                # stdout closed (journald restarted, pipe gone): losing a log line must
                # never take the daemon down with it.
                pass

    log = debug = info = warning = warn = error = critical = exception = msg


class _LineWriterFactory:
    def __init__(self, stream: TextIO) -> None:
        self._writer = _LineWriter(stream)

    def __call__(self, *args: Any) -> _LineWriter:
        return self._writer


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure structlog for the whole process (call again to change level or format)."""
    out = stream if stream is not None else sys.stdout
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "console":
        processors += [
            # The traceback as text before redaction, so that it passes through it too.
            structlog.processors.format_exc_info,
            _redact_values,
            structlog.dev.ConsoleRenderer(colors=_is_tty(out)),
        ]
    else:
        processors += [
            # Tracebacks as data, without local variables: a local may hold the token.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            _render_json,
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=_LineWriterFactory(out),
        cache_logger_on_first_use=False,
    )
    _install_excepthooks()
    _route_stdlib_logging()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


class _ToStructlog(logging.Handler):
    """Records of the standard ``logging`` module (urllib3, watchdog, ``warnings``) become
    ``library_log`` lines like every other line, instead of bare text on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {
                "logger": record.name,
                "message": record.getMessage().rstrip(),
            }
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            level = record.levelname.lower()
            method = level if level in LEVELS else "error"
            getattr(structlog.get_logger(), method)("library_log", **fields)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


#: Libraries speak up from this level on, whatever ``log.level`` says: their debug
#: output (every watchdog event, every urllib3 connection) would drown the daemon's.
LIBRARY_LEVEL = logging.WARNING


def _route_stdlib_logging() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ToStructlog):
            root.removeHandler(handler)
    root.addHandler(_ToStructlog())
    root.setLevel(LIBRARY_LEVEL)
    logging.captureWarnings(True)


def _install_excepthooks() -> None:
    """Uncaught exceptions (main or any thread) become one structured log line."""

    def hook(
        exc_type: type[BaseException],
        exc: BaseException,
        tb: types.TracebackType | None,
    ) -> None:
        structlog.get_logger().error("unhandled_exception", exc_info=(exc_type, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None:
            return
        structlog.get_logger().error(
            "unhandled_exception",
            thread=args.thread.name if args.thread else None,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = hook
    threading.excepthook = thread_hook


def get_logger(**initial: Any) -> Any:
    """A bound logger (typed loosely: structlog's bound loggers are dynamic)."""
    return structlog.get_logger(**initial)
