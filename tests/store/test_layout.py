"""Archive layouts: dated folders for sent/ and failed/, never overwriting, crash-safe; the
archive tree is read the same in every layout and in a mix of them."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from daemon.config.model import ArchiveLayout
from daemon.store.archive import (
    FAILED_DIR,
    SENT_DIR,
    SIDECAR_DRAFT,
    archive_folder,
    archived_name,
    move_to_failed,
    move_to_sent,
    place_sidecar_draft,
)
from daemon.store.claims import Claim, Owner
from daemon.store.folders import archive_folders, count_archived, remove_emptied


def _claim(owner: Owner, inbox: Path, name: str, data: bytes = b"%PDF-1.4 test") -> Claim:
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / name).write_bytes(data)
    claim = owner.claim(inbox, name)
    assert claim is not None
    return claim


def _today() -> tuple[str, str, str]:
    now = datetime.now(UTC)
    return f"{now:%Y}", f"{now:%m}", f"{now:%d}"


def test_archive_folder_names_the_utc_day_or_month() -> None:
    """daily: YYYY/MM/DD, monthly: YYYY/MM, flat: the top itself; the day is UTC's."""
    top = Path("/inbox/sent")
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert archive_folder(top, ArchiveLayout.DAILY, late) == top / "2026" / "11" / "30"
    assert archive_folder(top, ArchiveLayout.MONTHLY, late) == top / "2026" / "11"
    assert archive_folder(top, ArchiveLayout.FLAT, late) == top
    # 23:30 UTC is already the next day (and month) east of Greenwich: UTC decides.
    assert archive_folder(top, ArchiveLayout.DAILY, late.astimezone()) == top / "2026/11/30"


def test_sent_goes_into_todays_folder_and_never_overwrites_there(tmp_path: Path) -> None:
    """A daily sent file lands in sent/YYYY/MM/DD/; a name taken there gets a variant in
    that folder, while the same name elsewhere in sent/ does not matter."""
    owner = Owner()
    folder = tmp_path / SENT_DIR / Path(*_today())
    folder.mkdir(parents=True)
    (folder / "scan.pdf").write_bytes(b"older")
    (tmp_path / SENT_DIR / "page.pdf").write_bytes(b"flat, from before")

    first = move_to_sent(_claim(owner, tmp_path, "scan.pdf", b"newer"), ArchiveLayout.DAILY)
    second = move_to_sent(_claim(owner, tmp_path, "page.pdf", b"paged"), ArchiveLayout.DAILY)

    assert first == folder / "scan (1).pdf"
    assert (folder / "scan.pdf").read_bytes() == b"older"
    assert first.read_bytes() == b"newer"
    assert second == folder / "page.pdf"
    assert (tmp_path / SENT_DIR / "page.pdf").read_bytes() == b"flat, from before"
    owner.release()


def test_failed_goes_into_the_month_folder_with_its_sidecar(tmp_path: Path) -> None:
    """A monthly failed file and its sidecar sit together in failed/YYYY/MM/."""
    owner = Owner()
    claim = _claim(owner, tmp_path, "logo.bmp", b"BM....")
    target = move_to_failed(claim, {"reason": "unsupported_type"}, ArchiveLayout.MONTHLY)
    year, month, _ = _today()
    folder = tmp_path / FAILED_DIR / year / month
    assert target == folder / "logo.bmp"
    sidecar = json.loads((folder / "logo.bmp.error.json").read_text())
    assert sidecar == {"reason": "unsupported_type", "file": "logo.bmp"}
    assert archived_name(claim, target) == f"{year}/{month}/logo.bmp"
    assert sorted(p.name for p in (tmp_path / FAILED_DIR).iterdir()) == [year]
    owner.release()


