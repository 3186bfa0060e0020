"""Reading and checking the configuration file: YAML in, a validated Config out.

:func:`load_config` parses the YAML (a key given twice is an error), expands the
environment into every string, builds each part of :class:`~daemon.config.Config` from
its :class:`~daemon.config.section.Section` (every key, type and range checked) and finally
checks that the folders exist and are writable.

Every problem of the file is reported at once: each is recorded and checking goes on, and
:class:`~daemon.errors.ConfigErrors` carries them all. Only a file that cannot be read or
parsed (or is not a mapping), or a bad ``.env`` file, stops at its first problem.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from daemon.config.caption import template_problem
from daemon.config.environment import expand, merged_environment
from daemon.config.model import (
    DEFAULT_API_URL,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_DEPTH_LIMIT,
    MAX_WORKERS,
    METRICS_DEFAULT_HOST,
    OBSERVERS,
    ROUTE_GROUP,
    ApiConfig,
    ArchiveLayout,
    Config,
    Duplicates,
    InboxConfig,
    IntakeSettings,
    LogConfig,
    MetricsConfig,
    RetryConfig,
    intake_of,
)
from daemon.config.problems import Problems
from daemon.config.section import Section, kind_of
from daemon.errors import ConfigError, os_error_text, register_secret


def load_config(
    path: Path | str,
    *,
    env_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    check_folders: bool = True,
) -> Config:
    """Read, expand and validate the configuration file at ``path``.

    Raises :class:`~daemon.errors.ConfigErrors` naming every problem found (its ``key`` is
    the first one's), or a :class:`~daemon.errors.ConfigError` when the file cannot be
    read or parsed at all.
    """
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
        raise ConfigError(str(path), f"expected a YAML mapping (key: value), got {kind_of(data)}")

    env = merged_environment(env_file, os.environ if environ is None else environ)
    problems = Problems()
    data = {key: expand(value, str(key), env, problems) for key, value in data.items()}
    config = _build(data, source.resolve(), env, problems, check_folders=check_folders)
    problems.sort([str(key) for key in data])
    problems.check()
    return config


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


def _build(
    data: dict[Any, object],
    source: Path,
    env: Mapping[str, str],
    problems: Problems,
    *,
    check_folders: bool,
) -> Config:
    top = Section(data, "", Config, problems)
    base = source.parent
    # The api first: its token is then redacted from every error that follows.
    api = _api(Section(data.get("api"), "api", ApiConfig, problems), base, env)
    intake = IntakeSettings(**_intake(top))
    text = _template(top, "text", _route_groups(intake.route))
    spool = top.path("spool", base)
    # Each valid inbox with its key: ``inboxes[2].path`` stays that after a bad inboxes[1].
    keyed = _inboxes(data.get("inboxes"), base, spool, problems, text=text, defaults=intake)
    inboxes = tuple(inbox for _, inbox in keyed)
    state_dir = top.path("state_dir", base)
    if spool is None and not problems.has("spool"):
        if not inboxes and not problems.has("inboxes"):
            problems.add(ConfigError("spool", "set spool or inboxes (or both)"))
        elif state_dir is None and not problems.has("state_dir"):
            problems.add(
                ConfigError("state_dir", "required when there is no spool (for the journal)")
            )
    if state_dir is None and spool is not None:
        state_dir = spool / ".state"
    log = Section(data.get("log"), "log", LogConfig, problems)
    metrics = Section(data.get("metrics"), "metrics", MetricsConfig, problems)
    config = Config(
        source=source,
        api=api,
        spool=spool,
        inboxes=inboxes,
        text=text,
        state_dir=state_dir or Path(),  # no state_dir is a problem on record, raised below
        workers=top.integer("workers", 1, MAX_WORKERS),
        max_write_pause=top.number("max_write_pause"),
        observer=top.choice("observer", OBSERVERS),
        rescan_interval=top.number("rescan_interval"),
        retry=_retry(Section(data.get("retry"), "retry", RetryConfig, problems)),
        log=LogConfig(
            format=log.choice("format", LOG_FORMATS), level=log.choice("level", LOG_LEVELS)
        ),
        metrics=MetricsConfig(_listen(metrics)),
        sent_retention_days=top.optional_number("sent_retention_days"),
        **intake_of(intake),
    )
    if check_folders:
        folders = [("spool", spool)] if spool else []
        _check_folders([*folders, *((key, inbox.path) for key, inbox in keyed)], problems)
        # A state_dir derived from a broken spool would only repeat the spool's problem.
        if state_dir is not None and not problems.has("spool", "state_dir"):
            with problems.collect():
                _check_state_dir(state_dir)
    return config


def _retry(section: Section) -> RetryConfig:
    retry = RetryConfig(
        initial_delay=section.number("initial_delay"),
        max_delay=section.number("max_delay"),
        give_up_after=section.number("give_up_after"),
    )
    both_fine = not (section.failed("initial_delay") or section.failed("max_delay"))
    if both_fine and retry.max_delay < retry.initial_delay:
        section.problems.add(ConfigError("retry.max_delay", "must be >= retry.initial_delay"))
    return retry


def _api(section: Section, base: Path, env: Mapping[str, str]) -> ApiConfig:
    problems = section.problems
    # The token first, so that it is redacted from every error that follows.
    token = section.string("token")
    register_secret(token)
    token_file = section.path("token_file", base)
    if token is not None and token_file is not None:
        problems.add(ConfigError("api.token_file", "set api.token or api.token_file, not both"))
    elif token_file is not None:
        token = _read_token(token_file, problems)
        register_secret(token)
    if not token and not problems.has("api.token", "api.token_file"):
        token = env.get("SENDSEVEN_API_TOKEN", "").strip()
        register_secret(token)
        if not token and not section.failed("token"):
            problems.add(
                ConfigError(
                    "api.token", "not set: set api.token, api.token_file or SENDSEVEN_API_TOKEN"
                )
            )
    token = token or ""
    if any(c.isspace() or not c.isprintable() for c in token):
        problems.add(ConfigError("api.token", "contains whitespace or control characters"))

    url = section.string("url") or env.get("SENDSEVEN_API_URL", "").strip() or DEFAULT_API_URL
    url = url.rstrip("/")
    with problems.collect():
        _check_url(url)

    tenant_id = section.string("tenant_id") or env.get("SENDSEVEN_TENANT_ID", "").strip()
    if not tenant_id and not section.failed("tenant_id"):
        problems.add(
            ConfigError("api.tenant_id", "not set: set api.tenant_id or SENDSEVEN_TENANT_ID")
        )
    return ApiConfig(
        url=url,
        token=token,
        tenant_id=tenant_id or "",
        connect_timeout=section.number("connect_timeout"),
        read_timeout=section.number("read_timeout"),
        ca_bundle=_ca_bundle(section, base),
    )


def _read_token(token_file: Path, problems: Problems) -> str | None:
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        message = f"cannot read {token_file}: {os_error_text(error)}"
        problems.add(ConfigError("api.token_file", message))
        return None
    if not token:
        problems.add(ConfigError("api.token_file", f"{token_file} is empty"))
        return None
    return token


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError as error:
        raise ConfigError("api.url", f"not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("api.url", f"expected an http(s) URL with a host, got {url!r}")


def _ca_bundle(section: Section, base: Path) -> Path | None:
    """``api.ca_bundle``: a PEM file, or a folder of hashed certificates (c_rehash)."""
    path = section.path("ca_bundle", base)
    if path is not None and not (path.is_file() or path.is_dir()):
        section.problems.add(ConfigError("api.ca_bundle", f"{path} is not a file or folder"))
        return None
    return path


def _inboxes(
    value: object,
    base: Path,
    spool: Path | None,
    problems: Problems,
    *,
    text: str | None,
    defaults: IntakeSettings,
) -> list[tuple[str, InboxConfig]]:
    """The explicit inboxes that are fine, each with the key of its path (the problems of
    the others are recorded). Each takes the caption and the intake settings it does not
    set from ``text`` and ``defaults``."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(ConfigError("inboxes", f"expected a list, got {kind_of(value)}"))
        return []
    inboxes: list[tuple[str, InboxConfig]] = []
    first_key: dict[Path, str] = {}
    for index, item in enumerate(value):
        section = Section(item, f"inboxes[{index}]", InboxConfig, problems, inherited=defaults)
        path = section.path("path", base)
        if path is None:
            if not section.failed("path"):
                problems.add(ConfigError(section.key("path"), "required"))
        elif path in first_key:
            problems.add(ConfigError(section.key("path"), f"same folder as {first_key[path]}"))
        elif path == spool:
            problems.add(ConfigError(section.key("path"), "is the spool itself; use a subfolder"))
        else:
            first_key[path] = section.key("path")
        conversation_id = section.string("conversation_id")
        if conversation_id is None and not section.failed("conversation_id"):
            problems.add(
                ConfigError(section.key("conversation_id"), "required (a non-empty string)")
            )
        intake = _intake(section)
        groups = _route_groups(intake["route"])
        own_text = _template(section, "text", groups)
        # An explicit empty text means "no caption here" even when a default exists.
        no_caption = own_text is None and isinstance(section.data.get("text"), str)
        caption = None if no_caption else own_text or text
        if caption is not None and own_text is None:
            problem = template_problem(caption, groups)  # the top-level text, for this route
            if problem is not None:
                problems.add(
                    ConfigError(section.key("route"), f"with the top-level text: {problem}")
                )
        if path is not None and conversation_id is not None and not problems.has(section.prefix):
            inbox = InboxConfig(
                path, conversation_id, caption, path.name, from_spool=False, **intake
            )
            inboxes.append((section.key("path"), inbox))
    return inboxes


def _intake(section: Section) -> dict[str, Any]:
    """The intake settings of the top level or of one inbox (which inherits what it does
    not set from the top level; ``null`` there switches ``done_marker``/``route`` off)."""
    values: dict[str, Any] = {
        "settle_seconds": section.number("settle_seconds", inclusive=True),
        "ignore": _patterns(section, "ignore", "a list of patterns"),
        "recursive": section.boolean("recursive"),
        "max_depth": section.integer("max_depth", 1, MAX_DEPTH_LIMIT),
        "include": _patterns(section, "include", "a list of globs"),
        "done_marker": _done_marker(section),
        "duplicates": Duplicates(section.choice("duplicates", tuple(Duplicates))),
        "duplicate_window": section.number("duplicate_window"),
        "route": _route(section),
        "archive_layout": ArchiveLayout(section.choice("archive_layout", tuple(ArchiveLayout))),
    }
    for name in ("done_marker", "route"):
        if section.inherited is not None and not section.given(name):
            values[name] = getattr(section.inherited, name)
    return values


def _patterns(section: Section, name: str, what: str) -> tuple[str, ...]:
    """A list of fnmatch patterns; a list given replaces the default (or inherited) one, so
    that a default can be switched off."""
    value = section.data.get(name)
    default = section.default(name, tuple)
    if value is None:
        return default
    if not isinstance(value, list):
        section.problems.add(
            ConfigError(section.key(name), f"expected {what}, got {kind_of(value)}")
        )
        return default
    patterns: list[str] = []
    for index, pattern in enumerate(value):
        if isinstance(pattern, str) and pattern:
            patterns.append(str(pattern))
        else:
            message = "expected a non-empty string (a file name pattern)"
            section.problems.add(ConfigError(f"{section.key(name)}[{index}]", message))
    return tuple(dict.fromkeys(patterns))


#: The placeholders of a per-file ``done_marker``.
MARKER_PLACEHOLDERS = ("name", "stem")


def _done_marker(section: Section) -> str | None:
    """A file name: a template with ``{name}``/``{stem}`` (per file), or fixed (per batch)."""
    key = section.key("done_marker")
    raw = section.data.get("done_marker")
    if isinstance(raw, str) and not raw.strip():
        section.problems.add(ConfigError(key, "must be a file name (null: no marker)"))
        return None
    marker = section.string("done_marker")
    if marker is None:
        return None
    problem = _marker_problem(marker)
    if problem is not None:
        section.problems.add(ConfigError(key, problem))
        return None
    return marker


def _marker_problem(marker: str) -> str | None:
    if "/" in marker or "\0" in marker or marker in (".", ".."):
        return f"must be a file name, without '/', got {marker!r}"
    try:
        fields = [part[1:] for part in string.Formatter().parse(marker) if part[1] is not None]
    except ValueError as error:
        return f"not a valid template: {error}"
    for field, spec, conversion in fields:
        if field not in MARKER_PLACEHOLDERS or spec or conversion:
            return f"unknown placeholder {{{field}}}; known: {', '.join(MARKER_PLACEHOLDERS)}"
    if marker == "{name}":
        return "is the file's own name; add a suffix, e.g. {name}.done"
    return None


def _route(section: Section) -> str | None:
    """A regex on the file name with the named group that picks the conversation."""
    route = section.string("route")
    if route is None:
        return None
    try:
        compiled = re.compile(route)
    except re.error as error:
        section.problems.add(ConfigError(section.key("route"), f"does not compile: {error}"))
        return None
    if ROUTE_GROUP not in compiled.groupindex:
        section.problems.add(
            ConfigError(
                section.key("route"),
                f"needs a named group (?P<{ROUTE_GROUP}>...), e.g. "
                f"'^(?P<{ROUTE_GROUP}>conv_[0-9]+)__'",
            )
        )
        return None
    return route


def _route_groups(route: str | None) -> tuple[str, ...]:
    """The named groups of ``route`` a caption may use (all but ``conversation_id``)."""
    if route is None:
        return ()
    return tuple(name for name in re.compile(route).groupindex if name != ROUTE_GROUP)


def _template(section: Section, name: str, groups: tuple[str, ...] = ()) -> str | None:
    template = section.string(name)
    problem = None if template is None else template_problem(template, groups)
    if problem is not None:
        section.problems.add(ConfigError(section.key(name), problem))
        return None
    return template


def _listen(section: Section) -> tuple[str, int] | None:
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
        section.problems.add(
            ConfigError(
                "metrics.listen",
                f"expected host:port (e.g. 127.0.0.1:9464 or [::1]:9464), got {value!r}",
            )
        )
        return None
    host = match["v6"] or match["host"]
    port = int(match["port6"] or match["port"])
    if not 1 <= port <= 65535:
        section.problems.add(
            ConfigError("metrics.listen", f"port must be between 1 and 65535, got {port}")
        )
        return None
    return host, port


def _check_folders(folders: list[tuple[str, Path]], problems: Problems) -> None:
    """The folders exist and are writable: each folder's first problem is recorded."""
    for key, folder in folders:
        with problems.collect():
            _check_folder(key, folder)


def _check_folder(key: str, folder: Path) -> None:
    if not folder.exists():
        raise ConfigError(key, f"{folder} does not exist")
    if not folder.is_dir():
        raise ConfigError(key, f"{folder} is not a directory")
    # sent/, failed/ and the in-progress folder are created inside it.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(key, f"{folder} is not writable by this user")


def _check_state_dir(state_dir: Path) -> None:
    """The journal's folder: a writable folder, or one the daemon can create (it does)."""
    existing = state_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    creating = f" (to create {state_dir})" if existing != state_dir else ""
    if not existing.is_dir():
        raise ConfigError("state_dir", f"{existing} is not a directory{creating}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError("state_dir", f"{existing} is not writable by this user{creating}")
