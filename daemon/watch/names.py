"""Which names in an inbox are files to take, and how a file's state is compared.

Hidden names and names matching an ``ignore`` pattern are never taken (deliberately, and
silently); a name that matches no ``include`` pattern, a file in a subfolder of an inbox that
is not ``recursive``, or one deeper than ``max_depth``, stays where it is and is logged once
(``file_ignored``, with :class:`Why`). A file's :func:`signature` (size, mtime, ctime, inode)
is what must stand still before it is taken.

A file in a subfolder is named by its path relative to the inbox (``2026-11/scan.pdf``):
:func:`walk` finds them; ``sent/``, ``failed/`` (at the top) and hidden folders are never
walked, and a symlink to a folder is never followed (it is a symlink, not a folder).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from pathlib import Path

from daemon.config import InboxConfig

#: Folders at the top of an inbox that are the daemon's own archives: never walked.
ARCHIVE_FOLDERS = frozenset(("sent", "failed"))


class Why(StrEnum):
    """Why a file is left where it is (``file_ignored``'s ``why``, README "Logs")."""

    SYMLINK = "symlink"
    NOT_REGULAR = "not a regular file"
    NOT_INCLUDED = "not_included"
    """Its name matches no ``include`` pattern."""
    IN_SUBFOLDER = "in_subfolder"
    """In a subfolder of an inbox that is not ``recursive``."""
    TOO_DEEP = "too_deep"
    """In a subfolder deeper than ``max_depth``."""
    ORPHAN_MARKER = "orphan_marker"
    """A done marker whose file has not arrived (``ORPHAN_MARKER_GRACE_SECONDS`` after it
    was written)."""


#: A done marker without its file is said (``orphan_marker``) once it is this old, in
#: seconds (by its mtime): the file may be written a moment after its marker.
ORPHAN_MARKER_GRACE_SECONDS = 60.0
#: A done marker is renamed to this prefix plus its name while its files are claimed, then
#: deleted: a run killed in between finds it (hidden: never taken) and finishes the job.
TAKEN_MARKER_PREFIX = ".sendseven-taken."
_PLACEHOLDERS = re.compile(r"\{(name|stem)\}")


def is_per_file(template: str) -> bool:
    """A ``done_marker`` with ``{name}`` or ``{stem}`` marks one file; without, a batch."""
    return _PLACEHOLDERS.search(template) is not None


def _split(name: str) -> tuple[str, str]:
    """(``2026-11/``, ``scan.pdf``): a relative name's folder prefix and last part."""
    folder, slash, base = name.rpartition("/")
    return folder + slash, base


def stem_of(base: str) -> str:
    stem, _, _ = base.rpartition(".")
    return stem or base


def marker_of(template: str, name: str) -> str:
    """The relative name of the marker that lets the file ``name`` be taken."""
    prefix, base = _split(name)
    if not is_per_file(template):
        return prefix + template
    values = {"name": base, "stem": stem_of(base)}
    return prefix + _PLACEHOLDERS.sub(lambda m: values[m.group(1)], template)


@functools.lru_cache(maxsize=64)
def marker_pattern(template: str) -> re.Pattern[str]:
    """A regex that matches the last part of a marker's name (per file: the file's name
    or stem in the group ``name``/``stem``; a placeholder used twice must match the same)."""
    regex, seen = [], set()
    for index, part in enumerate(_PLACEHOLDERS.split(template)):
        if index % 2 == 0:
            regex.append(re.escape(part))
        else:
            regex.append(f"(?P={part})" if part in seen else f"(?P<{part}>.+)")
            seen.add(part)
    return re.compile("".join(regex), re.DOTALL)


def is_marker(template: str, name: str) -> bool:
    """``name`` (relative) is a done marker of this ``done_marker`` template."""
    return marker_pattern(template).fullmatch(_split(name)[1]) is not None


#: (size, mtime_ns, ctime_ns, inode): any write, ``utime``, rename or replacement moves it.
Signature = tuple[int, int, int, int]


def is_ignored(name: str, patterns: Iterable[str]) -> bool:
    """Hidden names and names matching an ignore pattern are never taken (for a file in a
    subfolder, ``name`` is its path relative to the inbox: its last part is matched)."""
    name = name.rpartition("/")[2]
    return name.startswith(".") or _matcher(tuple(patterns))(name) is not None


@functools.lru_cache(maxsize=256)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """One regular expression for all of ``patterns`` (``fnmatchcase`` for each): a scan
    of 100,000 names matches each once, not once per pattern."""
    if not patterns:
        return lambda _: None
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)).match


