"""``status`` and ``requeue``: read (and, for requeue, move) the folders without a daemon.

``status`` counts, per inbox, the files waiting in the inbox, in progress in its claim
folders, archived in ``sent/`` and ``failed/``, and shows the last error the journal knows.
``requeue`` moves failed files back into their inbox under their original name (the next
free variant when it is taken) and drops their sidecars.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.archive import FAILED_DIR, SENT_DIR, SIDECAR_SUFFIX, WORK_DIR, move_no_overwrite
from daemon.config import Config, InboxConfig
from daemon.errors import ConfigError, os_error_text
from daemon.journal import JOURNAL_FILE, Entry, Journal
from daemon.logs import get_logger
from daemon.settle import is_ignored


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


def _is_sidecar(name: str, names: set[str]) -> bool:
    """A sidecar sits next to its file: ``x.pdf.error.json`` counts as one only when
    ``x.pdf`` is there too (a failed file may itself be called ``notes.error.json``)."""
    return name.endswith(SIDECAR_SUFFIX) and name[: -len(SIDECAR_SUFFIX)] in names


def _regular_files(folder: Path) -> list[str]:
    """Names of the non-hidden regular files directly in ``folder`` (none if unreadable)."""
    try:
        with os.scandir(folder) as entries:
            return [
                e.name
                for e in entries
                if e.is_file(follow_symlinks=False) and not e.name.startswith(".")
            ]
    except OSError:
        return []


def count_archived(folder: Path) -> int:
    """Files in ``sent/`` or ``failed/``, sidecars not counted."""
    names = set(_regular_files(folder))
    return sum(1 for name in names if not _is_sidecar(name, names))


def count_in_progress(inbox: Path) -> int:
    """Claimed files of every owner, live or dead, not yet archived."""
    total = 0
    try:
        owners = [p for p in (inbox / WORK_DIR).iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return 0
    for owner in owners:
        try:
            total += sum(1 for claim in owner.iterdir() if _regular_files(claim))
        except OSError:
            continue
    return total


def count_waiting(inbox: Path, ignore: tuple[str, ...]) -> int:
    """Files in the inbox that the daemon would take (settled or not)."""
    return sum(1 for name in _regular_files(inbox) if not is_ignored(name, ignore))


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


def collect(config: Config) -> list[InboxStatus]:
    """The status of every inbox the configuration names (no daemon needed)."""
    errors: dict[str, dict[str, Any]] = {}
    if (config.state_dir / JOURNAL_FILE).exists():
        try:
            journal = Journal(config.state_dir)
        except (sqlite3.Error, OSError) as error:
            # Counts still help without the last errors (e.g. no write access to state_dir).
            print(f"sendseven-watch: cannot read the journal: {error}", file=sys.stderr)
        else:
            try:
                errors = _last_errors(journal)
            except sqlite3.Error as error:
                print(f"sendseven-watch: cannot read the journal: {error}", file=sys.stderr)
            finally:
                journal.close()
    return [_one(inbox, config, errors.get(str(inbox.path))) for inbox in config.all_inboxes()]


def _one(inbox: InboxConfig, config: Config, last_error: dict[str, Any] | None) -> InboxStatus:
    return InboxStatus(
        inbox=inbox.name,
        path=str(inbox.path),
        conversation_id=inbox.conversation_id,
        waiting=count_waiting(inbox.path, config.ignore),
        in_progress=count_in_progress(inbox.path),
        sent=count_archived(inbox.path / SENT_DIR),
        failed=count_archived(inbox.path / FAILED_DIR),
        last_error=last_error,
        unreadable=_unreadable(inbox.path),
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
        if r.last_error:
            e = r.last_error
            print(
                f"    last error: {e['file']}: {e['reason'] or 'retrying'} "
                f"{e['status'] or ''} {e['detail'] or ''}".rstrip()
            )
    return 0


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


#: SPEC §4: the reasons a failed file's sidecar can carry (what ``requeue --reason`` takes).
FAILURE_REASONS = (
    "unsupported_type",
    "too_large",
    "empty_file",
    "unreadable",
    "conversation_not_found",
    "rejected",
    "retries_exhausted",
)


def requeue(config: Config, *, inbox: str | None, reason: str | None) -> int:
    """Move failed files back into their inbox; print one JSON line per file moved."""
    log = get_logger()
    if reason is not None and reason not in FAILURE_REASONS:
        raise ConfigError("--reason", f"{reason!r} is none of {', '.join(FAILURE_REASONS)}")
    boxes = [
        box
        for box in config.all_inboxes()
        if inbox is None or inbox in (box.name, box.conversation_id, str(box.path))
    ]
    if not boxes and inbox is not None:  # a typo must not look like "nothing to requeue"
        known = ", ".join(sorted(box.name for box in config.all_inboxes())) or "none"
        raise ConfigError("--inbox", f"no inbox is named {inbox!r} (inboxes: {known})")
    moved = 0
    for box in boxes:
        failed = box.path / FAILED_DIR
        names = set(_regular_files(failed))
        for name in sorted(names):
            if _is_sidecar(name, names):
                continue
            sidecar_path = failed / (name + SIDECAR_SUFFIX)
            sidecar = _read_sidecar(sidecar_path)
            if reason is not None and sidecar.get("reason") != reason:
                continue
            original = sidecar.get("file") if isinstance(sidecar.get("file"), str) else name
            target = move_no_overwrite(failed / name, box.path, Path(str(original)).name)
            sidecar_path.unlink(missing_ok=True)
            moved += 1
            log.info(
                "file_requeued",
                inbox=box.name,
                file=name,
                to=target.name,
                reason=sidecar.get("reason"),
            )
    log.info("requeue_done", files=moved)
    return 0
