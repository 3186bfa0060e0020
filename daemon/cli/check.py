"""``check-config``: what the configuration would watch, and how, in lines for a person."""

from __future__ import annotations

from daemon.config import Config
from daemon.store.journal import JOURNAL_FILE, Journal
from daemon.watch.inboxes import all_inboxes


def describe(config: Config) -> list[str]:
    """Human lines for ``check-config``: what would be watched, and how. Never the token."""
    lines = [
        f"config: {config.source or '(built in code)'}",
        f"api: {config.api.url} (tenant {config.api.tenant_id}, token set)",
        f"timeouts: connect {config.api.connect_timeout:g}s, read {config.api.read_timeout:g}s",
        f"spool: {config.spool or '(none)'}",
        f"state_dir: {config.state_dir}",
    ]
    inboxes = all_inboxes(config)
    lines.append(f"inboxes: {len(inboxes)}")
    for inbox in inboxes:
        origin = " (spool)" if inbox.from_spool else ""
        caption = f" text={inbox.text!r}" if inbox.text else ""
        lines.append(f"  {inbox.path} -> {inbox.conversation_id}{origin}{caption}")
    retention = config.sent_retention_days
    lines += [
        f"observer: {config.observer}, rescan every {config.rescan_interval:g}s, "
        f"settle {config.settle_seconds:g}s",
        f"workers: {config.workers}",
        f"ignore: {' '.join(config.ignore) or '(nothing)'}",
        f"retry: {config.retry.initial_delay:g}s doubling to {config.retry.max_delay:g}s, "
        f"give up after {config.retry.give_up_after:g}s",
        f"log: {config.log.format}, {config.log.level}",
        "metrics: " + (_format_listen(config.metrics.listen) if config.metrics.listen else "off"),
        "sent retention: " + (f"{retention:g} days" if retention is not None else "keep forever"),
    ]
    return lines


def _format_listen(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_journal(config: Config) -> str:
    """The journal's line for ``check-config``, read without changing it: a damaged one
    raises :class:`~daemon.errors.JournalUnusable` (which names it and what to do)."""
    path = config.state_dir / JOURNAL_FILE
    if not path.exists():
        return f"journal: {path} (none yet: the first run makes it)"
    journal = Journal(config.state_dir, read_only=True)
    try:
        unfinished = journal.check()
    finally:
        journal.close()
    return f"journal: {path} (ok, {unfinished} claims unfinished)"
