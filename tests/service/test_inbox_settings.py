"""Per-inbox settings in a running daemon (the installed command against the fake API):
each inbox settles, ignores, captions and archives by its own settings, and a reload
applies new ones to files not yet claimed."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from daemon.fake.api import FakeApi
from daemon.fake.rules import Faults
from tests.helpers import Daemon, copy_sample, events, log_lines, run_cli, wait_until, write_config


def _days() -> set[str]:
    """Today's UTC day as YYYY/MM/DD (and the next one, should midnight fall in the test)."""
    now = time.time()
    return {datetime.fromtimestamp(t, UTC).strftime("%Y/%m/%d") for t in (now, now + 120)}


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _dated(names: list[str], days: set[str], *, monthly: bool = False) -> list[str]:
    """``names`` with their dated folder (whichever of ``days`` they carry) taken off."""
    prefixes = {day[:7] if monthly else day for day in days}
    plain = []
    for name in names:
        folder, _, base = name.rpartition("/")
        assert folder in prefixes, name
        plain.append(base)
    return plain


def _two_droppers(tmp_path: Path, api_url: str, **scanner: Any) -> Path:
    """A scanner inbox (daily archive, own caption) and an ERP inbox (monthly archive,
    ignores draft-*), plus the spool with the top-level settings."""
    for name in ("scanner", "erp"):
        (tmp_path / name).mkdir()
    return write_config(
        tmp_path,
        api_url,
        duplicates="send",  # the same sample in several inboxes on purpose
        text="Top: {filename}",
        inboxes=[
            {
                "path": str(tmp_path / "scanner"),
                "conversation_id": "conv_scans",
                "text": "Scan: {filename}",
                "archive_layout": "daily",
                **scanner,
            },
            {
                "path": str(tmp_path / "erp"),
                "conversation_id": "conv_erp",
                "text": "ERP: {filename}",
                "archive_layout": "monthly",
                "ignore": ["draft-*"],
            },
        ],
    )


def test_run_once_takes_captions_ignores_and_archives_per_inbox(
    api: FakeApi, tmp_path: Path
) -> None:
    """run --once: each inbox's files get its own caption and land in its own layout;
    the ERP inbox leaves the draft its ignore list names, the scanner sends its own; the
    spool's folder keeps the top-level caption and the flat layout."""
    config = _two_droppers(tmp_path, api.url, settle_seconds=0.5)
    scanner, erp, spooled = tmp_path / "scanner", tmp_path / "erp", tmp_path / "spool" / "conv_s"
    copy_sample("document.pdf", scanner, "a.pdf")
    copy_sample("document.pdf", scanner, "draft-1.pdf")
    copy_sample("image.bmp", scanner, "logo.bmp")  # refused: failed/ with a sidecar
    copy_sample("image.png", erp, "b.png")
    copy_sample("image.png", erp, "draft-2.png")
    copy_sample("document.pdf", spooled, "c.pdf")
    days = _days()

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    captions = sorted((m.conversation_id, m.text) for m in api.messages())
    assert captions == [
        ("conv_erp", "ERP: b.png"),
        ("conv_s", "Top: c.pdf"),
        ("conv_scans", "Scan: a.pdf"),
        ("conv_scans", "Scan: draft-1.pdf"),
    ]
    assert sorted(_dated(_files(scanner / "sent"), days)) == ["a.pdf", "draft-1.pdf"]
    assert sorted(_dated(_files(scanner / "failed"), days)) == ["logo.bmp", "logo.bmp.error.json"]
    assert _dated(_files(erp / "sent"), days, monthly=True) == ["b.png"]
    assert (erp / "draft-2.png").exists()
    assert _files(spooled / "sent") == ["c.pdf"]
    lines = log_lines(result.stdout)
    archived = {line["file"]: line["archived_as"] for line in events(lines, "file_sent")}
    assert archived["c.pdf"] == "c.pdf"
    assert archived["a.pdf"] in {f"{day}/a.pdf" for day in days}
    (failed,) = events(lines, "file_failed")
    assert failed["archived_as"] in {f"{day}/logo.bmp" for day in days}


def test_each_inbox_settles_for_its_own_time(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A slow scanner's inbox waits its own settle_seconds (6 s) while the ERP's inbox
    keeps the top-level 0.3 s: dropped together, the ERP file goes first, the scan not
    before 6 s after its last write."""
    config = _two_droppers(tmp_path, api.url, settle_seconds=6)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    dropped = time.time()
    copy_sample("document.pdf", tmp_path / "scanner", "scan.pdf")
    copy_sample("document.pdf", tmp_path / "erp", "export.pdf")

    first, second = daemon.wait_event("file_sent", count=2)
    assert daemon.stop() == 0

    def at(line: dict[str, Any]) -> float:
        return datetime.fromisoformat(line["timestamp"]).timestamp()

    assert (first["file"], second["file"]) == ("export.pdf", "scan.pdf")
    assert at(first) - dropped < 5.0
    assert at(second) - dropped >= 6.0 - 0.1


def test_a_reload_changes_an_inboxs_archive_layout_for_files_not_yet_claimed(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """SIGHUP switches an inbox from flat to daily: a file claimed before the reload still
    goes flat (the settings it was claimed with), a file dropped after goes dated."""
    inbox = tmp_path / "scanner"
    inbox.mkdir()
    config = write_config(
        tmp_path,
        api.url,
        spool=None,
        state_dir=str(tmp_path / "state"),
        inboxes=[{"path": str(inbox), "conversation_id": "conv_scans"}],
    )
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    api.faults = Faults(upload_latency_s=5.0)
    copy_sample("document.pdf", inbox, "claimed.pdf")
    wait_until(lambda: not (inbox / "claimed.pdf").exists())  # claimed; its upload is slow

    data = yaml.safe_load(config.read_text())
    data["inboxes"][0]["archive_layout"] = "daily"
    config.write_text(yaml.safe_dump(data))
    daemon.signal(signal.SIGHUP)
    (reloaded,) = daemon.wait_event("config_reloaded")
    assert reloaded["changed"] == ["inboxes"]
    api.faults = Faults()
    days = _days()
    copy_sample("image.png", inbox, "later.png")

    daemon.wait_event("file_sent", count=2)
    assert daemon.stop() == 0
    sent = _files(inbox / "sent")
    assert "claimed.pdf" in sent
    sent.remove("claimed.pdf")
    assert _dated(sent, days) == ["later.png"]
