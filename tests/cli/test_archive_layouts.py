"""``status`` and ``requeue`` through the installed command over sent/ and failed/ trees that
mix the flat, monthly and daily layouts (a layout changed later leaves such a mix)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemon.fake.api import FakeApi
from tests.helpers import events, run_cli, write_config

#: Where the files of each layout lie below sent/ or failed/.
LAYOUT_FOLDERS = {"flat": ".", "monthly": "2025/12", "daily": "2026/01/15"}


def _fail(folder: Path, name: str, reason: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"%PDF-1.4\n" + name.encode())
    sidecar = {"reason": reason, "file": name}
    (folder / f"{name}.error.json").write_text(json.dumps(sidecar), encoding="utf-8")


def _mixed_inbox(inbox: Path) -> None:
    """Per layout: two sent files and two failed ones (one empty_file, one rejected)."""
    for layout, below in LAYOUT_FOLDERS.items():
        sent = inbox / "sent" / below
        sent.mkdir(parents=True, exist_ok=True)
        for n in (1, 2):
            (sent / f"{layout}-{n}.pdf").write_bytes(b"%PDF-1.4\n")
        _fail(inbox / "failed" / below, f"{layout}-empty.pdf", "empty_file")
        _fail(inbox / "failed" / below, f"{layout}-rejected.pdf", "rejected")
    # Not part of the archive: another folder, a hidden one.
    _fail(inbox / "failed" / "by-hand", "mine.pdf", "empty_file")
    (inbox / "sent" / ".trash").mkdir()
    (inbox / "sent" / ".trash" / "old.pdf").write_bytes(b"%PDF-1.4\n")


def _status(config: Path) -> dict[str, Any]:
    result = run_cli("status", "-c", str(config), "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["inboxes"]
    return dict(row)


def test_status_counts_every_layout_and_requeue_finds_failed_files_in_each(
    api: FakeApi, tmp_path: Path
) -> None:
    """status counts sent/failed files of all three layouts at once; requeue --reason takes
    the matching failed files from each, under their own names, drops their sidecars and
    the dated folders it emptied, and leaves failed/ itself and foreign folders alone."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    _mixed_inbox(inbox)

    row = _status(config)
    assert (row["sent"], row["failed"], row["waiting"]) == (6, 6, 0)

    result = run_cli("requeue", "-c", str(config), "--reason", "empty_file")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    moved = sorted((line["file"], line["to"]) for line in events(lines, "file_requeued"))
    assert moved == [
        ("2025/12/monthly-empty.pdf", "monthly-empty.pdf"),
        ("2026/01/15/daily-empty.pdf", "daily-empty.pdf"),
        ("flat-empty.pdf", "flat-empty.pdf"),
    ]
    assert sorted(p.name for p in inbox.glob("*.pdf")) == [
        "daily-empty.pdf", "flat-empty.pdf", "monthly-empty.pdf",
    ]  # fmt: skip
    assert not list((inbox / "failed").rglob("*-empty.pdf*"))
    row = _status(config)
    assert (row["failed"], row["waiting"]) == (3, 3)

    assert run_cli("requeue", "-c", str(config)).returncode == 0
    failed = inbox / "failed"
    assert sorted(p.relative_to(failed).as_posix() for p in failed.rglob("*")) == [
        "by-hand", "by-hand/mine.pdf", "by-hand/mine.pdf.error.json",
    ]  # fmt: skip
    row = _status(config)
    assert (row["sent"], row["failed"], row["waiting"]) == (6, 0, 6)
