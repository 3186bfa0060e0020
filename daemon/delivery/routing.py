"""Routing by name: an inbox's ``route`` regex picks each file's conversation.

One folder for many conversations, as ERP exports write it (``conv_123__invoice-4711.pdf``):
the named group ``conversation_id`` picks the conversation, other named groups become
caption placeholders. A name that does not match goes to the inbox's own conversation; one
whose ``conversation_id`` group captured nothing, or whose match took too long, fails as
``no_route``.

The match is bounded. A name is at most 255 bytes, but a pattern that backtracks
catastrophically (``(a+)+$``) takes longer than the universe on far fewer characters, and
Python's ``re`` holds the GIL and cannot be interrupted in a thread. So the match runs in a
helper process (started at the first routed file, kept for the next ones): a match that
takes longer than :data:`MATCH_TIMEOUT_S` kills it (the next match starts a new one), and
the file fails as ``no_route`` saying so.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # multiprocessing itself is imported with the first helper process
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

#: The named group that picks the conversation.
CONVERSATION_GROUP = "conversation_id"
#: Seconds one route match may take.
MATCH_TIMEOUT_S = 1.0
#: Seconds the helper process may take to start.
HELPER_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Route:
    """Where a file goes."""

    conversation_id: str | None
    """The routed conversation; None: the inbox's own (no route, or the name did not match)."""
    fields: dict[str, str] = field(default_factory=dict)
    """The other named groups that matched: caption placeholders."""
    problem: str | None = None
    """Why the file cannot be routed (``no_route``), or None."""


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _groups(pattern: str, name: str) -> dict[str, str] | None:
    """The named groups of ``pattern`` matched against ``name`` (None: no match)."""
    match = _compiled(pattern).search(name)
    if match is None:
        return None
    return {key: value for key, value in match.groupdict().items() if value is not None}


def _serve(conn: Connection) -> None:
    """The helper process: answer (pattern, name) with the groups, until the pipe closes."""
    conn.send(("ready", None))
    while True:
        try:
            pattern, name = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", _groups(pattern, name)))
        except re.error as error:
            conn.send(("error", str(error)))


class Router:
    """Matches file names against routes, each match bounded by ``timeout`` seconds."""

    def __init__(self, timeout: float = MATCH_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    def route(self, pattern: str | None, name: str) -> Route:
        """Where the file ``name`` goes under ``pattern`` (None: the inbox's own)."""
        if not pattern:
            return Route(None)
        # Every group is a placeholder, "" when it took no part in the match.
        unmatched = dict.fromkeys(_compiled(pattern).groupindex, "")
        unmatched.pop(CONVERSATION_GROUP, None)
        try:
            groups = self._match(pattern, name)
        except TimeoutError:
            return Route(
                None,
                unmatched,
                problem=f"route took longer than {self.timeout:g} s on this name (a pattern"
                " that backtracks catastrophically); simplify route",
            )
        if groups is None:
            return Route(None, unmatched)
        conversation = groups.pop(CONVERSATION_GROUP, "")
        fields = unmatched | groups
        if not conversation:
            return Route(
                None, fields, problem=f"route matched, but its {CONVERSATION_GROUP} is empty"
            )
        return Route(conversation, fields)

    def _match(self, pattern: str, name: str) -> dict[str, str] | None:
        with self._lock:
            conn = self._connection()
            conn.send((pattern, name))
            if not conn.poll(self.timeout):
                self._kill()
                raise TimeoutError
            try:
                kind, value = conn.recv()
            except EOFError:
                self._kill()
                raise TimeoutError from None
        if kind == "error":
            raise ValueError(value)
        result: dict[str, str] | None = value
        return result

    def _connection(self) -> Connection:
        if self._conn is None or self._process is None or not self._process.is_alive():
            self._kill()
            # Imported here: it costs a visible part of every start, and most sites route
            # nothing.
            import multiprocessing  # noqa: PLC0415

            context = multiprocessing.get_context("spawn")  # never fork a threaded daemon
            mine, theirs = context.Pipe()
            process = context.Process(
                target=_serve, args=(theirs,), name="sendseven-watch-route", daemon=True
            )
            process.start()
            theirs.close()
            self._process, self._conn = process, mine
            # Its start (an interpreter, imports) is not part of any match's bound.
            if not mine.poll(HELPER_START_TIMEOUT_S) or mine.recv()[0] != "ready":
                self._kill()
                raise RuntimeError("the route helper process did not start")
        return self._conn

    def _kill(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.kill()
            self._process.join(5)
            self._process = None

    def close(self) -> None:
        """Stop the helper process."""
        with self._lock:
            self._kill()
