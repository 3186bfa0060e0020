"""Intake as real droppers deliver (the installed command against the fake API): an
``include`` list, subfolders, done markers. Nothing a dropper leaves is ignored silently:
what is not taken stays, is logged once (``file_ignored``) and counted by ``status``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.fake.api import FakeApi
from tests.helpers import (
    COMMAND,
    DATA,
    Daemon,
    copy_sample,
    events,
    inject,
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
        # These tests drop the same sample under several names on purpose.
        **{"duplicates": "send", **(top or {})},
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


def test_status_and_requeue_see_a_recursive_inboxs_archived_subfolders(
    api: FakeApi, tmp_path: Path
) -> None:
    """Files archived under their subfolder (sent/2026-11/scan.pdf, failed/2026-11/logo.bmp)
    are counted by status; requeue puts a failed one back into its subfolder."""
    config, inbox = _inbox_config(tmp_path, api.url, recursive=True)
    copy_sample("document.pdf", inbox / "2026-11", "scan.pdf")
    copy_sample("image.bmp", inbox / "2026-11", "logo.bmp")
    assert run_cli("run", "-c", str(config), "--once").returncode == 0

    row = _status(config)
    assert (row["sent"], row["failed"]) == (1, 1)

    result = run_cli("requeue", "-c", str(config), "--reason", "unsupported_type")
    assert result.returncode == 0, result.stderr
    [requeued] = events(log_lines(result.stdout), "file_requeued")
    assert requeued["file"] == "2026-11/logo.bmp"
    assert (inbox / "2026-11" / "logo.bmp").is_file()
    assert not (inbox / "failed" / "2026-11").exists()


def test_subfolders_with_odd_names_are_taken_and_logged_as_valid_json(
    api: FakeApi, tmp_path: Path
) -> None:
    """A subfolder whose name is not UTF-8 (Latin-1 ``caf\\xe9``) and a file name with a
    newline in a subfolder: each file sent once, archived under its own bytes, and every
    log line is one line of valid UTF-8 JSON."""
    config, inbox = _inbox_config(tmp_path, api.url, recursive=True)
    latin = Path(os.fsdecode(os.fsencode(inbox) + b"/caf\xe9"))
    latin.mkdir()
    (latin / "scan.pdf").write_bytes((DATA / "document.pdf").read_bytes())
    copy_sample("image.png", inbox / "2026-11", "two\nlines.png")

    result = subprocess.run(
        [COMMAND, "run", "-c", str(config), "--once"], capture_output=True, check=False
    )

    assert result.returncode == 0, result.stderr
    lines = [json.loads(raw.decode("utf-8")) for raw in result.stdout.splitlines()]
    assert len(events(lines, "file_sent")) == 2
    # The multipart filename escapes the newline, as browsers do (%0A).
    assert sorted(a.filename for a in api.attachments()) == ["scan.pdf", "two%0Alines.png"]
    assert (inbox / "sent" / latin.name / "scan.pdf").is_file()
    assert (inbox / "sent" / "2026-11" / "two\nlines.png").is_file()


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


def _markers(tmp_path: Path, api_url: str, marker: str) -> tuple[Path, Path]:
    # A long settle: a file taken at once was taken by its marker, not by settling.
    return _inbox_config(tmp_path, api_url, done_marker=marker, settle_seconds=30)


def test_an_erp_export_with_done_markers_is_sent_at_once(api: FakeApi, tmp_path: Path) -> None:
    """{name}.done: a.pdf with a.pdf.done is sent at once (settle_seconds is 30), the
    marker deleted and never sent or archived; b.pdf without its marker waits (status)."""
    config, inbox = _markers(tmp_path, api.url, "{name}.done")
    copy_sample("document.pdf", inbox, "a.pdf")
    (inbox / "a.pdf.done").touch()
    copy_sample("document.pdf", inbox, "b.pdf")

    started = time.monotonic()
    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    assert [a.filename for a in api.attachments()] == ["a.pdf"]
    assert _files(inbox / "sent") == ["a.pdf"]
    assert not (inbox / "failed").exists()
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["b.pdf"]
    assert _ignored(log_lines(result.stdout)) == []
    row = _status(config)
    assert (row["waiting"], row["ignored"]) == (1, 0)


def test_a_stem_marker_written_while_the_daemon_runs(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Watch mode, {stem}.ok: the export is written first, then its marker; it is sent
    at once (long before settle_seconds) and the marker is gone."""
    config, inbox = _markers(tmp_path, api.url, "{stem}.ok")
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    copy_sample("document.pdf", inbox, "invoice-4711.pdf")
    time.sleep(0.5)
    assert api.attachments() == []
    (inbox / "invoice-4711.ok").touch()

    (sent,) = daemon.wait_event("file_sent", timeout=10)
    assert daemon.stop() == 0
    assert sent["file"] == "invoice-4711.pdf"
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == []


