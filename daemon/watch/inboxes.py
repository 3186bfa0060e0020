"""Which folders are inboxes right now: the explicit ones plus the spool's subfolders.

The configuration only says where to look; these functions look (list and stat the spool),
so their answer changes as conversation folders are created and removed.
"""

from __future__ import annotations

from pathlib import Path

from daemon.config import Config, InboxConfig
from daemon.config.model import intake_of


def all_inboxes(config: Config) -> list[InboxConfig]:
    """The explicit inboxes plus every spool subfolder that exists now, sorted by path."""
    found = {inbox.path: inbox for inbox in config.inboxes}
    if config.spool is not None:
        try:
            entries = list(config.spool.iterdir())
        except OSError:
            entries = []  # a spool that went away has no inboxes; check-config reports it
        for entry in entries:
            inbox = spool_inbox(config, entry)
            if inbox is not None and inbox.path not in found:
                found[inbox.path] = inbox
    return sorted(found.values(), key=lambda inbox: inbox.path)


def spool_inbox(config: Config, folder: Path) -> InboxConfig | None:
    """The inbox for a spool subfolder, with the top-level settings; None if it is hidden,
    elsewhere or not a real folder."""
    folder = folder.absolute()  # not resolve(): a symlinked subfolder must stay one
    if config.spool is None or folder.parent != config.spool or folder.name.startswith("."):
        return None
    if config.state_dir.is_relative_to(folder):
        return None  # a state_dir set inside the spool is not a conversation
    for inbox in config.inboxes:
        if inbox.path == folder:
            return inbox
    # A symlinked subfolder could point anywhere (even at another inbox): never follow it.
    if folder.is_symlink() or not folder.is_dir():
        return None
    return InboxConfig(
        folder, folder.name, config.text, folder.name, from_spool=True, **intake_of(config)
    )