def test_a_sidecar_draft_finds_its_dated_file_even_after_the_layout_changed(
    tmp_path: Path,
) -> None:
    """The file moved into failed/<day>/ before a crash; the next run, configured flat
    now, still puts the draft next to it (the draft's mtime names the day)."""
    owner = Owner()
    claim = _claim(owner, tmp_path, "logo.bmp", b"BM....")
    (claim.folder / SIDECAR_DRAFT).write_text('{"reason": "unsupported_type"}')
    when = datetime(2026, 3, 9, 12, 0, tzinfo=UTC).timestamp()
    os.utime(claim.folder / SIDECAR_DRAFT, (when, when))
    folder = tmp_path / FAILED_DIR / "2026" / "03" / "09"
    folder.mkdir(parents=True)
    (folder / "logo.bmp").write_bytes(b"an older failure")
    (folder / "logo.bmp.error.json").write_text("{}")
    (tmp_path / FAILED_DIR / "logo.bmp").write_bytes(b"an older flat failure")
    (tmp_path / FAILED_DIR / "logo.bmp.error.json").write_text("{}")
    os.rename(claim.path, folder / "logo (1).bmp")  # what the crashed run got done

    target = place_sidecar_draft(claim, "logo.bmp", ArchiveLayout.FLAT)

    assert target == folder / "logo (1).bmp"
    assert json.loads((folder / "logo (1).bmp.error.json").read_text()) == {
        "reason": "unsupported_type"
    }
    assert (tmp_path / FAILED_DIR / "logo.bmp.error.json").read_text() == "{}"
    owner.release()


def _mixed_tree(top: Path) -> None:
    """Two files of each layout in ``top``, sidecars, and things that are not archived files."""
    for folder in (top, top / "2025" / "12", top / "2026" / "01" / "15"):
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("a.pdf", "b.pdf"):
            (folder / name).write_bytes(b"x")
        (folder / "a.pdf.error.json").write_text("{}")
    (top / "2026" / "stray.pdf").write_bytes(b"directly in a year folder: not a layout")
    (top / "keep").mkdir()
    (top / "keep" / "c.pdf").write_bytes(b"a folder of someone else's")
    (top / "2026" / "13").mkdir()
    (top / "2026" / "13" / "d.pdf").write_bytes(b"no month 13")
    (top / ".hidden").mkdir()
    (top / ".hidden" / "e.pdf").write_bytes(b"x")
    (top / "2024").symlink_to(top / "2025")


def test_the_archive_tree_is_the_top_and_its_dated_folders(tmp_path: Path) -> None:
    """Flat, monthly and daily files are counted (sidecars not); other subfolders, a year
    folder's own files, hidden folders and symlinked folders are not part of it."""
    top = tmp_path / SENT_DIR
    _mixed_tree(top)
    folders = [folder.relative_to(top).as_posix() for folder, _ in archive_folders(top)]
    assert folders == [".", "2025/12", "2026/01", "2026/01/15"]
    assert count_archived(top) == 6
    assert count_archived(tmp_path / "nothing-yet") == 0


def test_emptied_dated_folders_go_but_never_the_top_or_a_busy_parent(tmp_path: Path) -> None:
    """An emptied day folder goes with its emptied month and year; a month that still
    holds a day stays; the top stays even when empty; a symlink is never removed."""
    top = tmp_path / SENT_DIR
    for day in ("2026/01/15", "2026/02/01", "2026/02/02"):
        (top / day).mkdir(parents=True)
    (top / "2026" / "02" / "02" / "x.pdf").write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (top / "2027").symlink_to(tmp_path / "elsewhere")

    removed = remove_emptied(top, [top / "2026/01/15", top / "2026/02/01", top, top / "2027"])

    assert removed == 3  # 2026/01/15, 2026/01, 2026/02/01
    assert sorted(p.relative_to(top).as_posix() for p in top.rglob("*")) == [
        "2026", "2026/02", "2026/02/02", "2026/02/02/x.pdf", "2027",
    ]  # fmt: skip
    assert (tmp_path / "elsewhere").is_dir()
