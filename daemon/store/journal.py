"""The journal: each claimed file's stage, in sqlite (WAL), durable before each side effect.

Stages, in order::

    claimed ──► uploaded(attachment_id) ──► sending ──► sent(message_id) ──► archived
        └──────────────┴──────────────────────┴──► failed(reason) ─────────► archived

A restart after SIGKILL resumes each claim from its stage without repeating a completed
step: ``sent`` is archived without a new send; ``uploaded`` is sent without a new upload;
``sending`` is sent again with the same ``Idempotency-Key`` (the claim id), which is the one
repeat that exactly-once over HTTP cannot avoid. The files of a conversation waiting for
their turn may be journaled ``sending`` together, in one commit (:meth:`Journal.update_many`),
ahead of it: safe for the same reason.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from daemon.errors import JournalUnusable
from daemon.states import Reason, Stage

JOURNAL_FILE = "journal.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    claim_id        TEXT PRIMARY KEY,
    inbox           TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    name            TEXT NOT NULL,
    stage           TEXT NOT NULL,
    arrived_ns      INTEGER NOT NULL,
    claimed_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    size            INTEGER,
    sha256          TEXT,
    message_type    TEXT,
    content_type    TEXT,
    attachment_id   TEXT,
    message_id      TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    first_failure   REAL,
    reason          TEXT,
    detail          TEXT,
    status          INTEGER,
    archived_as     TEXT,
    idempotency_key TEXT,
    send_anyway     INTEGER
);
CREATE INDEX IF NOT EXISTS claims_inbox_stage ON claims (inbox, stage);
CREATE TABLE IF NOT EXISTS sent_hashes (
    claim_id        TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    message_id      TEXT,
    name            TEXT NOT NULL,
    sent_at         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_hashes_by_bytes ON sent_hashes (conversation_id, sha256);
CREATE INDEX IF NOT EXISTS sent_hashes_by_age ON sent_hashes (sent_at);
"""

#: The memory of sent bytes (duplicates): written by sqlite itself in the very transaction
#: that journals a claim ``sent``, so no crash can fall between the two.
_REMEMBER_SENT = """
CREATE TRIGGER IF NOT EXISTS remember_sent AFTER UPDATE OF stage ON claims
WHEN NEW.stage = 'sent' AND NEW.sha256 IS NOT NULL
BEGIN
    INSERT OR REPLACE INTO sent_hashes
        (claim_id, conversation_id, sha256, message_id, name, sent_at)
    VALUES (NEW.claim_id, NEW.conversation_id, NEW.sha256, NEW.message_id, NEW.name,
            NEW.updated_at);
END;
"""


@dataclass(frozen=True)
class SentBefore:
    """Identical bytes sent earlier to the same conversation."""

    message_id: str | None
    name: str
    sent_at: float
    """Wall-clock time (epoch seconds)."""


@dataclass(frozen=True)
class NewClaim:
    """A claim to journal (:meth:`Journal.record_claims`)."""

    claim_id: str
    inbox: Path
    conversation_id: str
    name: str
    arrived_ns: int


