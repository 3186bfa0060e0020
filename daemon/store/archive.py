"""Archive moves and sidecars: the only code that puts files into ``sent/`` and ``failed/``.

Archive moves never overwrite: ``link(2)`` + ``unlink(2)`` fails with ``EEXIST`` instead of
replacing a file, and the next free name (``scan (1).pdf``) is tried — within the folder the
file goes to. That folder is ``sent/``/``failed/`` itself, or with a dated layout its
``YYYY/MM/DD/`` or ``YYYY/MM/`` subfolder for the UTC day the file is archived
(:func:`archive_folder`); a file from a subfolder of a recursive inbox keeps its relative
folder below that (``sent/2026-11/scan.pdf``, ``sent/2026/11/26/2026-11/scan.pdf``).
Directories are fsynced after the renames that matter, so that a
power cut cannot undo an archive.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from daemon.config.model import ArchiveLayout
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


def archive_folder(top: Path, layout: ArchiveLayout, when: datetime) -> Path:
    """Where in ``top`` (``sent/`` or ``failed/``) a file archived at ``when`` goes."""
    day = when.astimezone(UTC)
    if layout is ArchiveLayout.DAILY:
        return top / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
    if layout is ArchiveLayout.MONTHLY:
        return top / f"{day:%Y}" / f"{day:%m}"
    return top


def _kept_path(folder: Path, name: str) -> tuple[Path, str]:
    """The folder and the name a file called ``name`` (relative to its inbox) is archived
    under in the archive folder ``folder``: its relative folder is kept."""
    below, _, base = name.rpartition("/")
    return (folder / below if below else folder), base


def _make_folder(folder: Path) -> None:
    """``folder`` and its missing parents, each new one made durable in its parent."""
    if folder.is_dir():
        return
    _make_folder(folder.parent)
    try:
        folder.mkdir()
    except FileExistsError:
        return  # made meanwhile (another worker, another daemon)
    fsync_dir(folder.parent)


def archived_name(claim: Claim, target: Path) -> str:
    """What ``archived_as`` says: the path below ``sent/`` or ``failed/`` (the file's name
    in a flat layout, ``2026/11/26/scan.pdf`` in a daily one)."""
    # By the strings: the archive paths are built from the inbox's own path, and
    # PurePath.relative_to (a parse of both paths) showed in the CPU per file.
    path = str(target)
    for top in (SENT_DIR, FAILED_DIR):
        prefix = f"{claim.inbox}/{top}/"
        if path.startswith(prefix):
            return path[len(prefix) :]
    return target.name


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
    return _move(source, folder, name, with_sidecar=with_sidecar)


def _move(source: Path, folder: Path, name: str, *, with_sidecar: bool = False) -> Path:
    """:func:`move_no_overwrite` into a folder that exists (made by :func:`_make_folder`:
    no second look at it, for every file archived)."""
    earlier = _earlier_link(source, folder, name)
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


def move_to_sent(claim: Claim, layout: ArchiveLayout = ArchiveLayout.FLAT) -> Path:
    """Archive a sent file into ``<inbox>/sent/`` (its dated folder with ``layout``). The
    claim folder stays until the outcome is journaled and logged (then
    :func:`drop_claim_folder`): a run that dies in between leaves it empty, and the next
    run reports the outcome."""
    top = archive_folder(claim.inbox / SENT_DIR, layout, datetime.now(UTC))
    folder, name = _kept_path(top, claim.name)
    _make_folder(folder)
    return _move(claim.path, folder, name)


def sidecar_text(body: Mapping[str, object]) -> str:
    """The sidecar as UTF-8 JSON. A name that is not UTF-8 keeps its bytes losslessly as
    ``\\udcXX`` escapes (json.loads gives the very name back), so requeue still finds it."""
    try:
        text = json.dumps(body, indent=2, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(body, indent=2, ensure_ascii=True)
    return text + "\n"


def move_to_failed(
    claim: Claim, sidecar: Mapping[str, object], layout: ArchiveLayout = ArchiveLayout.FLAT
) -> Path:
    """Archive a failed file into ``<inbox>/failed/`` (its dated folder with ``layout``)
    next to ``<name>.error.json``.

    The sidecar is written in the claim folder first, so that it appears complete, and
    before the file moves, so that a run dying in between leaves it for the next run to
    put in place (:func:`place_sidecar_draft`). The draft's mtime is the moment whose day
    names the folder, so that the next run knows where to look. The claim folder stays,
    as in :func:`move_to_sent`."""
    now = time.time()
    top = archive_folder(claim.inbox / FAILED_DIR, layout, datetime.fromtimestamp(now, UTC))
    folder, name = _kept_path(top, claim.name)
    draft = claim.folder / SIDECAR_DRAFT
    body = {**sidecar, "file": claim.name}
    draft.write_text(sidecar_text(body), encoding="utf-8")
    os.utime(draft, (now, now))
    _make_folder(folder)
    target = _move(claim.path, folder, name, with_sidecar=True)
    os.replace(draft, folder / sidecar_name(target.name))
    fsync_dir(folder)
    return target


def place_sidecar_draft(
    claim: Claim, name: str, layout: ArchiveLayout = ArchiveLayout.FLAT
) -> Path | None:
    """After a crash between moving a failed file and placing its sidecar: put the draft
    left in the claim folder next to the file, which is the first ``name`` variant without
    a sidecar in the folder the file went to. That folder is looked for in ``layout`` first,
    then in the others (the layout may have changed since). The file's archived path, or
    None (no draft, or no such file)."""
    draft = claim.folder / SIDECAR_DRAFT
    try:
        when = datetime.fromtimestamp(draft.stat().st_mtime, UTC)
    except FileNotFoundError:
        return None
    layouts = dict.fromkeys((layout, *ArchiveLayout))
    for folder in (archive_folder(claim.inbox / FAILED_DIR, one, when) for one in layouts):
        for candidate in _candidates(name):
            target = folder / candidate
            if not target.exists():
                break  # the variants are taken in order: past the last one archived
            if not (folder / sidecar_name(candidate)).exists():
                os.replace(draft, folder / sidecar_name(candidate))
                fsync_dir(folder)
                return target
    return None
