"""The environment a configuration is read in: ``.env`` files and ``${NAME}`` expansion.

As in SendSeven's own examples, a ``.env`` file (``KEY=VALUE`` lines, ``export``, comments,
quotes; no expansion inside) supplies variables; variables already set win. ``${NAME}`` and
``${NAME:-default}`` expand in every string of the configuration; ``$$`` is a literal ``$``;
an unset variable without a default is an error that names the key it appeared in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from daemon.config.problems import Problems
from daemon.errors import ConfigError, os_error_text

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTED = {
    '"': re.compile(r'"((?:[^"\\]|\\.)*)"\s*(?:#.*)?'),
    "'": re.compile(r"'([^']*)'\s*(?:#.*)?"),
}
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}

# ``$$`` (a literal ``$``), ``${NAME}``, ``${NAME:-default}``, or a malformed ``${``.
_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|(\{))")


def load_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=VALUE`` lines, ``export``, comments, quotes; no expansion."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), f"cannot read the env file: {os_error_text(error)}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"^export\s+", "", line)
        key, equals, rest = line.partition("=")
        key, rest = key.strip(), rest.strip()
        if not equals or not _KEY.fullmatch(key):
            raise ConfigError(str(path), f"line {number}: expected KEY=VALUE")
        if rest[:1] in ("'", '"'):
            quoted = _QUOTED[rest[0]].fullmatch(rest)
            if quoted is None:
                raise ConfigError(str(path), f"line {number}: unterminated {rest[0]} quote")
            value = quoted[1]
            if rest[0] == '"':
                value = _ESCAPE.sub(lambda m: _ESCAPES.get(m[1], m[0]), value)
        else:
            # As in the shell, `#` starts a comment only after whitespace.
            value = re.split(r"\s+#", rest, maxsplit=1)[0]
        values[key] = value
    return values


class Expanded(str):
    """A string that came out of ``${...}``: numeric keys may parse it (``${WORKERS:-4}``)."""

    __slots__ = ()


def merged_environment(env_file: Path | str | None, environ: Mapping[str, str]) -> dict[str, str]:
    if env_file is not None:
        if not Path(env_file).is_file():
            raise ConfigError(str(env_file), "env file not found")
        dotenv = load_env_file(Path(env_file))
    elif Path(".env").is_file():
        dotenv = load_env_file(Path(".env"))
    else:
        dotenv = {}
    return {**dotenv, **environ}  # the real environment wins, as with docker compose


def expand(value: object, key: str, env: Mapping[str, str], problems: Problems) -> object:
    """``value`` with ``${...}`` expanded in every string (``key`` names it in errors).

    A string that cannot be expanded is recorded in ``problems`` and becomes None, so that
    the rest of the file is still checked.
    """
    if isinstance(value, dict):
        return {
            k: expand(v, f"{key}.{k}" if key else str(k), env, problems) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand(item, f"{key}[{i}]", env, problems) for i, item in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    try:
        return _substitute(value, key, env)
    except ConfigError as error:
        problems.add(error)
        return None


def _substitute(value: str, key: str, env: Mapping[str, str]) -> str:
    substituted = False

    def replace(match: re.Match[str]) -> str:
        nonlocal substituted
        dollar, name, default, broken = match.groups()
        if dollar:
            return "$"
        if broken:
            raise ConfigError(key, "malformed ${...}: use ${NAME} or ${NAME:-default} ($$ for $)")
        substituted = True
        found = env.get(name, "")
        if found:
            return found
        if default is not None:
            return default
        if name in env:
            return ""  # set but empty, as in the shell
        raise ConfigError(key, f"environment variable {name} is not set")

    result = _VARIABLE.sub(replace, value)
    return Expanded(result) if substituted else result
