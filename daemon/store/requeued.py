"""The Idempotency-Key a requeued file must keep: its send may have reached the API.

A file failed as ``unconfirmed`` may exist as a message. ``requeue`` puts it back into its
inbox, and first leaves a marker naming the earlier claim's key in the inbox's hidden
folder: ``<inbox>/.sendseven-watch/requeued-<dev>-<inode>.json``. The claim of that very
file (same inode, size and mtime: the moves in between are renames, which keep them) takes
the key over into its journal entry, then drops the marker. Identical bytes dropped again
later are another file (another inode, or another mtime) and get a key of their own.

A file failed as ``duplicate`` is requeued to be sent anyway: its marker says so
(``send_anyway``), and its claim journals that it is never skipped as a duplicate.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from daemon.store.claims import WORK_DIR


@dataclass(frozen=True)
class RequeuedKey:
    """The key a claimed file keeps, and the marker that said so."""

    key: str | None
    """The Idempotency-Key of the earlier claim (None: the file gets its own)."""
    marker: Path
    """The marker file (dropped once the key is journaled)."""
    send_anyway: bool = False
    """Sent even when identical bytes went to its conversation just before."""

    def forget(self) -> None:
        with contextlib.suppress(OSError):
            self.marker.unlink()


def _marker(inbox: Path, st: os.stat_result) -> Path:
    return inbox / WORK_DIR / f"requeued-{st.st_dev}-{st.st_ino}.json"


def leave_key(inbox: Path, file: Path, key: str | None, *, send_anyway: bool = False) -> Path:
    """Say that ``file`` (about to be moved back into ``inbox``) keeps ``key``, and whether
    it is sent even as a duplicate."""
    st = file.lstat()
    marker = _marker(inbox, st)
    marker.parent.mkdir(exist_ok=True)
    body = {
        "idempotency_key": key,
        "send_anyway": send_anyway,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }
    draft = marker.with_name(f".{marker.name}.tmp")
    draft.write_text(json.dumps(body) + "\n", encoding="utf-8")
    os.replace(draft, marker)  # whole or not at all
    return marker


def requeued_key(inbox: Path, file: Path, st: os.stat_result | None = None) -> RequeuedKey | None:
    """The key ``file`` (claimed from ``inbox``; ``st``: its ``lstat``, if taken just now)
    keeps, if ``requeue`` left one for it."""
    try:
        st = st or os.lstat(file)
        marker = _marker(inbox, st)
        # Asked for every file, and almost never there: the plain calls, not pathlib's.
        with open(marker, encoding="utf-8") as handle:  # noqa: PTH123
            body = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    key = body.get("idempotency_key")
    if not isinstance(key, str) and not (key is None and body.get("send_anyway") is True):
        return None
    if (body.get("size"), body.get("mtime_ns")) != (st.st_size, st.st_mtime_ns):
        # Another file on a reused inode, or the requeued one written to since: its
        # content is not what was sent under that key.
        return None
    return RequeuedKey(key, marker, body.get("send_anyway") is True)
