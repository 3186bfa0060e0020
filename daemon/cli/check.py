"""``check-config``: what the configuration would watch, and how, in lines for a person."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum

from daemon.cli.probe import probe as probe_api
from daemon.config import Config
from daemon.config.model import IntakeSettings
from daemon.states import ExitCode
from daemon.store.journal import JOURNAL_FILE, Journal
from daemon.watch.inboxes import all_inboxes
from daemon.watch.mounts import network_filesystem


def check_config(config: Config, *, probe: bool) -> int:
    """``check-config``: what would be watched, and how; with ``probe``, ask the API too."""
    for line in describe(config):
        print(line)
    print(check_journal(config))  # a damaged one: command_failed naming it, exit 1
    fstype = network_filesystem(config.state_dir)
    if fstype is not None:  # see the README: SQLite's WAL needs a local disk
        print(f"warning: state_dir {config.state_dir} is on a network filesystem ({fstype})")
    return probe_api(config) if probe else ExitCode.OK


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
        lines.append(f"    {intake_line(inbox)}")
    retention = config.sent_retention_days
    lines += [
        f"observer: {config.observer}, rescan every {config.rescan_interval:g}s",
        f"workers: {config.workers}",
        f"top-level defaults: {intake_line(config)}",
        f"retry: {config.retry.initial_delay:g}s doubling to {config.retry.max_delay:g}s, "
        f"give up after {config.retry.give_up_after:g}s",
        f"log: {config.log.format}, {config.log.level}",
        "metrics: " + (_format_listen(config.metrics.listen) if config.metrics.listen else "off"),
        "sent retention: " + (f"{retention:g} days" if retention is not None else "keep forever"),
    ]
    return lines


def intake_line(settings: IntakeSettings) -> str:
    """Every intake setting in force, as ``key=value`` in the file's words (an inbox's
    own, else the top-level one)."""
    return " ".join(
        f"{one.name}={_value(getattr(settings, one.name))}"
        for one in dataclasses.fields(IntakeSettings)
    )


def _value(value: object) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, ensure_ascii=False)


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