@dataclass(frozen=True)
class Entry:
    """One claim as the journal knows it."""

    claim_id: str
    """The claim id; also the Idempotency-Key of the send."""
    inbox: str
    """The inbox folder (absolute path)."""
    conversation_id: str
    """Where the file goes."""
    name: str
    """The original file name."""
    stage: Stage
    """Where it is (:class:`~daemon.states.Stage`)."""
    arrived_ns: int
    """The file's mtime when claimed: the order within a conversation."""
    claimed_at: float
    """Wall-clock time of the claim (epoch seconds)."""
    updated_at: float
    """Wall-clock time of the last change."""
    size: int | None = None
    """Size in bytes, once known."""
    sha256: str | None = None
    """Hex sha256 of the bytes uploaded, once known."""
    message_type: str | None = None
    """image/document/video/audio, once classified."""
    content_type: str | None = None
    """The detected MIME type, once classified."""
    attachment_id: str | None = None
    """The API's attachment id, once uploaded."""
    message_id: str | None = None
    """The API's message id, once sent."""
    attempts: int = 0
    """Attempts at the API made so far."""
    first_failure: float | None = None
    """Wall-clock time of the first transient failure (for ``retry.give_up_after``)."""
    reason: Reason | None = None
    """The failure reason, when failed (or the last error while retrying)."""
    detail: str | None = None
    """Human text for the failure or the last error."""
    status: int | None = None
    """The HTTP status of the failure or the last error."""
    archived_as: str | None = None
    """Where the file went (sent/ or failed/ path)."""
    idempotency_key: str | None = None
    """The send's Idempotency-Key when it is not the claim id: the key of an earlier
    claim whose send may have reached the API (a requeued ``unconfirmed`` file)."""
    send_anyway: bool | None = None
    """Requeued by hand: never skipped as a duplicate."""

    def changed(self, **changes: Any) -> Entry:
        """A copy with ``changes``: :func:`dataclasses.replace`, for the hot path. An
        entry changes at every stage of every file, and ``replace`` (which calls
        ``__init__`` with all 22 fields again) was a visible share of the CPU per
        file. Entries hold plain values only, so copying the attributes is the same."""
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise TypeError(f"Entry has no fields {sorted(unknown)}")
        copy = object.__new__(Entry)
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy


_COLUMNS = tuple(f.name for f in fields(Entry))
_FIELDS = frozenset(_COLUMNS)
_STAGE = _COLUMNS.index("stage")
_REASON = _COLUMNS.index("reason")
_SEND_ANYWAY = _COLUMNS.index("send_anyway")