def test_a_batch_marker_lets_every_file_of_its_folder_go(api: FakeApi, tmp_path: Path) -> None:
    """READY: the three files of the folder are sent, then READY is deleted; a folder of a
    recursive inbox without READY keeps its file."""
    config, inbox = _inbox_config(
        tmp_path, api.url, done_marker="READY", settle_seconds=30, recursive=True
    )
    for name in ("1.pdf", "2.pdf", "3.pdf"):
        copy_sample("document.pdf", inbox / "batch-1", name)
    (inbox / "batch-1" / "READY").touch()
    copy_sample("document.pdf", inbox / "batch-2", "4.pdf")

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert sorted(a.filename for a in api.attachments()) == ["1.pdf", "2.pdf", "3.pdf"]
    assert list((inbox / "batch-1").iterdir()) == []
    assert (inbox / "batch-2" / "4.pdf").is_file()
    assert _files(inbox / "sent") == ["batch-1/1.pdf", "batch-1/2.pdf", "batch-1/3.pdf"]


def test_an_orphan_marker_stays_and_is_said_once(api: FakeApi, tmp_path: Path) -> None:
    """A marker whose file never came stays; once older than the grace period (60 s) it is
    logged once as orphan_marker; a fresh one is not (its file may be on its way)."""
    config, inbox = _markers(tmp_path, api.url, "{name}.done")
    (inbox / "gone.pdf.done").touch()
    os.utime(inbox / "gone.pdf.done", (time.time() - 120, time.time() - 120))
    (inbox / "soon.pdf.done").touch()

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert api.attachments() == []
    assert (inbox / "gone.pdf.done").exists()
    assert (inbox / "soon.pdf.done").exists()
    assert _ignored(log_lines(result.stdout)) == [("gone.pdf.done", "orphan_marker")]


def test_a_marker_for_a_symlink_takes_nothing(api: FakeApi, tmp_path: Path) -> None:
    """a.pdf is a symlink with a.pdf.done next to it: nothing is sent, the link is logged
    (why: symlink), the marker stays and its target is untouched."""
    config, inbox = _markers(tmp_path, api.url, "{name}.done")
    target = copy_sample("document.pdf", tmp_path / "elsewhere", "real.pdf")
    (inbox / "a.pdf").symlink_to(target)
    (inbox / "a.pdf.done").touch()

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert api.attachments() == []
    assert target.is_file()
    assert (inbox / "a.pdf.done").exists()
    assert _ignored(log_lines(result.stdout)) == [("a.pdf", "symlink")]


def test_a_run_killed_between_claim_and_marker_deletion(api: FakeApi, tmp_path: Path) -> None:
    """SIGKILL right after the claim (the marker renamed to its hidden taken name, perhaps
    deleted already by the observer's thread): the next run sends the file once, and
    deletes a taken marker left behind by a kill."""
    config, inbox = _markers(tmp_path, api.url, "{name}.done")
    copy_sample("document.pdf", inbox, "a.pdf")
    (inbox / "a.pdf.done").touch()
    env = inject(
        tmp_path / "inject",
        "import os, signal\n"
        "import daemon.store.claims as claims\n"
        "_claim_all = claims.Owner.claim_all\n"
        "def claim_all(self, inbox, names):\n"
        "    taken = _claim_all(self, inbox, names)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return taken\n"
        "claims.Owner.claim_all = claim_all\n",
    )

    killed = run_cli("run", "-c", str(config), "--once", env=env)
    assert killed.returncode == -signal.SIGKILL
    assert not (inbox / "a.pdf").exists()
    assert not (inbox / "a.pdf.done").exists()
    (inbox / ".sendseven-taken.z.pdf.done").touch()  # left by an earlier kill

    again = run_cli("run", "-c", str(config), "--once")

    assert again.returncode == 0, again.stderr
    assert [a.filename for a in api.attachments()] == ["a.pdf"]
    assert len(api.messages()) == 1
    assert _files(inbox / "sent") == ["a.pdf"]
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == []
