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
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: File name patterns never taken: hidden, editor backups, partial downloads, OS litter.
DEFAULT_IGNORE = (".*", "*~", "*.tmp", "*.part", "*.crdownload", "~$*", "Thumbs.db", "desktop.ini")
DEFAULT_API_URL = "https://api.sendseven.com/api/v1"

OBSERVERS = ("auto", "inotify", "polling")
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_WORKERS = 256
#: Deepest ``max_depth`` accepted: far beyond any real folder tree.
MAX_DEPTH_LIMIT = 1024
#: The named group of ``route`` that picks the conversation.
ROUTE_GROUP = "conversation_id"

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


class ArchiveLayout(StrEnum):
    """How ``sent/`` and ``failed/`` are laid out (README, "Archive layout")."""

    FLAT = "flat"
    """Every file directly in ``sent/`` (or ``failed/``)."""
    DAILY = "daily"
    """``sent/YYYY/MM/DD/name``: the UTC day the file was archived."""
    MONTHLY = "monthly"
    """``sent/YYYY/MM/name``: the UTC month the file was archived."""


class Duplicates(StrEnum):
    """What happens to bytes already sent to the same conversation."""

    SKIP = "skip"
    """Not uploaded: archived into ``failed/`` with reason ``duplicate``."""
    SEND = "send"
    """Sent again."""


@dataclass(frozen=True, kw_only=True)
class IntakeSettings:
    """How files are taken from an inbox and archived: each is a top-level default that an
    entry under ``inboxes:`` may override (spool subfolders use the top-level values)."""

    settle_seconds: float = 2.0
    """A file must keep its size and mtime this long before it is taken."""
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    """fnmatch patterns matched against file names: never taken."""
    recursive: bool = False
    """Files in subfolders of the inbox are taken too."""
    max_depth: int = 8
    """With ``recursive``: how deep (1 = direct subfolders only)."""
    include: tuple[str, ...] = ()
    """fnmatch patterns: only names matching one are taken; empty takes every name."""
    done_marker: str | None = None
    """A file is taken once its marker exists: ``{name}.done``/``{stem}.ok`` per file, a
    fixed name such as ``READY`` per batch; None: settling alone decides."""
    duplicates: Duplicates = Duplicates.SKIP
    """Identical bytes sent to the same conversation within ``duplicate_window``."""
    duplicate_window: float = 86400.0
    """Seconds a sent file's sha256 is remembered for the duplicate check."""
    route: str | None = None
    """A regex on the file name whose named group ``conversation_id`` picks the
    conversation (checked at load: it compiles and has that group); None: no routing."""
    archive_layout: ArchiveLayout = ArchiveLayout.FLAT
    """Flat ``sent/``/``failed/``, or dated subfolders by day or month."""


def intake_of(settings: IntakeSettings) -> dict[str, Any]:
    """The intake settings of ``settings`` (a Config or an InboxConfig) as keywords."""
    return {one.name: getattr(settings, one.name) for one in dataclasses.fields(IntakeSettings)}


@dataclass(frozen=True)
class InboxConfig(IntakeSettings):
    """One watched folder, the conversation its files go to, and its effective intake
    settings (its own, else the top-level ones)."""

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
class Config(IntakeSettings):
    """Everything the daemon needs, validated. Its intake settings are the defaults of
    every inbox."""

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
    max_write_pause: float = 3600.0
    """Seconds a file may be held open for writing without a write before it is taken
    anyway (inotify only: elsewhere nothing says a writer holds it open)."""
    observer: str = field(default="auto", metadata=RESTART)
    """``auto``, ``inotify`` or ``polling``."""
    rescan_interval: float = 60.0
    """Seconds between full rescans of every inbox."""
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
