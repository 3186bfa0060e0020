"""One mapping of the configuration file, read through typed getters that name the key.

A :class:`Section` reads one mapping against its dataclass in :mod:`daemon.config.model`:
the keys it may hold and each key's default come from the dataclass's fields. It hands out
strings, choices, booleans, numbers, integers and paths. A wrong key, type or range becomes
a :class:`~daemon.errors.ConfigError` with the dotted key (``retry.max_delay``,
``inboxes[1].path``), recorded in :class:`~daemon.config.problems.Problems`; the getter
returns the default, so that reading goes on and one run reports every problem of the
file. An inbox's section inherits its defaults from the top level (``inherited``).
:func:`kind_of` names a value's YAML type for those messages. Used by
:mod:`daemon.config.load`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from daemon.config.environment import Expanded
from daemon.config.model import default_of, file_keys
from daemon.config.problems import Problems
from daemon.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")


class Section:
    """One mapping of the file with its dotted prefix: typed getters that name the key."""

    def __init__(
        self,
        data: object,
        prefix: str,
        schema: type[DataclassInstance],
        problems: Problems,
        *,
        inherited: object | None = None,
    ) -> None:
        self.prefix = prefix
        self.schema = schema
        self.problems = problems
        #: Where a key that is not given takes its value from, when it has that attribute
        #: (an inbox: the top-level settings); else the dataclass's default.
        self.inherited = inherited
        #: The value is not a mapping at all: what is "missing" from it is not worth saying.
        self.broken = False
        #: Keys suggested for a misspelt one: not to be reported missing as well.
        self.meant: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            problems.add(ConfigError(prefix, f"expected a mapping, got {kind_of(data)}"))
            self.broken = True
            data = {}
        allowed = file_keys(schema)
        for key in data:
            if not isinstance(key, str):
                problems.add(ConfigError(self.key(str(key)), "keys must be names"))
            elif key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.meant.update(close)
                problems.add(ConfigError(self.key(key), f"unknown key{hint}"))
        self.data: dict[str, object] = data

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def failed(self, name: str) -> bool:
        """Whether ``name`` (or this whole section) already has a problem on record."""
        return self.broken or name in self.meant or self.problems.has(self.key(name))

    def given(self, name: str) -> bool:
        """Whether the mapping holds ``name`` at all (null included)."""
        return name in self.data

    def default(self, name: str, kind: type[T]) -> T:
        """The inherited value of ``name``, else the dataclass's default."""
        if self.inherited is not None and hasattr(self.inherited, name):
            value = getattr(self.inherited, name)
        else:
            value = default_of(self.schema, name)
        if not isinstance(value, kind):
            raise TypeError(f"{self.schema.__name__}.{name}: the default is not {kind.__name__}")
        return value

    def string(self, name: str) -> str | None:
        """The value stripped; null and an empty string both mean "not given"."""
        return self._read(name, lambda v: self._string(name, v), None)

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        default = self.default(name, str)

        def read(value: object) -> str:
            chosen = (self._string(name, value) or default).lower()
            if chosen not in choices:
                raise ConfigError(self.key(name), f"{chosen!r} is not one of {', '.join(choices)}")
            return chosen

        return self._read(name, read, default)

    def boolean(self, name: str) -> bool:
        default = self.default(name, bool)

        def read(value: object) -> bool:
            if isinstance(value, Expanded):
                text = value.strip().lower()
                if not text:
                    return default
                if text in _TRUE or text in _FALSE:
                    return text in _TRUE
            if value is None:
                return default
            if not isinstance(value, bool):
                raise ConfigError(self.key(name), f"expected true or false, got {kind_of(value)}")
            return value

        return self._read(name, read, default)

    def number(self, name: str, *, minimum: float = 0.0, inclusive: bool = False) -> float:
        default = self.default(name, float)
        value = self._read(name, lambda v: _number(self.key(name), v, minimum, inclusive), None)
        return default if value is None else value

    def optional_number(
        self, name: str, *, minimum: float = 0.0, inclusive: bool = False
    ) -> float | None:
        """A number whose default is "not set" (None)."""
        return self._read(name, lambda v: _number(self.key(name), v, minimum, inclusive), None)

    def integer(self, name: str, low: int, high: int) -> int:
        default = self.default(name, int)

        def read(value: object) -> int:
            if isinstance(value, Expanded):
                value = _parse_number(value, int)
            if value is None:
                return default
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(self.key(name), f"expected an integer, got {kind_of(value)}")
            if not low <= value <= high:
                raise ConfigError(self.key(name), f"must be between {low} and {high}, got {value}")
            return value

        return self._read(name, read, default)

    def path(self, name: str, base: Path) -> Path | None:
        def read(value: object) -> Path | None:
            text = self._string(name, value)
            if text is None:
                return None
            try:
                return (base / Path(text).expanduser()).resolve()
            except (RuntimeError, OSError) as error:  # an unknown ~user, a symlink loop
                raise ConfigError(self.key(name), f"cannot resolve {text!r}: {error}") from None

        return self._read(name, read, None)

    def _read(self, name: str, read: Callable[[object], T], fallback: T) -> T:
        """``read`` the value of ``name``; a problem is recorded and ``fallback`` returned."""
        try:
            return read(self.data.get(name))
        except ConfigError as error:
            self.problems.add(error)
            return fallback

    def _string(self, name: str, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            hint = " (quote it)" if isinstance(value, int | float) else ""
            raise ConfigError(self.key(name), f"expected a string, got {kind_of(value)}{hint}")
        return str(value).strip() or None  # str(): no Expanded leaks out


# --- small helpers ------------------------------------------------------------------------

#: What a boolean from an environment variable may say (YAML's own words for it).
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _number(key: str, value: object, minimum: float, inclusive: bool) -> float | None:
    if isinstance(value, Expanded):
        value = _parse_number(value, float)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"expected a number, got {kind_of(value)}")
    if not math.isfinite(value):
        raise ConfigError(key, "expected a finite number")
    if value < minimum or (value == minimum and not inclusive):
        bound = ">=" if inclusive else ">"
        raise ConfigError(key, f"must be {bound} {minimum:g}, got {value:g}")
    return float(value)


def _parse_number(value: str, kind: type[int] | type[float]) -> int | float | str | None:
    """An expanded string as a number when it is one; else left for the type error."""
    text = value.strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        return value


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
