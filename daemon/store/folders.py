"""Counting what lies in an inbox's folders: claims in progress, files in ``sent/``/``failed/``."""

from __future__ import annotations

import os
import re
from pathlib import Path

from daemon.store.archive import SIDECAR_HASH_DIGITS, SIDECAR_SUFFIX, sidecar_name
from daemon.store.claims import WORK_DIR

#: The end of a shortened sidecar name (see :func:`~daemon.store.archive.sidecar_name`).
_SHORTENED_TAIL = re.compile(rf"~[0-9a-f]{{{SIDECAR_HASH_DIGITS}}}{re.escape(SIDECAR_SUFFIX)}$")


def is_sidecar(name: str, names: set[str]) -> bool:
    """A sidecar sits next to its file: ``x.pdf.error.json`` counts as one only when
    ``x.pdf`` is there too (a failed file may itself be called ``notes.error.json``); a
    sidecar name shortened to fit (a file name near 255 bytes) only when its file is."""
    if not name.endswith(SIDECAR_SUFFIX):
        return False
    if name[: -len(SIDECAR_SUFFIX)] in names:
        return True
    tail = _SHORTENED_TAIL.search(name)
    if tail is None:
        return False
    start = name[: tail.start()]
    return any(other.startswith(start) and sidecar_name(other) == name for other in names)


def regular_files(folder: Path) -> list[str]:
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
    names = set(regular_files(folder))
    return sum(1 for name in names if not is_sidecar(name, names))


def count_in_progress(inbox: Path) -> int:
    """Claimed files of every owner, live or dead, not yet archived."""
    total = 0
    try:
        owners = [p for p in (inbox / WORK_DIR).iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return 0
    for owner in owners:
        try:
            total += sum(1 for claim in owner.iterdir() if regular_files(claim))
        except OSError:
            continue
    return total
