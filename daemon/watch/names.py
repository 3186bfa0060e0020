"""Which names in an inbox are files to take, and how a file's state is compared.

Hidden names and names matching an ``ignore`` pattern are never taken; a file's
:func:`signature` (size, mtime, ctime, inode) is what must stand still before it is.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path

#: (size, mtime_ns, ctime_ns, inode): any write, ``utime``, rename or replacement moves it.
Signature = tuple[int, int, int, int]


def is_ignored(name: str, patterns: Iterable[str]) -> bool:
    """Hidden names and names matching an ignore pattern are never taken."""
    return name.startswith(".") or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def count_waiting(inbox: Path, ignore: tuple[str, ...]) -> int:
    """Files in the inbox that the daemon would take (settled or not); 0 if unreadable."""
    try:
        with os.scandir(inbox) as entries:
            return sum(
                1
                for e in entries
                if e.is_file(follow_symlinks=False) and not is_ignored(e.name, ignore)
            )
    except OSError:
        return 0
