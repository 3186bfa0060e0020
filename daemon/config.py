"""The configuration (SPEC §3): one YAML file, validated at the edge into frozen values.

:func:`load_config` reads the file, merges a ``.env`` file under the process environment,
expands ``${NAME}`` / ``${NAME:-default}`` in every string (``$$`` is a literal ``$``),
applies the ``SENDSEVEN_*`` defaults and checks every key, type and range. Anything wrong
raises :class:`~daemon.errors.ConfigError` naming the dotted key (``retry.max_delay``,
``inboxes[1].path``) or the file, and never the token.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from daemon.caption import template_problem
from daemon.environment import Expanded, expand, merged_environment
from daemon.errors import ConfigError, os_error_text, register_secret

#: File name patterns never taken: hidden, editor backups, partial downloads, OS litter.
DEFAULT_IGNORE = (".*", "*~", "*.tmp", "*.part", "*.crdownload", "~$*", "Thumbs.db", "desktop.ini")
DEFAULT_API_URL = "https://api.sendseven.com/api/v1"

OBSERVERS = ("auto", "inotify", "polling")
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_WORKERS = 256


# Values of the right type for each placeholder, to catch a bad format spec at load time.
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


def load_config(
    path: Path | str,
    *,
    env_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    check_folders: bool = True,
) -> Config:
    """Read, expand and validate the configuration file at ``path``."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            str(path), f"cannot read the configuration: {os_error_text(error)}"
        ) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        line = f"line {error.problem_mark.line + 1}: " if error.problem_mark else ""
        # Only the problem, never the snippet: the offending line may hold the token.
        what = ", ".join(p for p in (error.context, error.problem) if p)
        raise ConfigError(str(path), f"{line}{what}") from None
    except yaml.YAMLError as error:
        raise ConfigError(str(path), f"not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"expected a YAML mapping (key: value), got {_kind(data)}")

    env = merged_environment(env_file, os.environ if environ is None else environ)
    data = {key: expand(value, str(key), env) for key, value in data.items()}
    source = source.resolve()
    return _build(data, source, env, check_folders=check_folders)


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


# --- YAML and the environment ---------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice is an error instead of a silent overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _YAML_MERGE:
                continue
            if (key_node.tag, key_node.value) in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"found the key {key_node.value!r} twice", key_node.start_mark
                )
            seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep=deep)


_YAML_MERGE = "tag:yaml.org,2002:merge"
# --- validation ---------------------------------------------------------------------------


class _Section:
    """One mapping of the file with its dotted prefix: typed getters that name the key."""

    def __init__(self, data: object, prefix: str, allowed: tuple[str, ...]) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(prefix, f"expected a mapping, got {_kind(data)}")
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(_join(prefix, str(key)), "keys must be names")
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(_join(prefix, key), f"unknown key{hint}")
        self.data: dict[str, object] = data
        self.prefix = prefix

    def key(self, name: str) -> str:
        return _join(self.prefix, name)

    def string(self, name: str) -> str | None:
        """The value stripped; null and an empty string both mean "not given"."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            hint = " (quote it)" if isinstance(value, int | float) else ""
            raise ConfigError(self.key(name), f"expected a string, got {_kind(value)}{hint}")
        return str(value).strip() or None  # str(): no Expanded leaks out

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = (self.string(name) or default).lower()
        if value not in choices:
            raise ConfigError(self.key(name), f"{value!r} is not one of {', '.join(choices)}")
        return value

    def number(
        self, name: str, default: float, *, minimum: float = 0.0, inclusive: bool = False
    ) -> float:
        value = self.optional_number(name, minimum=minimum, inclusive=inclusive)
        return default if value is None else value

    def optional_number(
        self, name: str, *, minimum: float = 0.0, inclusive: bool = False
    ) -> float | None:
        value = self.data.get(name)
        if isinstance(value, Expanded):
            value = _parse_number(value, float)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.key(name), f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise ConfigError(self.key(name), "expected a finite number")
        if value < minimum or (value == minimum and not inclusive):
            bound = ">=" if inclusive else ">"
            raise ConfigError(self.key(name), f"must be {bound} {minimum:g}, got {value:g}")
        return float(value)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.data.get(name)
        if isinstance(value, Expanded):
            value = _parse_number(value, int)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), f"expected an integer, got {_kind(value)}")
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"must be between {low} and {high}, got {value}")
        return value

    def path(self, name: str, base: Path) -> Path | None:
        value = self.string(name)
        if value is None:
            return None
        try:
            return (base / Path(value).expanduser()).resolve()
        except (RuntimeError, OSError) as error:  # an unknown ~user, a symlink loop
            raise ConfigError(self.key(name), f"cannot resolve {value!r}: {error}") from None


_TOP_KEYS = (
    "api", "spool", "inboxes", "text", "state_dir", "workers", "settle_seconds", "observer",
    "rescan_interval", "ignore", "retry", "log", "metrics", "sent_retention_days",
)  # fmt: skip
_API_KEYS = ("url", "token", "token_file", "tenant_id", "connect_timeout", "read_timeout")
_RETRY_KEYS = ("initial_delay", "max_delay", "give_up_after")


def _build(
    data: dict[str, object], source: Path, env: Mapping[str, str], *, check_folders: bool
) -> Config:
    top = _Section(data, "", _TOP_KEYS)
    base = source.parent
    api = _api(_Section(data.get("api"), "api", _API_KEYS), base, env)
    text = _template(top, "text")
    spool = top.path("spool", base)
    inboxes = _inboxes(data.get("inboxes"), base, text, spool)
    if spool is None and not inboxes:
        raise ConfigError("spool", "set spool or inboxes (or both)")
    state_dir = top.path("state_dir", base)
    if state_dir is None:
        if spool is None:
            raise ConfigError("state_dir", "required when there is no spool (for the journal)")
        state_dir = spool / ".state"
    log = _Section(data.get("log"), "log", ("format", "level"))
    config = Config(
        source=source,
        api=api,
        spool=spool,
        inboxes=inboxes,
        text=text,
        state_dir=state_dir,
        workers=top.integer("workers", 4, 1, MAX_WORKERS),
        settle_seconds=top.number("settle_seconds", 2.0, inclusive=True),
        observer=top.choice("observer", OBSERVERS, "auto"),
        rescan_interval=top.number("rescan_interval", 60.0),
        ignore=_ignore(data.get("ignore")),
        retry=_retry(_Section(data.get("retry"), "retry", _RETRY_KEYS)),
        log=LogConfig(
            format=log.choice("format", LOG_FORMATS, "json"),
            level=log.choice("level", LOG_LEVELS, "info"),
        ),
        metrics=MetricsConfig(_listen(_Section(data.get("metrics"), "metrics", ("listen",)))),
        sent_retention_days=top.optional_number("sent_retention_days"),
    )
    if check_folders:
        _check_folders(config)
    return config


def _retry(section: _Section) -> RetryConfig:
    retry = RetryConfig(
        initial_delay=section.number("initial_delay", 1.0),
        max_delay=section.number("max_delay", 300.0),
        give_up_after=section.number("give_up_after", 86400.0),
    )
    if retry.max_delay < retry.initial_delay:
        raise ConfigError("retry.max_delay", "must be >= retry.initial_delay")
    return retry


def _api(section: _Section, base: Path, env: Mapping[str, str]) -> ApiConfig:
    # The token first, so that it is redacted from every error that follows.
    token = section.string("token")
    token_file = section.path("token_file", base)
    if token is not None and token_file is not None:
        register_secret(token)
        raise ConfigError("api.token_file", "set api.token or api.token_file, not both")
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                "api.token_file", f"cannot read {token_file}: {os_error_text(error)}"
            ) from None
        if not token:
            raise ConfigError("api.token_file", f"{token_file} is empty")
    token = token or env.get("SENDSEVEN_API_TOKEN", "").strip()
    if not token:
        raise ConfigError(
            "api.token", "not set: set api.token, api.token_file or SENDSEVEN_API_TOKEN"
        )
    register_secret(token)
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError("api.token", "contains whitespace or control characters")

    url = section.string("url") or env.get("SENDSEVEN_API_URL", "").strip() or DEFAULT_API_URL
    url = url.rstrip("/")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError as error:
        raise ConfigError("api.url", f"not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("api.url", f"expected an http(s) URL with a host, got {url!r}")

    tenant_id = section.string("tenant_id") or env.get("SENDSEVEN_TENANT_ID", "").strip()
    if not tenant_id:
        raise ConfigError("api.tenant_id", "not set: set api.tenant_id or SENDSEVEN_TENANT_ID")
    return ApiConfig(
        url=url,
        token=token,
        tenant_id=tenant_id,
        connect_timeout=section.number("connect_timeout", 10.0),
        read_timeout=section.number("read_timeout", 120.0),
    )


def _inboxes(
    value: object, base: Path, default_text: str | None, spool: Path | None
) -> tuple[InboxConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("inboxes", f"expected a list, got {_kind(value)}")
    inboxes: list[InboxConfig] = []
    first_key: dict[Path, str] = {}
    for index, item in enumerate(value):
        section = _Section(item, f"inboxes[{index}]", ("path", "conversation_id", "text"))
        path = section.path("path", base)
        if path is None:
            raise ConfigError(section.key("path"), "required")
        if path in first_key:
            raise ConfigError(section.key("path"), f"same folder as {first_key[path]}")
        if path == spool:
            raise ConfigError(section.key("path"), "is the spool itself; use a subfolder")
        first_key[path] = section.key("path")
        conversation_id = section.string("conversation_id")
        if conversation_id is None:
            raise ConfigError(section.key("conversation_id"), "required (a non-empty string)")
        own_text = _template(section, "text")
        # An explicit empty text means "no caption here" even when a default exists.
        no_caption = own_text is None and isinstance(section.data.get("text"), str)
        text = None if no_caption else own_text or default_text
        inboxes.append(InboxConfig(path, conversation_id, text, path.name, from_spool=False))
    return tuple(inboxes)


def _template(section: _Section, name: str) -> str | None:
    template = section.string(name)
    problem = None if template is None else template_problem(template)
    if problem is not None:
        raise ConfigError(section.key(name), problem)
    return template


def _ignore(value: object) -> tuple[str, ...]:
    # A user-given list replaces the defaults, so that a default can be switched off.
    if value is None:
        return DEFAULT_IGNORE
    if not isinstance(value, list):
        raise ConfigError("ignore", f"expected a list of patterns, got {_kind(value)}")
    for index, pattern in enumerate(value):
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(
                f"ignore[{index}]", "expected a non-empty string (a file name pattern)"
            )
    return tuple(dict.fromkeys(str(pattern) for pattern in value))


#: Where metrics listen when only a port is given: never beyond this machine by default.
METRICS_DEFAULT_HOST = "127.0.0.1"


def _listen(section: _Section) -> tuple[str, int] | None:
    raw = section.data.get("listen")
    if isinstance(raw, int) and not isinstance(raw, bool):  # `listen: 9464`
        raw = str(raw)
        section.data["listen"] = raw
    value = section.string("listen")
    if value is None:
        return None
    if value.isdigit() or (value.startswith(":") and value[1:].isdigit()):
        value = f"{METRICS_DEFAULT_HOST}:{value.lstrip(':')}"
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\]:(?P<port6>\d+)|(?P<host>[^:\[\]]+):(?P<port>\d+)", value
    )
    if match is None:
        raise ConfigError(
            "metrics.listen",
            f"expected host:port (e.g. 127.0.0.1:9464 or [::1]:9464), got {value!r}",
        )
    host = match["v6"] or match["host"]
    port = int(match["port6"] or match["port"])
    if not 1 <= port <= 65535:
        raise ConfigError("metrics.listen", f"port must be between 1 and 65535, got {port}")
    return host, port


def _check_folders(config: Config) -> None:
    folders = [("spool", config.spool)] if config.spool else []
    folders += [(f"inboxes[{i}].path", inbox.path) for i, inbox in enumerate(config.inboxes)]
    for key, folder in folders:
        if not folder.exists():
            raise ConfigError(key, f"{folder} does not exist")
        if not folder.is_dir():
            raise ConfigError(key, f"{folder} is not a directory")
        # sent/, failed/ and the in-progress folder are created inside it.
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(key, f"{folder} is not writable by this user")
    if config.state_dir.exists() and not config.state_dir.is_dir():
        raise ConfigError("state_dir", f"{config.state_dir} is not a directory")


# --- small helpers ------------------------------------------------------------------------


def _parse_number(value: str, kind: type[int] | type[float]) -> int | float | str | None:
    """An expanded string as a number when it is one; else left for the type error."""
    text = value.strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        return value


def _format_listen(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _kind(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a mapping",
    }
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return "a string"
    return names.get(type(value), type(value).__name__)
