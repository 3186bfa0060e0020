"""Archive moves and sidecars: the only code that puts files into ``sent/`` and ``failed/``.

Archive moves never overwrite: ``link(2)`` + ``unlink(2)`` fails with ``EEXIST`` instead of
replacing a file, and the next free name (``scan (1).pdf``) is tried. Directories are fsynced
after the renames that matter, so that a power cut cannot undo an archive.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from daemon.store.claims import Claim, fsync_dir

SENT_DIR = "sent"
FAILED_DIR = "failed"
SIDECAR_SUFFIX = ".error.json"
#: Longest file name most filesystems take, in bytes.
NAME_MAX = 255
#: Hex digits of the sha256 of a file's name that a shortened sidecar name carries.
SIDECAR_HASH_DIGITS = 10


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: The sidecar of a failed file while it is written, in the claim folder (hidden: never
#: taken for the claimed file).
SIDECAR_DRAFT = f".sidecar{SIDECAR_SUFFIX}"


def _encoded(name: str) -> bytes:
    """A file name's bytes as on disk (names that are not UTF-8 come as surrogates)."""
    return name.encode("utf-8", "surrogateescape")


def _cut(text: str, room: int) -> str:
    """The longest start of ``text`` within ``room`` bytes, never half a character."""
    used = 0
    for index, char in enumerate(text):
        used += len(_encoded(char))
        if used > room:
            return text[:index]
    return text


def sidecar_name(name: str) -> str:
    """The sidecar of the failed file ``name``: ``<name>.error.json``, or, when that would
    exceed NAME_MAX bytes, the name cut to fit, ``~``, the first SIDECAR_HASH_DIGITS hex
    digits of the sha256 of the whole name, and ``.error.json``. The sidecar's ``file``
    field names the file either way."""
    full = name + SIDECAR_SUFFIX
    if len(_encoded(full)) <= NAME_MAX:
        return full
    digest = hashlib.sha256(_encoded(name)).hexdigest()[:SIDECAR_HASH_DIGITS]
    tail = f"~{digest}{SIDECAR_SUFFIX}"
    return _cut(name, NAME_MAX - len(tail)) + tail


def _candidates(name: str) -> Iterator[str]:
    """``name``, then ``stem (1).ext``, ``stem (2).ext``, …, each within NAME_MAX bytes."""
    yield name
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension, or a leading-dot name
        stem, dot, ext = name, "", ""
    n = 1
    while True:
        suffix = f" ({n}){dot}{ext}"
        room = NAME_MAX - len(_encoded(suffix)) - len(SIDECAR_SUFFIX)
        yield f"{_cut(stem, room)}{suffix}"
        n += 1


def _taken(path: Path) -> bool:
    """Something (a dangling symlink too) is at ``path``: one lstat."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _free(folder: Path, candidate: str, with_sidecar: bool) -> bool:
    if _taken(folder / candidate):
        return False
    return not (with_sidecar and (folder / sidecar_name(candidate)).exists())


def move_no_overwrite(source: Path, folder: Path, name: str, *, with_sidecar: bool = False) -> Path:
    """Move ``source`` into ``folder`` under ``name`` or the next free variant of it."""
    # One mkdir, no stat: a file named like the folder fails the link below instead.
    with contextlib.suppress(FileExistsError):
        folder.mkdir()
    earlier = _earlier_link(source, folder)
    if earlier is not None:  # a crash fell between link and unlink: finish that move
        os.unlink(source)
        return earlier
    for candidate in _candidates(name):
        # link(2) refuses a taken name by itself; only a sidecar's name needs a look first.
        if with_sidecar and not _free(folder, candidate, with_sidecar):
            continue
        target = folder / candidate
        try:
            os.link(source, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # Filesystems without hard links (some SMB/FAT mounts): the check is our only
            # guard, and rename is still atomic for the file itself.
            if not _free(folder, candidate, with_sidecar):
                continue
            os.rename(source, target)
        else:
            os.unlink(source)
        fsync_dir(folder)
        return target
    raise AssertionError("unreachable: _candidates never ends")


def _earlier_link(source: Path, folder: Path) -> Path | None:
    """The name in ``folder`` that already is ``source`` (same inode), if any."""
    st = source.lstat()
    if st.st_nlink < 2:
        return None
    with os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                other = entry.stat(follow_symlinks=False)
                if (other.st_ino, other.st_dev) == (st.st_ino, st.st_dev):
                    return Path(entry.path)
    return None


def move_to_sent(claim: Claim) -> Path:
    """Archive a sent file into ``<inbox>/sent/``. The claim folder stays until the
    outcome is journaled and logged (then :func:`drop_claim_folder`): a run that dies in
    between leaves it empty, and the next run reports the outcome."""
    return move_no_overwrite(claim.path, claim.inbox / SENT_DIR, claim.name)


def sidecar_text(body: Mapping[str, object]) -> str:
    """The sidecar as UTF-8 JSON. A name that is not UTF-8 keeps its bytes losslessly as
    ``\\udcXX`` escapes (json.loads gives the very name back), so requeue still finds it."""
    try:
        text = json.dumps(body, indent=2, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(body, indent=2, ensure_ascii=True)
    return text + "\n"


def move_to_failed(claim: Claim, sidecar: Mapping[str, object]) -> Path:
    """Archive a failed file into ``<inbox>/failed/`` next to ``<name>.error.json``.

    The sidecar is written in the claim folder first, so that it appears complete, and
    before the file moves, so that a run dying in between leaves it for the next run to
    put in place (:func:`place_sidecar_draft`). The claim folder stays, as in
    :func:`move_to_sent`."""
    folder = claim.inbox / FAILED_DIR
    draft = claim.folder / SIDECAR_DRAFT
    body = {**sidecar, "file": claim.name}
    draft.write_text(sidecar_text(body), encoding="utf-8")
    target = move_no_overwrite(claim.path, folder, claim.name, with_sidecar=True)
    os.replace(draft, folder / sidecar_name(target.name))
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
        if not (folder / sidecar_name(candidate)).exists():
            os.replace(draft, folder / sidecar_name(candidate))
            fsync_dir(folder)
            return target
    raise AssertionError("unreachable: _candidates never ends")
