"""``run --dry-run``: what a run would do to every file present now, touching nothing.

One line per file of every inbox (``would_send``, ``would_fail`` or ``would_ignore``), with
its conversation (routed), message type and caption, or the reason it would fail or why it
is not taken. Nothing is claimed, moved, deleted or requested: the files are only opened
for reading (classification, and the sha256 for the duplicate check), and the journal, when
there is one, is read without being changed.
"""

from __future__ import annotations

import stat
from pathlib import Path

from daemon.config import Config, InboxConfig
from daemon.config.caption import render_caption
from daemon.config.model import Duplicates
from daemon.delivery.finish import sha256_of, utc_iso
from daemon.delivery.routing import Route, Router
from daemon.errors import JournalUnusable
from daemon.logs import get_logger
from daemon.media.classify import classify_file
from daemon.states import Reason
from daemon.store.journal import Journal
from daemon.watch.inboxes import all_inboxes
from daemon.watch.names import Why, is_ignored, is_marker, marker_of, walk, why_left


def dry_run(config: Config) -> int:
    """Print what would happen to every file present now; 0."""
    try:
        journal: Journal | None = Journal(config.state_dir, read_only=True, untouched=True)
    except JournalUnusable:
        journal = None  # no journal yet: nothing was sent, so nothing is a duplicate
    router = Router()
    try:
        for inbox in all_inboxes(config):
            _inbox(inbox, router, journal)
    finally:
        router.close()
        if journal is not None:
            journal.close()
    return 0


def _inbox(inbox: InboxConfig, router: Router, journal: Journal | None) -> None:
    log = get_logger()

    def unreadable(folder: Path, error: OSError) -> None:
        log.warning("would_ignore", inbox=inbox.name, file=None, why=f"unreadable: {error}")

    # The same walk as the daemon's: subfolders (recursive), too deep, include, markers.
    entries = sorted(walk(inbox, on_error=unreadable), key=lambda found: found[0])
    present = {name for name, _ in entries}
    for name, entry in entries:
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError:
            continue  # gone meanwhile
        if stat.S_ISDIR(mode):
            continue  # sent/, failed/, hidden ones, or deeper than max_depth: no files
        common: dict[str, object] = {"inbox": inbox.name, "file": name}
        why = _not_taken(name, mode, inbox, present)
        if why is not None:
            log.info("would_ignore", **common, why=why)
            continue
        route = router.route(inbox.route, name.rpartition("/")[2])
        conversation = route.conversation_id or inbox.conversation_id
        common["conversation_id"] = conversation
        if route.problem is not None:
            log.info("would_fail", **common, reason=Reason.NO_ROUTE, detail=route.problem)
            continue
        _file(inbox, Path(entry.path), route, journal, common)


def _not_taken(name: str, mode: int, inbox: InboxConfig, present: set[str]) -> str | None:
    """Why a run leaves the entry ``name`` (relative to the inbox) where it is, or None."""
    if stat.S_ISLNK(mode):
        return str(Why.SYMLINK)
    if not stat.S_ISREG(mode):
        return "not_a_regular_file"
    if is_ignored(name, inbox.ignore):
        return "ignored"
    marker = inbox.done_marker
    if marker is not None:
        if is_marker(marker, name):
            return "done_marker"  # taken away with its files, never sent
        if marker_of(marker, name) not in present:
            return "waiting_for_marker"
    why = why_left(inbox, name)
    return None if why is None else str(why)


def _file(
    inbox: InboxConfig,
    path: Path,
    route: Route,
    journal: Journal | None,
    common: dict[str, object],
) -> None:
    log = get_logger()
    conversation = route.conversation_id or inbox.conversation_id
    kind = classify_file(path)
    if kind.reason is not None:
        log.info("would_fail", **common, reason=kind.reason, detail=kind.detail)
        return
    if inbox.duplicates == Duplicates.SKIP and journal is not None:
        digest = sha256_of(path, kind.size)
        earlier = (
            journal.sent_before(conversation, digest, inbox.duplicate_window) if digest else None
        )
        if earlier is not None:
            log.info(
                "would_fail",
                **common,
                reason=Reason.DUPLICATE,
                duplicate_of={
                    "message_id": earlier.message_id,
                    "file": earlier.name,
                    "sent_at": utc_iso(earlier.sent_at),
                },
            )
            return
    caption = render_caption(
        inbox.text,
        name=path.name,
        message_type=kind.message_type,
        content_type=kind.content_type,
        size=kind.size,
        inbox=inbox.name,
        fields=route.fields,
    )
    log.info(
        "would_send",
        **common,
        message_type=kind.message_type,
        content_type=kind.content_type,
        size=kind.size,
        caption=caption,
    )
