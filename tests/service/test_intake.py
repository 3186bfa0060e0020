"""Intake as real droppers deliver (the installed command against the fake API): an
``include`` list, subfolders, done markers. Nothing a dropper leaves is ignored silently:
what is not taken stays, is logged once (``file_ignored``) and counted by ``status``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.fake.api import FakeApi
from tests.helpers import (
    Daemon,
    copy_sample,
    events,
    log_lines,
    run_cli,
    write_config,
)


def _inbox_config(
    tmp_path: Path, api_url: str, top: dict[str, Any] | None = None, **settings: Any
) -> tuple[Path, Path]:
    """One explicit inbox ``conv_a`` with ``settings`` (``top``: top-level keys);
    (config file, inbox folder)."""
    inbox = tmp_path / "conv_a"
    inbox.mkdir()
    config = write_config(
        tmp_path,
        api_url,
        settle_seconds=0.2,
        inboxes=[{"path": str(inbox), "conversation_id": "conv_a", **settings}],
        **(top or {}),
    )
    return config, inbox


def _status(config: Path) -> dict[str, Any]:
    result = run_cli("status", "-c", str(config), "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)["inboxes"]
    (row,) = (r for r in rows if r["inbox"] == "conv_a")
    return row


def _ignored(lines: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((line["file"], line["why"]) for line in events(lines, "file_ignored"))


def test_a_name_outside_include_stays_and_is_said_once(api: FakeApi, tmp_path: Path) -> None:
    """include ["*.pdf"]: the PDF is sent, notes.txt stays in the inbox, is logged once as
    file_ignored (why: not_included) and counted by status as ignored."""
    config, inbox = _inbox_config(tmp_path, api.url, include=["*.pdf"])
    copy_sample("document.pdf", inbox, "a.pdf")
    (inbox / "notes.txt").write_text("not for the conversation\n", encoding="utf-8")

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert [m.conversation_id for m in api.messages()] == ["conv_a"]
    assert (inbox / "sent" / "a.pdf").is_file()
    assert (inbox / "notes.txt").is_file()
    assert _ignored(log_lines(result.stdout)) == [("notes.txt", "not_included")]
    row = _status(config)
    assert (row["waiting"], row["ignored"]) == (0, 1)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_scanner_filing_by_month_is_taken_with_its_subfolder_kept(
    api: FakeApi, tmp_path: Path
) -> None:
    """recursive: conv_a/2026-11/scan.pdf goes to conv_a's conversation under its own name,
    captioned with {subfolder}, archived as sent/2026-11/scan.pdf; the scanner's folder
    stays; a file at the top still has an empty {subfolder}."""
    config, inbox = _inbox_config(
        tmp_path, api.url, recursive=True, text="[{subfolder}] {filename}"
    )
    copy_sample("document.pdf", inbox / "2026-11", "scan.pdf")
    copy_sample("document.pdf", inbox, "top.pdf")

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert sorted(m.text or "" for m in api.messages()) == ["[2026-11] scan.pdf", "[] top.pdf"]
    assert sorted(a.filename for a in api.attachments()) == ["scan.pdf", "top.pdf"]
    assert _files(inbox / "sent") == ["2026-11/scan.pdf", "top.pdf"]
    assert (inbox / "2026-11").is_dir()
    assert not list((inbox / "2026-11").iterdir())
    sent = events(log_lines(result.stdout), "file_sent")
    assert sorted((line["file"], line["archived_as"]) for line in sent) == [
        ("2026-11/scan.pdf", "2026-11/scan.pdf"),
        ("top.pdf", "top.pdf"),
    ]
    assert not list((inbox / ".sendseven-watch").rglob("*.pdf"))


def test_without_recursive_a_file_in_a_subfolder_stays_and_is_said_once(
    api: FakeApi, tmp_path: Path
) -> None:
    """Not recursive: the scan in the subfolder stays, is logged once (in_subfolder) and
    counted as ignored; sent/, failed/ and hidden folders are never walked."""
    config, inbox = _inbox_config(tmp_path, api.url)
    copy_sample("document.pdf", inbox / "2026-11", "scan.pdf")
    copy_sample("document.pdf", inbox / "sent", "old.pdf")
    copy_sample("document.pdf", inbox / ".hidden", "secret.pdf")

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert api.messages() == []
    assert (inbox / "2026-11" / "scan.pdf").is_file()
    assert _ignored(log_lines(result.stdout)) == [("2026-11/scan.pdf", "in_subfolder")]
    row = _status(config)
    assert (row["waiting"], row["ignored"]) == (0, 1)


def test_too_deep_and_symlinked_folders_are_said_and_never_followed(
    api: FakeApi, tmp_path: Path
) -> None:
    """recursive, max_depth 1: a/ok.pdf is sent; a/b/deep.pdf stays (too_deep); a symlink
    to a folder elsewhere is never followed (why: symlink) and its file stays there."""
    config, inbox = _inbox_config(tmp_path, api.url, recursive=True, max_depth=1)
    copy_sample("document.pdf", inbox / "a", "ok.pdf")
    copy_sample("document.pdf", inbox / "a" / "b", "deep.pdf")
    copy_sample("document.pdf", inbox / "a" / "b" / "c", "deeper.pdf")
    elsewhere = tmp_path / "elsewhere"
    copy_sample("document.pdf", elsewhere, "private.pdf")
    (inbox / "linked").symlink_to(elsewhere, target_is_directory=True)

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert [a.filename for a in api.attachments()] == ["ok.pdf"]
    assert (inbox / "a" / "b" / "deep.pdf").is_file()
    assert (elsewhere / "private.pdf").is_file()
    assert _ignored(log_lines(result.stdout)) == [
        ("a/b/deep.pdf", "too_deep"),
        ("linked", "symlink"),
    ]


@pytest.mark.parametrize("observer", ["inotify", "polling"])
def test_a_subfolder_made_while_the_daemon_runs_is_watched(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon], observer: str
) -> None:
    """Watch mode, either observer: a month folder (and one inside it) made after the
    start is watched; a scan written there is sent at once (long before a rescan) and
    archived with its relative path."""
    top = {"rescan_interval": 3600, "observer": observer}
    config, inbox = _inbox_config(tmp_path, api.url, top, recursive=True)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    (inbox / "2026-12" / "week-1").mkdir(parents=True)
    time.sleep(0.3)  # the new folders are watched
    copy_sample("document.pdf", inbox / "2026-12", "scan.pdf")
    copy_sample("image.png", inbox / "2026-12" / "week-1", "page.png")

    sent = daemon.wait_event("file_sent", count=2, timeout=15)
    assert daemon.stop() == 0
    assert sorted(line["file"] for line in sent) == ["2026-12/scan.pdf", "2026-12/week-1/page.png"]
    assert _files(inbox / "sent") == ["2026-12/scan.pdf", "2026-12/week-1/page.png"]
    assert (inbox / "2026-12" / "week-1").is_dir()


def test_five_thousand_subfolders_are_walked_in_reasonable_time(
    api: FakeApi, tmp_path: Path
) -> None:
    """recursive, 5,000 (empty) month folders and one file deep inside: run --once and
    status each finish within seconds, and the file is sent."""
    config, inbox = _inbox_config(tmp_path, api.url, recursive=True)
    for n in range(5000):
        (inbox / f"f{n:04d}").mkdir()
    copy_sample("document.pdf", inbox / "f4999", "last.pdf")

    started = time.monotonic()
    result = run_cli("run", "-c", str(config), "--once")
    took = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert [a.filename for a in api.attachments()] == ["last.pdf"]
    assert took < 20, took  # watchdog starts a thread per watched folder: ~2 ms each
    started = time.monotonic()
    assert _status(config)["waiting"] == 0
    assert time.monotonic() - started < 5
    assert (inbox / "sent" / "f4999" / "last.pdf").is_file()
