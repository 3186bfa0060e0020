"""Walking an inbox's subfolders: what is found, what is never walked, and a tree that
changes while it is walked."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.config import InboxConfig
from daemon.watch.names import Why, count_files, walk, why_left


def _inbox(path: Path, **settings: object) -> InboxConfig:
    path.mkdir(exist_ok=True)
    return InboxConfig(path, "conv_1", None, "conv_1", **settings)  # type: ignore[arg-type]


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"%PDF-1.4")


def test_sent_failed_and_hidden_folders_are_never_walked(tmp_path: Path) -> None:
    """Files in sent/, failed/ and hidden folders are not found; a sent/ deeper down is a
    dropper's folder and is."""
    inbox = _inbox(tmp_path / "in", recursive=True)
    for name in ("sent/a.pdf", "failed/b.pdf", ".work/c.pdf", "x/.h/d.pdf", "x/sent/e.pdf"):
        _touch(inbox.path / name)

    assert sorted(name for name, _ in walk(inbox)) == ["x/sent/e.pdf"]


def test_a_subfolder_deleted_while_walked_is_skipped(tmp_path: Path) -> None:
    """A folder removed between two steps of the walk is passed over without an error."""
    inbox = _inbox(tmp_path / "in", recursive=True)
    for name in ("a/1.pdf", "b/2.pdf", "c/3.pdf"):
        _touch(inbox.path / name)
    errors: list[Path] = []
    walking = walk(inbox, on_error=lambda folder, _: errors.append(folder))

    first, _ = next(walking)
    for folder in ("a", "b", "c"):
        if not first.startswith(folder):
            shutil.rmtree(inbox.path / folder)
    rest = [name for name, _ in walking]

    assert rest == []
    assert errors == []


def test_why_left_says_subfolder_depth_and_include(tmp_path: Path) -> None:
    """Not recursive: in_subfolder; recursive: too_deep past max_depth; include last."""
    flat = _inbox(tmp_path / "flat")
    deep = _inbox(tmp_path / "deep", recursive=True, max_depth=2, include=("*.pdf",))

    assert why_left(flat, "a/x.pdf") is Why.IN_SUBFOLDER
    assert why_left(flat, "x.pdf") is None
    assert why_left(deep, "a/b/x.pdf") is None
    assert why_left(deep, "a/b/c/x.pdf") is Why.TOO_DEEP
    assert why_left(deep, "a/x.txt") is Why.NOT_INCLUDED


def test_five_thousand_subfolders_are_counted_quickly(tmp_path: Path) -> None:
    """5,000 subfolders with a file each: counted (waiting) in well under two seconds."""
    inbox = _inbox(tmp_path / "in", recursive=True)
    for n in range(5000):
        _touch(inbox.path / f"{n:04d}" / "scan.pdf")

    started = time.monotonic()
    assert count_files(inbox) == (5000, 0)
    assert time.monotonic() - started < 2.0


def test_a_fifo_in_a_subfolder_is_found_and_counted_as_left(tmp_path: Path) -> None:
    """A FIFO in a subfolder is found by the walk (so it is said once, not taken) and
    counted by status as ignored, beside the file that would be taken."""
    inbox = _inbox(tmp_path / "in", recursive=True)
    _touch(inbox.path / "2026-11" / "scan.pdf")
    os.mkfifo(inbox.path / "2026-11" / "pipe")

    found = {name: entry.is_file(follow_symlinks=False) for name, entry in walk(inbox)}

    assert found == {"2026-11/scan.pdf": True, "2026-11/pipe": False}
    assert count_files(inbox) == (1, 1)


def test_a_subfolder_that_cannot_be_read_is_reported_and_the_rest_walked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subfolder the daemon may not list (EACCES: root reads everything, so the refusal
    is injected) goes to on_error; the other folders are still walked."""
    inbox = _inbox(tmp_path / "in", recursive=True)
    _touch(inbox.path / "locked" / "a.pdf")
    _touch(inbox.path / "open" / "b.pdf")
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    errors: list[Path] = []

    names = [name for name, _ in walk(inbox, on_error=lambda folder, _: errors.append(folder))]

    assert "open/b.pdf" in names
    assert "locked/a.pdf" not in names
    assert errors == [inbox.path / "locked"]
