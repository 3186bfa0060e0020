"""``status`` and ``requeue``: read (and, for requeue, move) the folders without a daemon.

``status`` counts, per inbox, the files waiting in the inbox, in progress in its claim
folders, archived in ``sent/`` and ``failed/``, and shows the last error the journal knows.
``requeue`` moves failed files back into their inbox under their original name (the next
free variant when it is taken) and drops their sidecars.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daemon.archive import FAILED_DIR, SENT_DIR, SIDECAR_SUFFIX, WORK_DIR, move_no_overwrite
from daemon.config import Config, InboxConfig
from daemon.journal import JOURNAL_FILE, Journal
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
    """The most recent error: ``file``, ``reason``, ``status``, ``detail``, ``at``."""


def _count_files(folder: Path, *, skip_sidecars: bool = False) -> int:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    return sum(
        1
        for e in entries
        if e.is_file(follow_symlinks=False)
        and not e.name.startswith(".")
        and not (skip_sidecars and e.name.endswith(SIDECAR_SUFFIX))
    )


def _in_progress(inbox: Path) -> int:
    total = 0
    try:
        owners = [p for p in (inbox / WORK_DIR).iterdir() if p.is_dir()]
    except OSError:
        return 0
    for owner in owners:
        try:
            total += sum(1 for claim in owner.iterdir() if _count_files(claim))
        except OSError:
            continue
    return total


def _waiting(inbox: Path, ignore: tuple[str, ...]) -> int:
    try:
        entries = list(os.scandir(inbox))
    except OSError:
        return 0
    return sum(
        1 for e in entries if e.is_file(follow_symlinks=False) and not is_ignored(e.name, ignore)
    )


def collect(config: Config) -> list[InboxStatus]:
    """The status of every inbox the configuration names (no daemon needed)."""
    errors: dict[str, dict[str, Any]] = {}
    if (config.state_dir / JOURNAL_FILE).exists():
        journal = Journal(config.state_dir)
        try:
            for inbox, entry in journal.last_errors().items():
                errors[inbox] = {
                    "file": entry.name,
                    "reason": entry.reason,
                    "status": entry.status,
                    "detail": entry.detail,
                    "at": entry.updated_at,
                }
        finally:
            journal.close()
    return [_one(inbox, config, errors.get(str(inbox.path))) for inbox in config.all_inboxes()]


def _one(inbox: InboxConfig, config: Config, last_error: dict[str, Any] | None) -> InboxStatus:
    return InboxStatus(
        inbox=inbox.name,
        path=str(inbox.path),
        conversation_id=inbox.conversation_id,
        waiting=_waiting(inbox.path, config.ignore),
        in_progress=_in_progress(inbox.path),
        sent=_count_files(inbox.path / SENT_DIR),
        failed=_count_files(inbox.path / FAILED_DIR, skip_sidecars=True),
        last_error=last_error,
    )


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
        if r.last_error:
            e = r.last_error
            print(
                f"    last error: {e['file']}: {e['reason'] or 'retrying'} "
                f"{e['status'] or ''} {e['detail'] or ''}".rstrip()
            )
    return 0


def requeue(config: Config, *, inbox: str | None, reason: str | None) -> int:
    """Move failed files back into their inbox; print one JSON line per file moved."""
    log = get_logger()
    moved = 0
    for box in config.all_inboxes():
        if inbox is not None and inbox not in (box.name, box.conversation_id, str(box.path)):
            continue
        failed = box.path / FAILED_DIR
        try:
            names = sorted(e.name for e in os.scandir(failed) if e.is_file(follow_symlinks=False))
        except OSError:
            continue
        for name in names:
            if name.endswith(SIDECAR_SUFFIX) or name.startswith("."):
                continue
            sidecar_path = failed / (name + SIDECAR_SUFFIX)
            sidecar: dict[str, Any] = {}
            if sidecar_path.exists():
                try:
                    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    sidecar = {}
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
