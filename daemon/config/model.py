"""The configuration (SPEC §3): one YAML file, validated at the edge into frozen values.

:func:`load_config` reads the file, merges a ``.env`` file under the process environment,
expands ``${NAME}`` / ``${NAME:-default}`` in every string (``$$`` is a literal ``$``),
applies the ``SENDSEVEN_*`` defaults and checks every key, type and range. Anything wrong
raises :class:`~daemon.errors.ConfigError` naming the dotted key (``retry.max_delay``,
``inboxes[1].path``) or the file, and never the token.

This module holds the values. Reading and checking the file is :mod:`daemon.config.load`
(with :mod:`daemon.config.section` for the typed getters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: File name patterns never taken: hidden, editor backups, partial downloads, OS litter.
DEFAULT_IGNORE = (".*", "*~", "*.tmp", "*.part", "*.crdownload", "~$*", "Thumbs.db", "desktop.ini")
DEFAULT_API_URL = "https://api.sendseven.com/api/v1"

OBSERVERS = ("auto", "inotify", "polling")
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_WORKERS = 256

#: Where metrics listen when only a port is given: never beyond this machine by default.
METRICS_DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ApiConfig:
    """Where and as whom to talk to the SendSeven API."""

    url: str
    """Base URL, without a trailing slash."""
    token: str = field(repr=False)
    """The bearer token; a secret, so never in a repr, log line or error."""
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
    name: str
    """What logs and ``status`` call it: the folder's name."""
    from_spool: bool = False
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

    source: Path | None
    """The configuration file, resolved (None when built in code)."""
    api: ApiConfig
    """URL, credentials and timeouts."""
    spool: Path | None
    """Every non-hidden subfolder of it is an inbox for the conversation of that name."""
    inboxes: tuple[InboxConfig, ...]
    """The explicit inboxes; :meth:`all_inboxes` adds the spool's."""
    text: str | None
    """The default caption template."""
    state_dir: Path
    """Where the journal lives."""
    workers: int = 4
    """Files in flight at once, across conversations."""
    settle_seconds: float = 2.0
    """A file must keep its size and mtime this long before it is taken."""
    observer: str = "auto"
    """``auto``, ``inotify`` or ``polling``."""
    rescan_interval: float = 60.0
    """Seconds between full rescans of every inbox."""
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    """fnmatch patterns matched against file names."""
    retry: RetryConfig = field(default_factory=RetryConfig)
    """Backoff for transient errors."""
    log: LogConfig = field(default_factory=LogConfig)
    """Format and level of the log lines."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """The Prometheus endpoint, if any."""
    sent_retention_days: float | None = None
    """Prune files in sent/ older than this; None keeps them."""

    def all_inboxes(self) -> list[InboxConfig]:
        """The explicit inboxes plus every spool subfolder that exists now, sorted by path."""
        found = {inbox.path: inbox for inbox in self.inboxes}
        if self.spool is not None:
            try:
                entries = list(self.spool.iterdir())
            except OSError:
                entries = []  # a spool that went away has no inboxes; check-config reports it
            for entry in entries:
                inbox = self.spool_inbox(entry)
                if inbox is not None and inbox.path not in found:
                    found[inbox.path] = inbox
        return sorted(found.values(), key=lambda inbox: inbox.path)

    def spool_inbox(self, folder: Path) -> InboxConfig | None:
        """The inbox for a spool subfolder; None if it is hidden, elsewhere or not a real folder."""
        folder = folder.absolute()  # not resolve(): a symlinked subfolder must stay one
        if self.spool is None or folder.parent != self.spool or folder.name.startswith("."):
            return None
        if self.state_dir.is_relative_to(folder):
            return None  # a state_dir set inside the spool is not a conversation
        for inbox in self.inboxes:
            if inbox.path == folder:
                return inbox
        # A symlinked subfolder could point anywhere (even at another inbox): never follow it.
        if folder.is_symlink() or not folder.is_dir():
            return None
        return InboxConfig(folder, folder.name, self.text, folder.name, from_spool=True)


def describe(config: Config) -> list[str]:
    """Human lines for ``check-config``: what would be watched, and how. Never the token."""
    lines = [
        f"config: {config.source or '(built in code)'}",
        f"api: {config.api.url} (tenant {config.api.tenant_id}, token set)",
        f"timeouts: connect {config.api.connect_timeout:g}s, read {config.api.read_timeout:g}s",
        f"spool: {config.spool or '(none)'}",
        f"state_dir: {config.state_dir}",
    ]
    inboxes = config.all_inboxes()
    lines.append(f"inboxes: {len(inboxes)}")
    for inbox in inboxes:
        origin = " (spool)" if inbox.from_spool else ""
        caption = f" text={inbox.text!r}" if inbox.text else ""
        lines.append(f"  {inbox.path} -> {inbox.conversation_id}{origin}{caption}")
    retention = config.sent_retention_days
    lines += [
        f"observer: {config.observer}, rescan every {config.rescan_interval:g}s, "
        f"settle {config.settle_seconds:g}s",
        f"workers: {config.workers}",
        f"ignore: {' '.join(config.ignore) or '(nothing)'}",
        f"retry: {config.retry.initial_delay:g}s doubling to {config.retry.max_delay:g}s, "
        f"give up after {config.retry.give_up_after:g}s",
        f"log: {config.log.format}, {config.log.level}",
        "metrics: " + (_format_listen(config.metrics.listen) if config.metrics.listen else "off"),
        "sent retention: " + (f"{retention:g} days" if retention is not None else "keep forever"),
    ]
    return lines


def _format_listen(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
