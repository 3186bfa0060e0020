"""The problems found in one configuration file, collected so that one run names them all.

Reading the file records a :class:`~daemon.errors.ConfigError` for each wrong key, type,
range or variable and goes on with the default in its place; :meth:`Problems.check` then
raises them together as one :class:`~daemon.errors.ConfigErrors`. Checks that depend on a
value which already has a problem ask :meth:`Problems.has` first, so that one mistake is
reported once and not again as its consequences.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from daemon.errors import ConfigError, ConfigErrors


class Problems:
    """The problems found so far in one file: each is recorded, and reading goes on."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, error: ConfigError) -> None:
        self.errors.extend(error.errors if isinstance(error, ConfigErrors) else (error,))

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Record a ConfigError raised inside the block instead of letting it out."""
        try:
            yield
        except ConfigError as error:
            self.add(error)

    def has(self, *keys: str) -> bool:
        """Whether a problem was found at one of ``keys`` or inside it (``api``: ``api.url``)."""
        return any(
            error.key == key or error.key.startswith((f"{key}.", f"{key}["))
            for error in self.errors
            for key in keys
        )

    def sort(self, keys: Sequence[str]) -> None:
        """Put the problems in the order of their top-level ``keys`` (as in the file).

        A problem with a key that is not there (a required one, missing) comes first.
        """
        order = {key: index for index, key in enumerate(keys)}
        self.errors.sort(key=lambda error: order.get(_top(error.key), -1))

    def check(self) -> None:
        """Raise every problem found so far as one :class:`ConfigErrors`; none: return."""
        if self.errors:
            raise ConfigErrors(self.errors)


def _top(key: str) -> str:
    """The top-level key of a dotted one: ``inboxes`` for ``inboxes[1].path``."""
    return re.split(r"[.\[]", key, maxsplit=1)[0]
