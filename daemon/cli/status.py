"""``status``: read the folders and the journal without a daemon.

It counts, per inbox, the files waiting in the inbox, in progress in its claim folders,
archived in ``sent/`` and ``failed/``, and shows the last error the journal knows, and the
file that looks stuck: journaled without progress for longer than the bound of
:mod:`daemon.delivery.stalls`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.config import Config, InboxConfig
from daemon.delivery.stalls import stall_bound
from daemon.errors import ConfigError, JournalUnusable, os_error_text
from daemon.states import Stage
from daemon.store.archive import FAILED_DIR, SENT_DIR
from daemon.store.folders import count_archived, count_in_progress, mirrored_depth
from daemon.store.journal import JOURNAL_FILE, Entry, Journal
from daemon.watch.inboxes import all_inboxes
from daemon.watch.names import count_files


@dataclass(frozen=True)
class InboxStatus:
    """What one inbox looks like right now."""

    inbox: str
    """The folder's name."""
    path: str
    """The folder."""
    conversation_id: str
    """Where its files go."""
    waiting: int
    """Files in the inbox not yet taken."""
    in_progress: int
    """Files claimed and not yet archived."""
    sent: int
    """Files in ``sent/``."""
    failed: int
    """Files in ``failed/`` (sidecars not counted)."""
    last_error: dict[str, Any] | None
    """The most recent error: ``file``, ``reason`` (None while ``retrying``), ``status``,
    ``detail``, ``at`` (ISO 8601 UTC)."""
    unreadable: str | None = None
    """Why the inbox folder cannot be listed (its counts then say 0), or None."""
    stuck: dict[str, Any] | None = None
    """The claimed file without progress for longest, when that is longer than the bound
    (``retry.max_delay`` x 2, at least 10 minutes): ``file``, ``stage``, ``idle_s``,
    ``since`` (ISO 8601 UTC), ``why`` (its last error, or what its stage waits for)."""
    ignored: int = 0
    """Files left where they are and logged as ``file_ignored`` (in a subfolder, too deep,
    not included, a symlink...); names matching ``ignore`` are not counted."""


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _last_errors(journal: Journal) -> dict[str, dict[str, Any]]:
    """Per inbox path: the latest failure, or error of a file still being retried."""
    # A failed file has a reason; a file being retried has only the last error's detail.
    candidates = [*journal.last_errors().values()]
    candidates += [e for e in journal.open_entries() if e.reason is None and e.detail]
    latest: dict[str, Entry] = {}
    for entry in sorted(candidates, key=lambda e: e.updated_at):
        latest[entry.inbox] = entry
    return {
        inbox: {
            "file": entry.name,
            "reason": entry.reason,
            "retrying": entry.reason is None,
            "status": entry.status,
            "detail": entry.detail,
            "at": _iso(entry.updated_at),
        }
        for inbox, entry in latest.items()
    }


#: What a file at each journal stage waits for, when no error says more.
_WAITS_FOR = {
    Stage.CLAIMED: "claimed, not uploaded yet",
    Stage.UPLOADED: "uploaded, its message not sent yet",
    Stage.SENDING: "its message may have been sent; not confirmed yet",
    Stage.SENT: "sent, not yet moved into sent/ (see archive_failed in the log)",
    Stage.FAILED: "failed, not yet moved into failed/ (see archive_failed in the log)",
}


def _stuck(journal: Journal, bound: float) -> dict[str, dict[str, Any]]:
    """Per inbox path, its claimed file longest without a journaled change, when that is
    longer than ``bound``. A file waiting for its turn (not uploaded, or not yet sent)
    counts as moving while another file of its inbox moves."""
    now = time.time()
    by_inbox: dict[str, list[Entry]] = {}
    for entry in journal.open_entries():
        by_inbox.setdefault(entry.inbox, []).append(entry)
    found: dict[str, dict[str, Any]] = {}
    for inbox, entries in by_inbox.items():
        latest = max(entry.updated_at for entry in entries)

        def idle(entry: Entry, latest: float = latest) -> float:
            waiting = entry.stage in (Stage.CLAIMED, Stage.UPLOADED)
            return now - (max(entry.updated_at, latest) if waiting else entry.updated_at)

        entry = max(entries, key=idle)
        if idle(entry) > bound:
            found[inbox] = {
                "file": entry.name,
                "stage": entry.stage,
                "idle_s": round(idle(entry)),
                "since": _iso(now - idle(entry)),
                "why": entry.detail or _WAITS_FOR.get(entry.stage, entry.stage),
            }
    return found


