"""Counting what lies in an inbox's folders: claims in progress, files in ``sent/``/``failed/``."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.store.archive import SIDECAR_SUFFIX
from daemon.store.claims import WORK_DIR


def is_sidecar(name: str, names: set[str]) -> bool:
    """A sidecar sits next to its file: ``x.pdf.error.json`` counts as one only when
    ``x.pdf`` is there too (a failed file may itself be called ``notes.error.json``)."""
    return name.endswith(SIDECAR_SUFFIX) and name[: -len(SIDECAR_SUFFIX)] in names


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