_INSERT_CLAIM = (
    "INSERT OR IGNORE INTO claims (claim_id, inbox, conversation_id, name, stage,"
    " arrived_ns, claimed_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _insert_args(entry: Entry) -> tuple[object, ...]:
    """The values of :data:`_INSERT_CLAIM` for a new claim's entry."""
    row = (
        entry.claim_id,
        entry.inbox,
        entry.conversation_id,
        entry.name,
        entry.stage,
        entry.arrived_ns,
        entry.claimed_at,
        entry.updated_at,
    )
    return tuple(map(_stored, row))


def _stored(value: object) -> object:
    """A value as sqlite takes it. A file name that is not UTF-8 (its bad bytes came from
    the OS as surrogates, which sqlite refuses) is stored losslessly as its raw bytes."""
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape")
    return value


@functools.lru_cache(maxsize=64)
def _update_sql(columns: tuple[str, ...], claims: int) -> str:
    """The UPDATE of ``columns`` of ``claims`` claims (names checked by the caller); the
    same few sets of columns come at every stage of every file."""
    assignments = ", ".join(f"{column} = ?" for column in columns)
    marks = ", ".join("?" * claims)
    return f"UPDATE claims SET {assignments} WHERE claim_id IN ({marks})"  # noqa: S608 - checked names


def _unusable(path: Path, error: sqlite3.Error) -> JournalUnusable:
    """``error`` opening or reading the journal at ``path``, with what to do about it."""
    if isinstance(error, sqlite3.OperationalError):
        hint = f"check that {path.parent} exists and this user may read and write it"
    else:  # not a database, or a damaged one
        hint = (
            f"stop every daemon that uses it, then move it aside (mv {path} {path}.broken):"
            " the next start makes a new one, and files still claimed are sent again with"
            " their own Idempotency-Key"
        )
    return JournalUnusable(str(path), str(error), hint)


def _open_read_only(path: Path, *, untouched: bool = False) -> sqlite3.Connection:
    """``path`` opened for reading only. A WAL journal needs its ``-shm`` file, which a
    reader cannot create in a read-only folder: then (no daemon can be writing there
    either) the file is read as it is. ``untouched``: create no ``-shm``/``-wal`` file
    either; without a ``-wal`` file (no daemon has it open) every commit is in the file."""
    uri = path.resolve().as_uri()
    if not path.exists():
        raise sqlite3.OperationalError(f"no journal at {path}")
    if untouched and not path.with_name(path.name + "-wal").exists():
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        db = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    return db


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a journal of an older version up to date (columns are only ever added)."""
    present = {row[1] for row in db.execute("PRAGMA table_info(claims)")}
    for column, kind in (("idempotency_key", "TEXT"), ("send_anyway", "INTEGER")):
        if column not in present:
            try:
                db.execute(f"ALTER TABLE claims ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as error:  # another daemon added it meanwhile
                if "duplicate column" not in str(error):
                    raise


def _entry(row: tuple[Any, ...]) -> Entry:
    """A row as an :class:`Entry`, its closed-set words as their enums."""
    values: list[Any] = [
        value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
        for value in row
    ]
    values[_STAGE] = Stage(values[_STAGE])
    if values[_SEND_ANYWAY] is not None:
        values[_SEND_ANYWAY] = bool(values[_SEND_ANYWAY])
    if values[_REASON] is not None:
        values[_REASON] = Reason(values[_REASON])
    return Entry(*values)


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class _Write:
    """One statement waiting for its commit, and what came of it."""

    sql: str
    args: tuple[object, ...]
    done: bool = False
    rowcount: int = 0
    error: BaseException | None = None
    #: Released when it is done, or when its thread is to commit the writes queued so far:
    #: its thread waits by acquiring it. A bare lock used as a one-shot signal, not an
    #: Event: one is made per write, and an Event (a Condition, its lock and a waiter lock
    #: of its own per wait) cost a visible share of the CPU per file.
    woken: threading.Lock = field(default_factory=_held_lock)


def _run(db: sqlite3.Connection, write: _Write) -> None:
    """``write`` committed on its own (autocommit), its outcome noted on it."""
    try:
        write.rowcount = db.execute(write.sql, write.args).rowcount
    except sqlite3.Error as error:
        write.error = error


class Journal:
    """A thread-safe handle on ``<state_dir>/journal.sqlite3``.

    ``read_only``: only look (``status``, ``check-config``): the file must exist, nothing is
    created or changed, and a read-only ``state_dir`` is fine. ``untouched`` (with
    ``read_only``): not even sqlite's ``-shm``/``-wal`` files are created (``run --dry-run``).
    """

    def __init__(
        self, state_dir: Path, *, read_only: bool = False, untouched: bool = False
    ) -> None:
        self.path = state_dir / JOURNAL_FILE
        self.read_only = read_only
        self._lock = threading.Lock()
        # Group commit (see _write): writes waiting for the commit in progress.
        self._turn = threading.Lock()
        self._queue: list[_Write] = []
        self._committing = False
        try:
            self._db = self._open(read_only, untouched)
            with self._lock:
                present = {row[1] for row in self._db.execute("PRAGMA table_info(claims)")}
            if not present:
                self._db.close()
                raise sqlite3.DatabaseError("it has no claims table")
        except sqlite3.Error as error:
            raise _unusable(self.path, error) from None
        # A journal written by an older version lacks the newer columns: read them as NULL.
        self._select = ", ".join(c if c in present else f"NULL AS {c}" for c in _COLUMNS)

    def _open(self, read_only: bool, untouched: bool = False) -> sqlite3.Connection:
        if read_only:
            return _open_read_only(self.path, untouched=untouched)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared under a lock: writes are tiny and sqlite serialises them
        # anyway; ``timeout`` covers a second daemon holding the write lock for a moment.
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            _add_missing_columns(db)
            db.executescript(_REMEMBER_SENT)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def check(self) -> int:
        """Read the whole file; the number of claims not yet archived.
        :class:`~daemon.errors.JournalUnusable` when it is damaged."""
        try:
            with self._lock:
                (verdict,) = self._db.execute("PRAGMA quick_check").fetchone()
            if verdict != "ok":
                raise sqlite3.DatabaseError(verdict)
            return len(self.open_entries())
        except sqlite3.Error as error:
            raise _unusable(self.path, error) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: tuple[object, ...]) -> int:
        """One statement, committed and synced before this returns; the number of rows
        it changed.

        Group commit: writes that threads ask for while a commit is being synced wait for
        it, and the next of them commits all of them in one transaction, with one sync.
        Each caller still returns only once its own write is durable, so what it then
        does (a request, a move) is covered as before; only the number of syncs drops.
        """
        (rowcount,) = self._write_all([_Write(sql, tuple(map(_stored, args)))])
        return rowcount

    def _write_all(self, writes: list[_Write]) -> list[int]:
        """``writes`` queued together, so that one commit takes them all (:meth:`_write`);
        the rows each changed. Their thread waits on the first one only."""
        first = writes[0]
        with self._turn:
            self._queue.extend(writes)
            leads = not self._committing
            self._committing = True
        if not leads:
            first.woken.acquire()  # done, or asked to commit what is queued by now
        if not first.done:
            self._lead()
        for write in writes:
            if write.error is not None:
                raise write.error
        return [write.rowcount for write in writes]

    def _lead(self) -> None:
        """Commit every write queued so far (the caller's among them), wake their threads,
        and hand the turn to the first write queued meanwhile: each waiting thread is woken
        once, when its write is durable or when it is its turn to commit."""
        with self._turn:
            batch, self._queue = self._queue, []
        try:
            self._commit(batch)
        except BaseException as error:  # noqa: BLE001 - handed to every caller it hit
            for each in batch:
                each.error = each.error or error
        finally:
            # Each write's lock is released once per wait of its thread: its own write,
            # whose thread is this one, was either never waited on (it led at once) or was
            # acquired again when the turn came to it.
            for each in batch:
                each.done = True
                each.woken.release()
            with self._turn:
                if self._queue:
                    self._queue[0].woken.release()  # its thread commits the next batch
                else:
                    self._committing = False

    def _commit(self, batch: list[_Write]) -> None:
        """Run ``batch`` in one transaction (one sync); when a statement fails, each one
        on its own instead, so that a failure reaches only the caller it belongs to."""
        with self._lock:
            if len(batch) == 1:
                _run(self._db, batch[0])
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for write in batch:
                        write.rowcount = self._db.execute(write.sql, write.args).rowcount
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error:
                for write in batch:
                    _run(self._db, write)

    def record_claim(
        self, claim_id: str, inbox: Path, conversation_id: str, name: str, arrived_ns: int
    ) -> Entry:
        """A new claim (or, after a crash before it was journaled, a recovered one)."""
        (entry,) = self.record_claims(
            [NewClaim(claim_id, inbox, conversation_id, name, arrived_ns)]
        )
        return entry

    def record_claims(self, claims: Sequence[NewClaim]) -> list[Entry]:
        """New claims (or recovered ones, see :meth:`record_claim`), in one commit (one
        sync), durably before this returns; their entries, in the same order. Should the
        journal refuse one of them, its error is raised, and the others may have been made."""
        now = time.time()
        made = [
            Entry(
                c.claim_id,
                str(c.inbox),
                c.conversation_id,
                c.name,
                Stage.CLAIMED,
                c.arrived_ns,
                now,
                now,
            )
            for c in claims
        ]
        inserted = self._write_all([_Write(_INSERT_CLAIM, _insert_args(e)) for e in made])
        entries: list[Entry] = []
        for entry, rows in zip(made, inserted, strict=True):
            if rows:
                entries.append(entry)
                continue
            known = self.get(entry.claim_id)  # journaled before a crash: keep what it knew
            if known is None:
                raise RuntimeError(f"claim {entry.claim_id} vanished from the journal")
            entries.append(known)
        return entries

    def update(self, claim_id: str, **changes: Any) -> None:
        """Set columns of one claim (``stage=``, ``attachment_id=``, …) durably."""
        self._update([claim_id], changes)

    def update_many(self, claim_ids: list[str], **changes: Any) -> None:
        """Set the same columns of several claims in one transaction (one sync), durably
        before this returns: all of them, or none."""
        if claim_ids:
            self._update(claim_ids, changes)

    def update_each(self, changes: list[tuple[str, dict[str, Any]]]) -> None:
        """Set columns of several claims, each its own (claim id, changes), in one commit
        (one sync), durably before this returns. Should the journal refuse one of them, its
        error is raised, and the others may have been made."""
        if changes:
            now = time.time()
            writes = [self._update_write([claim_id], each, now) for claim_id, each in changes]
            self._write_all(writes)

    def _update(self, claim_ids: list[str], changes: dict[str, Any]) -> None:
        self._write_all([self._update_write(claim_ids, changes, time.time())])

    @staticmethod
    def _update_write(claim_ids: list[str], changes: dict[str, Any], now: float) -> _Write:
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise ValueError(f"unknown journal columns: {sorted(unknown)}")
        columns = (*changes, "updated_at")
        args = (*changes.values(), now, *claim_ids)
        return _Write(_update_sql(columns, len(claim_ids)), tuple(map(_stored, args)))

    def get(self, claim_id: str) -> Entry | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._select} FROM claims WHERE claim_id = ?",  # noqa: S608
                (claim_id,),
            ).fetchone()
        return _entry(row) if row else None

    def open_entries(self) -> list[Entry]:
        """Claims not yet archived, oldest arrival first."""
        query = f"SELECT {self._select} FROM claims WHERE stage != ?"  # noqa: S608
        with self._lock:
            rows = self._db.execute(query + " ORDER BY arrived_ns, name", (Stage.ARCHIVED,))
            return [_entry(row) for row in rows.fetchall()]

    def last_errors(self) -> dict[str, Entry]:
        """Per inbox, the most recent claim that failed or is retrying with an error."""
        query = (
            f"SELECT {self._select} FROM claims WHERE reason IS NOT NULL"  # noqa: S608
            " ORDER BY updated_at"
        )
        with self._lock:
            rows = self._db.execute(query).fetchall()
        return {entry.inbox: entry for entry in (_entry(row) for row in rows)}

    def prune_archived(self, older_than_s: float) -> int:
        """Delete archived claims last changed more than ``older_than_s`` ago."""
        cutoff = time.time() - older_than_s
        return self._write(
            "DELETE FROM claims WHERE stage = ? AND updated_at < ?", (Stage.ARCHIVED, cutoff)
        )

    def sent_before(
        self, conversation_id: str, sha256: str, window_s: float, *, claim_id: str = ""
    ) -> SentBefore | None:
        """The latest claim but ``claim_id`` whose identical bytes were sent to
        ``conversation_id`` within the last ``window_s`` seconds."""
        cutoff = time.time() - window_s
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT message_id, name, sent_at FROM sent_hashes WHERE conversation_id = ?"
                    " AND sha256 = ? AND sent_at >= ? AND claim_id != ?"
                    " ORDER BY sent_at DESC LIMIT 1",
                    (_stored(conversation_id), sha256, cutoff, claim_id),
                ).fetchone()
        except sqlite3.OperationalError:
            if not self.read_only:
                raise
            return None  # a journal of an older version, read as it is: it remembers none
        if row is None:
            return None
        name = row[1].decode("utf-8", "surrogateescape") if isinstance(row[1], bytes) else row[1]
        return SentBefore(row[0], name, row[2])

    def prune_sent_hashes(self, older_than_s: float) -> int:
        """Forget sent bytes older than ``older_than_s`` (the longest ``duplicate_window``)."""
        cutoff = time.time() - older_than_s
        return self._write("DELETE FROM sent_hashes WHERE sent_at < ?", (cutoff,))
