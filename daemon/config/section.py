"""One mapping of the configuration file, read through typed getters that name the key.

:class:`Section` checks a mapping's keys against the allowed ones (suggesting the closest
on a typo) and hands out strings, choices, numbers, integers and paths, raising
:class:`~daemon.errors.ConfigError` with the dotted key (``retry.max_delay``,
``inboxes[1].path``) when a value has the wrong type or range. :func:`kind_of` names a
value's YAML type for those messages. Used by :mod:`daemon.config.load`.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

from daemon.config.environment import Expanded
from daemon.errors import ConfigError


class Section:
    """One mapping of the file with its dotted prefix: typed getters that name the key."""

    def __init__(self, data: object, prefix: str, allowed: tuple[str, ...]) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(prefix, f"expected a mapping, got {kind_of(data)}")
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
            raise ConfigError(self.key(name), f"expected a string, got {kind_of(value)}{hint}")
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
            raise ConfigError(self.key(name), f"expected a number, got {kind_of(value)}")
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
            raise ConfigError(self.key(name), f"expected an integer, got {kind_of(value)}")
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


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def kind_of(value: object) -> str:
    """A value's YAML type in words ("an integer", "nothing"), for error messages."""
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