def is_included(name: str, include: Iterable[str]) -> bool:
    """``name`` (its last part) matches an ``include`` pattern, or ``include`` is empty."""
    patterns = tuple(include)
    base = name.rpartition("/")[2]
    return not patterns or any(fnmatch.fnmatchcase(base, p) for p in patterns)


def why_left(inbox: InboxConfig, name: str) -> Why | None:
    """Why the regular file ``name`` (relative to the inbox) is not taken by its place or
    name; None when it is. Ignored names are the caller's (they are never logged)."""
    depth = name.count("/")
    if depth and not inbox.recursive:
        return Why.IN_SUBFOLDER
    if depth > inbox.max_depth:
        return Why.TOO_DEEP
    if not is_included(name, inbox.include):
        return Why.NOT_INCLUDED
    return None


def walk(
    inbox: InboxConfig,
    *,
    on_folder: Callable[[Path, str], None] | None = None,
    on_error: Callable[[Path, OSError], None] | None = None,
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry of the inbox that is not a folder walked, with its name relative to the
    inbox: the top, and its subfolders down to ``max_depth`` plus one level (so that a file
    too deep is found and said once, but a deep tree is never walked whole). Subfolders are
    walked whether or not the inbox is ``recursive`` (a file there is then said, not taken).

    ``on_folder`` hears of each subfolder walked (its path and relative name); a folder that
    vanished while walked is skipped; the inbox, or a subfolder that cannot be read, goes to
    ``on_error``."""
    stack: list[tuple[Path, str, int]] = [(inbox.path, "", 0)]
    while stack:
        folder, prefix, depth = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listing = list(entries)
        except OSError as error:
            if depth and isinstance(error, FileNotFoundError):
                continue  # a subfolder deleted while walked
            if on_error is not None:
                on_error(folder, error)
            continue
        for entry in listing:
            name = prefix + entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if not is_dir:
                yield name, entry
            elif _walked(entry.name, depth, inbox.max_depth):
                if on_folder is not None:
                    on_folder(Path(entry.path), name)
                stack.append((Path(entry.path), name + "/", depth + 1))


def _walked(folder: str, depth: int, max_depth: int) -> bool:
    """A subfolder named ``folder`` in a folder ``depth`` levels below the inbox is walked."""
    if folder.startswith(".") or (depth == 0 and folder in ARCHIVE_FOLDERS):
        return False
    return depth <= max_depth


def signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def count_files(inbox: InboxConfig) -> tuple[int, int]:
    """(waiting, ignored): files in the inbox and its subfolders that the daemon would take
    (settled, or waiting for its done marker), and those it leaves and says so
    (``file_ignored``); (0, 0) if unreadable. Names matching ``ignore`` and done markers
    are neither."""
    waiting = ignored = 0
    marker = inbox.done_marker
    for name, entry in walk(inbox):
        if is_ignored(name, inbox.ignore) or (marker is not None and is_marker(marker, name)):
            continue
        try:
            regular = entry.is_file(follow_symlinks=False)
        except OSError:
            continue
        if regular and why_left(inbox, name) is None:
            waiting += 1
        else:
            ignored += 1
    return waiting, ignored


def count_waiting(inbox: InboxConfig) -> int:
    """Files in the inbox that the daemon would take (settled or not); 0 if unreadable."""
    return count_files(inbox)[0]