def collect(config: Config) -> list[InboxStatus]:
    """The status of every inbox the configuration names (no daemon needed). The
    configuration's folders need not be writable (status only reads), but a spool that
    is not there is a mistake, not an empty spool."""
    if config.spool is not None and not config.spool.is_dir():
        raise ConfigError("spool", f"{config.spool} is not a folder")
    errors: dict[str, dict[str, Any]] = {}
    stuck: dict[str, dict[str, Any]] = {}
    if (config.state_dir / JOURNAL_FILE).exists():
        try:
            # Read-only: status changes nothing, and a read-only state_dir is fine.
            journal = Journal(config.state_dir, read_only=True)
        except JournalUnusable as error:
            # Counts still help without the last errors.
            print(f"sendseven-watch: cannot read the {error}", file=sys.stderr)
        else:
            try:
                errors = _last_errors(journal)
                stuck = _stuck(journal, stall_bound(config.retry))
            except sqlite3.Error as error:
                print(f"sendseven-watch: cannot read the journal: {error}", file=sys.stderr)
            finally:
                journal.close()
    return [
        _one(inbox, config, errors.get(str(inbox.path)), stuck.get(str(inbox.path)))
        for inbox in all_inboxes(config)
    ]


def _one(
    inbox: InboxConfig,
    config: Config,
    last_error: dict[str, Any] | None,
    stuck: dict[str, Any] | None,
) -> InboxStatus:
    waiting, ignored = count_files(inbox)
    return InboxStatus(
        inbox=inbox.name,
        path=str(inbox.path),
        conversation_id=inbox.conversation_id,
        waiting=waiting,
        in_progress=count_in_progress(inbox.path),
        sent=count_archived(inbox.path / SENT_DIR, mirrored=mirrored_depth(inbox)),
        failed=count_archived(inbox.path / FAILED_DIR, mirrored=mirrored_depth(inbox)),
        last_error=last_error,
        unreadable=_unreadable(inbox.path),
        stuck=stuck,
        ignored=ignored,
    )


def _unreadable(folder: Path) -> str | None:
    """A 0 that only means "could not look" must not read as "nothing there"."""
    try:
        with os.scandir(folder):
            return None
    except OSError as error:
        return os_error_text(error)


def print_status(config: Config, *, as_json: bool) -> int:
    rows = collect(config)
    if as_json:
        print(json.dumps({"inboxes": [asdict(r) for r in rows]}, ensure_ascii=False, indent=2))
        return 0
    print(
        f"{'inbox':<24} {'conversation':<20} {'waiting':>7} {'in prog':>7} "
        f"{'sent':>7} {'failed':>7}"
    )
    for r in rows:
        print(
            f"{r.inbox[:24]:<24} {r.conversation_id[:20]:<20} {r.waiting:>7} "
            f"{r.in_progress:>7} {r.sent:>7} {r.failed:>7}"
        )
        if r.unreadable:
            print(f"    cannot read the inbox: {r.unreadable}")
        if r.ignored:
            print(f"    ignored: {r.ignored} file(s) left in place (see file_ignored in the log)")
        if r.last_error:
            e = r.last_error
            print(
                f"    last error: {e['file']}: {e['reason'] or 'retrying'} "
                f"{e['status'] or ''} {e['detail'] or ''}".rstrip()
            )
        if r.stuck:
            s = r.stuck
            print(
                f"    stuck: {s['file']}: no progress for {s['idle_s']} s "
                f"(stage {s['stage']}): {s['why']}"
            )
    return 0
