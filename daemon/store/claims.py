"""Claims: how a file is taken out of its inbox, and whose it is while it waits.

A claimed file waits in ``<inbox>/.sendseven-watch/<owner>/<claim_id>/<name>``:

- ``<owner>`` is one running daemon process. It holds an exclusive ``flock`` on that folder
  for as long as it lives, so another daemon (or the next run after a crash) can tell a live
  owner from a dead one and adopt only the dead one's claims.
- ``<claim_id>`` is a folder of its own so that the original name, up to 255 bytes, is kept,
  and so that two files of the same name can be in progress at once.
- Claiming is one ``rename(2)`` from the inbox: atomic, so of two daemons racing for a file
  exactly one wins and the other sees ``ENOENT``.
- A file from a subfolder of a recursive inbox keeps its relative path inside the claim
  folder (``<claim_id>/2026-11/scan.pdf``): the claim's ``name`` is ``2026-11/scan.pdf``,
  and survives a crash with the file itself. The dropper's subfolder stays where it is.

Directories are fsynced after the renames that matter, so that a power cut cannot undo a
claim.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The hidden folder inside each inbox that holds the claims. Hidden: never an inbox,
#: never taken as a file, never archived into.
WORK_DIR = ".sendseven-watch"


def fsync_dir(path: Path) -> None:
    """Make the renames in ``path`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Claim:
    """A file taken out of its inbox, waiting in its claim folder."""

    inbox: Path
    """The inbox folder it was dropped into."""
    claim_id: str
    """Unique id of this claim; also the file's ``Idempotency-Key``."""
    name: str
    """The original file name; for a file from a subfolder, its path relative to the inbox
    (``2026-11/scan.pdf``)."""
    owner_dir: Path
    """The owner folder the claim lives in now."""

    # Cached: asked for at every step of the file, and a Path join is not free. (A
    # cached_property writes the instance's __dict__ directly, so a frozen class is fine.)
    @functools.cached_property
    def folder(self) -> Path:
        return self.owner_dir / self.claim_id

    @functools.cached_property
    def path(self) -> Path:
        return self.folder / self.name


def new_claim_id() -> str:
    """A fresh claim id (and Idempotency-Key)."""
    return f"sw-{secrets.token_hex(12)}"


class Owner:
    """This process's claim folders, one per inbox, each held with an exclusive flock."""

    def __init__(self, owner_id: str | None = None) -> None:
        self.owner_id = owner_id or secrets.token_hex(6)
        self._locks: dict[Path, int] = {}
        # Claims (settle thread) and adoptions (observer and main threads) ask at once:
        # one of them must not close an fd that another has just cached.
        self._mutex = threading.Lock()

    def folder(self, inbox: Path) -> Path:
        """This owner's claim folder in ``inbox``, created and locked on first use, and
        again whenever it has vanished since."""
        folder = inbox / WORK_DIR / self.owner_id
        with self._mutex:
            fd = self._locks.get(inbox)
            if fd is not None and _is_open_as(fd, folder):
                return folder
            if fd is not None:
                # The folder was deleted (the inbox deleted and created again, or the
                # hidden folder removed by hand), and our flock went with it: claims
                # would point at a folder that is gone. Make and lock a new one.
                del self._locks[inbox]
                os.close(fd)
            # Not parents=True: that would bring back an inbox deleted meanwhile.
            (inbox / WORK_DIR).mkdir(exist_ok=True)
            folder.mkdir(exist_ok=True)
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                # Never wait: between mkdir and flock another daemon may take the empty
                # folder for a dead owner's. Then this claim fails (claim_failed), and the
                # next one makes the folder again.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise
            self._locks[inbox] = fd
            return folder

    def release(self, inbox: Path | None = None) -> None:
        """Unlock (and forget) the claim folder of one inbox, or of all; an empty one
        is removed (a claim left in it is adopted by the next run)."""
        with self._mutex:
            for key in [inbox] if inbox is not None else list(self._locks):
                fd = self._locks.pop(key, None) if key is not None else None
                if fd is not None:
                    with contextlib.suppress(OSError):
                        (key / WORK_DIR / self.owner_id).rmdir()
                    os.close(fd)

    def claim(self, inbox: Path, name: str) -> Claim | None:
        """Take ``inbox/name`` by atomic rename; ``None`` when someone else was faster."""
        (taken,) = self.claim_all(inbox, [name])
        if isinstance(taken, OSError):
            raise taken
        return taken

    def claim_all(self, inbox: Path, names: Sequence[str]) -> list[Claim | OSError | None]:
        """Take each of ``names`` of ``inbox`` by atomic rename, then make the renames
        durable together (:func:`sync_claims`); per name, its claim, ``None`` when someone
        else was faster, or the error that left it in the inbox."""
        owner_dir = self.folder(inbox)
        taken: list[Claim | OSError | None] = []
        for name in names:
            try:
                taken.append(_take(inbox, name, owner_dir))
            except OSError as error:
                taken.append(error)
        sync_claims([claim for claim in taken if isinstance(claim, Claim)])
        return taken

    def own_claims(self, inbox: Path) -> Iterator[Claim]:
        """Claims in this owner's folder of ``inbox`` (e.g. after adopting)."""
        folder = inbox / WORK_DIR / self.owner_id
        yield from _claims_in(inbox, folder)

    def adopt_orphans(self, inbox: Path) -> list[Claim]:
        """Move the claims of dead owners of ``inbox`` into this owner's folder."""
        return [claim for claims in self.adopt(inbox).values() for claim in claims]

    def adopt(self, inbox: Path) -> dict[str, list[Claim]]:
        """Move the claims of dead owners of ``inbox`` into this owner's folder; per dead
        owner's id, the claims taken from it. Never waits: an owner whose folder is locked
        is alive (or being adopted by another daemon right now) and is left alone. Safe
        while this owner runs: only other owners' folders are touched."""
        root = inbox / WORK_DIR
        adopted: dict[str, list[Claim]] = {}
        try:
            others = [p for p in root.iterdir() if p.name != self.owner_id]
        except (FileNotFoundError, NotADirectoryError):
            return adopted
        for other in others:
            if not other.is_dir() or other.is_symlink():
                continue
            try:
                fd = os.open(other, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live daemon owns it
                continue
            try:
                mine = self.folder(inbox)
                for old in _claims_in(inbox, other):
                    try:
                        os.rename(old.folder, mine / old.claim_id)
                    except OSError:
                        continue
                    claim = Claim(inbox, old.claim_id, old.name, mine)
                    adopted.setdefault(other.name, []).append(claim)
                for leftover in other.iterdir():  # empty claim folders of a crash
                    with contextlib.suppress(OSError):
                        leftover.rmdir()
                with contextlib.suppress(OSError):
                    other.rmdir()
            finally:
                os.close(fd)
        if adopted:
            fsync_dir(self.folder(inbox))
        return adopted


def _is_open_as(fd: int, folder: Path) -> bool:
    """``fd`` is the folder at ``folder`` now. The open fd keeps its inode allocated, so
    a folder made anew at that path can never look the same."""
    try:
        held, there = os.fstat(fd), folder.lstat()
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def _claims_in(inbox: Path, owner_dir: Path) -> Iterator[Claim]:
    try:
        folders = sorted(owner_dir.iterdir())
    except FileNotFoundError:
        return
    for folder in folders:
        if folder.is_symlink() or not folder.is_dir():
            continue
        names = claimed_names(folder)
        if len(names) == 1:
            yield Claim(inbox, folder.name, names[0], owner_dir)
        elif not names:
            # Claimed folder whose file already went to sent/ or failed/ (or never came).
            yield Claim(inbox, folder.name, "", owner_dir)


def _take(inbox: Path, name: str, owner_dir: Path) -> Claim | None:
    """Rename ``inbox/name`` into a new claim folder in ``owner_dir`` (not yet synced)."""
    claim = Claim(inbox, new_claim_id(), name, owner_dir)
    claim.folder.mkdir()
    if "/" in name:  # from a subfolder: its folders inside the claim folder too
        claim.path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(inbox / name, claim.path)
    except FileNotFoundError:
        drop_claim_folder(claim)
        return None
    except OSError:
        drop_claim_folder(claim)
        raise
    return claim


def sync_claims(claims: Sequence[Claim]) -> None:
    """Make the renames of ``claims`` durable: each folder they left and each folder they
    went to, synced once however many claims share it. A batch of claims from one inbox
    syncs the inbox once, not once per file."""
    folders: dict[Path, None] = {}
    for claim in claims:
        folders[(claim.inbox / claim.name).parent] = None
    for claim in claims:
        folders[claim.path.parent] = None
        folders[claim.folder] = None
    for folder in folders:
        fsync_dir(folder)


def claimed_names(folder: Path) -> list[str]:
    """The non-hidden files in a claim folder; a file from a subfolder by its relative
    path (the claim folder's own subfolders, never a symlink, are looked into)."""
    names: list[str] = []
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and not entry.is_symlink():
            # Its file by its relative path; nothing when the file already went.
            names.extend(f"{entry.name}/{name}" for name in claimed_names(entry))
            continue
        names.append(entry.name)
    return names


def drop_claim_folder(claim: Claim) -> None:
    """Remove the (empty) claim folder once the file is archived, with the subfolders that
    kept a file's relative path."""
    if "/" in claim.name or not claim.name:  # not known: an archived file's leftovers
        for root, folders, _ in os.walk(claim.folder, topdown=False):
            for folder in folders:
                with contextlib.suppress(OSError):  # only an empty one (a symlink is refused)
                    Path(root, folder).rmdir()
    with contextlib.suppress(OSError):
        claim.folder.rmdir()
