"""Archive moves and sidecars: the only code that puts files into ``sent/`` and ``failed/``.

Archive moves never overwrite: ``link(2)`` + ``unlink(2)`` fails with ``EEXIST`` instead of
replacing a file, and the next free name (``scan (1).pdf``) is tried. Directories are fsynced
after the renames that matter, so that a power cut cannot undo an archive.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from daemon.store.claims import Claim, fsync_dir

SENT_DIR = "sent"
FAILED_DIR = "failed"
SIDECAR_SUFFIX = ".error.json"
#: Longest file name most filesystems take, in bytes.
NAME_MAX = 255


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: The sidecar of a failed file while it is written, in the claim folder (hidden: never
#: taken for the claimed file).
SIDECAR_DRAFT = f".sidecar{SIDECAR_SUFFIX}"


def _candidates(name: str) -> Iterator[str]:
    """``name``, then ``stem (1).ext``, ``stem (2).ext``, …, each within NAME_MAX bytes."""
    yield name
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension, or a leading-dot name
        stem, dot, ext = name, "", ""
    n = 1
    while True:
        suffix = f" ({n}){dot}{ext}"
        room = NAME_MAX - len(suffix.encode()) - len(SIDECAR_SUFFIX)
        short = stem.encode()[:room].decode(errors="ignore")
        yield f"{short}{suffix}"
        n += 1


def _free(folder: Path, candidate: str, with_sidecar: bool) -> bool:
    if (folder / candidate).exists() or (folder / candidate).is_symlink():
        return False
    return not (with_sidecar and (folder / (candidate + SIDECAR_SUFFIX)).exists())


def move_no_overwrite(source: Path, folder: Path, name: str, *, with_sidecar: bool = False) -> Path:
    """Move ``source`` into ``folder`` under ``name`` or the next free variant of it."""
    folder.mkdir(exist_ok=True)
    earlier = _earlier_link(source, folder, name)
    if earlier is not None:  # a crash fell between link and unlink: finish that move
        os.unlink(source)
        return earlier
    for candidate in _candidates(name):
        if not _free(folder, candidate, with_sidecar):
            continue
        target = folder / candidate
        try:
            os.link(source, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # Filesystems without hard links (some SMB/FAT mounts): the check above is
            # our only guard, and rename is still atomic for the file itself.
            os.rename(source, target)
        else:
            os.unlink(source)
        fsync_dir(folder)
        return target
    raise AssertionError("unreachable: _candidates never ends")


def _earlier_link(source: Path, folder: Path, name: str) -> Path | None:
    """The name in ``folder`` that already is ``source`` (same inode) and that this move
    would have chosen (``name`` or a variant of it), if any. Another name of the same
    inode is not this move's: two hard links dropped as ``h1.pdf`` and ``h2.pdf`` are two
    files, and each keeps its name."""
    st = source.lstat()
    if st.st_nlink < 2:
        return None
    with os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                other = entry.stat(follow_symlinks=False)
                same = (other.st_ino, other.st_dev) == (st.st_ino, st.st_dev)
                if same and _is_variant(entry.name, name):
                    return Path(entry.path)
    return None


def _is_variant(candidate: str, name: str) -> bool:
    """``candidate`` is ``name`` or one of the free-name variants ``stem (n).ext``."""
    if candidate == name:
        return True
    number = re.search(r" \((\d+)\)(?:\.[^.]*)?$", candidate)
    if number is None:
        return False
    n = int(number.group(1))
    return n > 0 and next(itertools.islice(_candidates(name), n, None)) == candidate


def move_to_sent(claim: Claim) -> Path:
    """Archive a sent file into ``<inbox>/sent/``. The claim folder stays until the
    outcome is journaled and logged (then :func:`drop_claim_folder`): a run that dies in
    between leaves it empty, and the next run reports the outcome."""
    return move_no_overwrite(claim.path, claim.inbox / SENT_DIR, claim.name)


def move_to_failed(claim: Claim, sidecar: Mapping[str, object]) -> Path:
    """Archive a failed file into ``<inbox>/failed/`` next to ``<name>.error.json``.

    The sidecar is written in the claim folder first, so that it appears complete, and
    before the file moves, so that a run dying in between leaves it for the next run to
    put in place (:func:`place_sidecar_draft`). The claim folder stays, as in
    :func:`move_to_sent`."""
    folder = claim.inbox / FAILED_DIR
    draft = claim.folder / SIDECAR_DRAFT
    body = {**sidecar, "file": claim.name}
    draft.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    target = move_no_overwrite(claim.path, folder, claim.name, with_sidecar=True)
    os.replace(draft, folder / (target.name + SIDECAR_SUFFIX))
    fsync_dir(folder)
    return target


def place_sidecar_draft(claim: Claim, name: str) -> Path | None:
    """After a crash between moving a failed file and placing its sidecar: put the draft
    left in the claim folder next to the file, which is the first ``name`` variant in
    ``failed/`` without a sidecar. The file's archived path, or None (no draft)."""
    draft = claim.folder / SIDECAR_DRAFT
    if not draft.exists():
        return None
    folder = claim.inbox / FAILED_DIR
    for candidate in _candidates(name):
        target = folder / candidate
        if not target.exists():
            return None  # the variants are taken in order: past the last one archived
        if not (folder / (candidate + SIDECAR_SUFFIX)).exists():
            os.replace(draft, folder / (candidate + SIDECAR_SUFFIX))
            fsync_dir(folder)
            return target
    raise AssertionError("unreachable: _candidates never ends")
