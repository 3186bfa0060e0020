"""Reading what lies in an inbox's folders: claims in progress, and the archive trees
``sent/`` and ``failed/`` in every layout (flat, daily, monthly, and a mix of them after a
layout was changed).

An archive tree is its top folder plus the dated folders the daemon makes in it
(``YYYY/MM/`` and ``YYYY/MM/DD/``). Any other subfolder, a hidden one, and anything behind
a symlink are not part of it: never counted, requeued or pruned.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from daemon.config import InboxConfig
from daemon.store.archive import SIDECAR_HASH_DIGITS, SIDECAR_SUFFIX, sidecar_name
from daemon.store.claims import WORK_DIR, claimed_names

#: The end of a shortened sidecar name (see :func:`~daemon.store.archive.sidecar_name`).
_SHORTENED_TAIL = re.compile(rf"~[0-9a-f]{{{SIDECAR_HASH_DIGITS}}}{re.escape(SIDECAR_SUFFIX)}$")
#: The name of a dated folder at each depth below the top: year, month, day.
_DATED_NAMES = (
    re.compile(r"\d{4}"),
    re.compile(r"0[1-9]|1[0-2]"),
    re.compile(r"0[1-9]|[12]\d|3[01]"),
)


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


def archive_folders(
    top: Path,
    on_error: Callable[[Path, OSError], None] | None = None,
    *,
    mirrored: int = 0,
) -> Iterator[tuple[Path, list[str]]]:
    """Each folder of the archive tree ``top`` (``sent/`` or ``failed/``) with the names of
    the non-hidden regular files directly in it, the top first, then the dated folders in
    order. ``mirrored``: how deep a recursive inbox's own subfolders are mirrored below
    them (its ``max_depth``; 0 for an inbox that takes no subfolders, whose archive has no
    other folders the daemon made). A folder that cannot be read is passed to ``on_error``
    (a missing top is not an error: nothing was archived yet) and skipped; symlinks are
    never followed."""
    # (folder, depth among the dated folders or None below them, depth among mirrored)
    stack: list[tuple[Path, int | None, int]] = [(top, 0, 0)]
    while stack:
        folder, dated, mirror = stack.pop()
        files: list[str] = []
        below: list[tuple[str, int | None, int]] = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    with contextlib.suppress(OSError):  # gone meanwhile
                        if entry.is_file(follow_symlinks=False):
                            files.append(entry.name)
                        elif entry.is_dir(follow_symlinks=False):
                            below.extend(_descend(entry.name, dated, mirror, mirrored))
        except OSError as error:
            if on_error is not None and not (
                folder == top and isinstance(error, FileNotFoundError)
            ):
                on_error(folder, error)
            continue
        # Files directly in a year folder are not the daemon's: only YYYY/MM and YYYY/MM/DD
        # (unless the inbox mirrors its own subfolders, which may be named like a year).
        if dated != 1 or mirrored:
            yield folder, sorted(files)
        stack.extend(
            (folder / name, d, m) for name, d, m in sorted(below, key=lambda b: b[0], reverse=True)
        )


def _descend(
    name: str, dated: int | None, mirror: int, mirrored: int
) -> list[tuple[str, int | None, int]]:
    """Whether (and as what) the archive walk goes into the subfolder ``name``."""
    if dated is not None and dated < len(_DATED_NAMES) and _DATED_NAMES[dated].fullmatch(name):
        return [(name, dated + 1, mirror)]
    if mirror < mirrored:
        return [(name, None, mirror + 1)]
    return []


def mirrored_depth(inbox: InboxConfig) -> int:
    """How deep ``inbox`` mirrors its own subfolders in ``sent/`` and ``failed/``."""
    return inbox.max_depth if inbox.recursive else 0


def archived_files(top: Path, *, mirrored: int = 0) -> Iterator[tuple[Path, str]]:
    """(folder, name) of every archived file in the tree ``top``, sidecars left out
    (``mirrored``: see :func:`archive_folders`)."""
    for folder, names in archive_folders(top, mirrored=mirrored):
        present = set(names)
        for name in names:
            if not is_sidecar(name, present):
                yield folder, name


def count_archived(folder: Path, *, mirrored: int = 0) -> int:
    """Files in ``sent/`` or ``failed/`` in every layout, sidecars not counted."""
    return sum(1 for _ in archived_files(folder, mirrored=mirrored))


def remove_emptied(top: Path, folders: Iterable[Path]) -> int:
    """Remove those of ``folders`` (dated folders below ``top`` that something was just
    taken out of) that are empty now, and their dated parents that became empty; never
    ``top`` itself. How many were removed."""
    removed = 0
    for folder in sorted(set(folders), key=lambda f: len(f.parts), reverse=True):
        current = folder
        while current != top and current.is_relative_to(top):
            try:
                current.rmdir()  # only an empty folder; a symlink is refused (ENOTDIR)
            except OSError:
                break
            removed += 1
            current = current.parent
    return removed


def count_in_progress(inbox: Path) -> int:
    """Claimed files of every owner, live or dead, not yet archived."""
    total = 0
    try:
        owners = [p for p in (inbox / WORK_DIR).iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return 0
    for owner in owners:
        try:
            total += sum(1 for claim in owner.iterdir() if _holds_a_file(claim))
        except OSError:
            continue
    return total


def _holds_a_file(claim: Path) -> bool:
    """A claim folder still holds its file (directly, or in the subfolders that keep the
    path of a file from a subfolder of a recursive inbox)."""
    if regular_files(claim):
        return True
    try:
        return bool(claimed_names(claim))
    except OSError:
        return False
