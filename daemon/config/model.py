"""The configuration's values and its schema: frozen dataclasses, each default written once.

The dataclasses below *are* the schema of the YAML file: the keys a mapping may hold are
its fields (:func:`file_keys`), a key's default is its field's default (:func:`default_of`),
and what a reload changed is compared field by field (:func:`changed_keys`). Field metadata
says where the file differs from the values: a field read from other keys than its name
(``api.token`` also comes from ``api.token_file``), one that is not in the file at all
(``source``), one that only takes effect after a restart (``workers``).

Reading and checking the file is :mod:`daemon.config.load` (with
:mod:`daemon.config.section` for the typed getters). Nothing here touches the filesystem;
which folders are inboxes right now is :mod:`daemon.watch.inboxes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: File name patterns never taken: hidden, editor backups, partial downloads, OS litter.
DEFAULT_IGNORE = (".*", "*~", "*.tmp", "*.part", "*.crdownload", "~$*", "Thumbs.db", "desktop.ini")
DEFAULT_API_URL = "https://api.sendseven.com/api/v1"

OBSERVERS = ("auto", "inotify", "polling")
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_WORKERS = 256

#: Where metrics listen when only a port is given: never beyond this machine by default.
METRICS_DEFAULT_HOST = "127.0.0.1"

# Field metadata (see the module docstring).
_KEYS = "sendseven_watch.keys"
_RESTART = "sendseven_watch.restart"

#: A field that is not a key of the file (it is derived, or set by the program).
NOT_IN_FILE: Mapping[str, object] = MappingProxyType({_KEYS: ()})
#: A field that a reload (SIGHUP) reports but applies only at the next start.
RESTART: Mapping[str, object] = MappingProxyType({_RESTART: True})


@dataclass(frozen=True)
class ApiConfig:
    """Where and as whom to talk to the SendSeven API."""

    url: str
    """Base URL, without a trailing slash."""
    token: str = field(repr=False, metadata={_KEYS: ("token", "token_file")})
    """The bearer token (from ``token`` or ``token_file``); a secret, so never in a repr,
    log line or error."""
    tenant_id: str
    """Sent as ``X-Tenant-ID``."""
    connect_timeout: float = 10.0
    """Seconds to wait for a connection (requests also uses it while the body is sent)."""
    read_timeout: float = 120.0
    """Seconds to wait for each chunk of the reply."""
    ca_bundle: Path | None = None
    """CA certificates (a PEM file or a hashed folder) to trust for the API's TLS, for a
    private CA or a TLS-inspecting proxy; None: the environment's, else the system store."""


@dataclass(frozen=True)
class InboxConfig:
    """One watched folder and the conversation its files go to."""

    path: Path
    """Absolute, resolved."""
    conversation_id: str
    """Where its files are sent."""
    text: str | None
    """The caption template in force here: its own, else the top-level ``text``, else None."""
    name: str = field(metadata=NOT_IN_FILE)
    """What logs and ``status`` call it: the folder's name."""
    from_spool: bool = field(default=False, metadata=NOT_IN_FILE)
    """True for a ``<spool>/<conversation_id>/`` folder, False for an explicit inbox."""


@dataclass(frozen=True)
class RetryConfig:
    """Backoff for transient errors (429, 5xx, network)."""

    initial_delay: float = 1.0
    """Seconds before the first retry; doubled each attempt, with jitter."""
    max_delay: float = 300.0
    """Upper bound of one wait, in seconds."""
    give_up_after: float = 86400.0
    """Seconds after a file's first failed attempt before it goes to failed/."""


@dataclass(frozen=True)
class LogConfig:
    """How log lines look."""

    format: str = "json"
    """``json`` (one object per line, for journald) or ``console``."""
    level: str = "info"
    """``debug``, ``info``, ``warning`` or ``error``."""


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint."""

    listen: tuple[str, int] | None = None
    """(host, port) to serve /metrics and /healthz on; None: no endpoint."""


@dataclass(frozen=True)
class Config:
    """Everything the daemon needs, validated."""

    source: Path | None = field(metadata=NOT_IN_FILE)
    """The configuration file, resolved (None when built in code)."""
    api: ApiConfig
    """URL, credentials and timeouts."""
    spool: Path | None
    """Every non-hidden subfolder of it is an inbox for the conversation of that name."""
    inboxes: tuple[InboxConfig, ...]
    """The explicit inboxes; :func:`daemon.watch.inboxes.all_inboxes` adds the spool's."""
    text: str | None
    """The default caption template."""
    state_dir: Path = field(metadata=RESTART)
    """Where the journal lives."""
    workers: int = field(default=4, metadata=RESTART)
    """Files in flight at once, across conversations."""
    settle_seconds: float = 2.0
    """A file must keep its size and mtime this long before it is taken."""
    max_write_pause: float = 3600.0
    """Seconds a file may be held open for writing without a write before it is taken
    anyway (inotify only: elsewhere nothing says a writer holds it open)."""
    observer: str = field(default="auto", metadata=RESTART)
    """``auto``, ``inotify`` or ``polling``."""
    rescan_interval: float = 60.0
    """Seconds between full rescans of every inbox."""
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    """fnmatch patterns matched against file names."""
    retry: RetryConfig = field(default_factory=RetryConfig)
    """Backoff for transient errors."""
    log: LogConfig = field(default_factory=LogConfig)
    """Format and level of the log lines."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig, metadata=RESTART)
    """The Prometheus endpoint, if any."""
    sent_retention_days: float | None = None
    """Prune files in sent/ older than this; None keeps them."""


def file_keys(schema: type[DataclassInstance]) -> tuple[str, ...]:
    """The keys a YAML mapping for ``schema`` may hold, in field order."""
    keys: list[str] = []
    for one in dataclasses.fields(schema):
        keys.extend(one.metadata.get(_KEYS, (one.name,)))
    return tuple(keys)


def default_of(schema: type[DataclassInstance], name: str) -> object:
    """The default of ``schema``'s field ``name`` (LookupError: the field has none)."""
    for one in dataclasses.fields(schema):
        if one.name != name:
            continue
        if one.default is not dataclasses.MISSING:
            return one.default
        if one.default_factory is not dataclasses.MISSING:
            return one.default_factory()
        raise LookupError(f"{schema.__name__}.{name} has no default")
    raise LookupError(f"{schema.__name__} has no field {name}")


def changed_keys(old: Config, new: Config) -> set[str]:
    """The top-level keys of the file whose values differ (``api`` covers a new token)."""
    return {
        one.name
        for one in dataclasses.fields(Config)
        if one.metadata.get(_KEYS, (one.name,)) and getattr(old, one.name) != getattr(new, one.name)
    }


def restart_keys(changes: set[str]) -> list[str]:
    """Those of ``changes`` that a running daemon applies only at its next start."""
    return [
        one.name
        for one in dataclasses.fields(Config)
        if one.metadata.get(_RESTART) and one.name in changes
    ]
