"""Intake as real droppers deliver (the installed command against the fake API): an
``include`` list, subfolders, done markers. Nothing a dropper leaves is ignored silently:
what is not taken stays, is logged once (``file_ignored``) and counted by ``status``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemon.fake.api import FakeApi
from tests.helpers import copy_sample, events, log_lines, run_cli, write_config


def _inbox_config(tmp_path: Path, api_url: str, **settings: Any) -> tuple[Path, Path]:
    """One explicit inbox ``conv_a`` with ``settings``; (config file, inbox folder)."""
    inbox = tmp_path / "conv_a"
    inbox.mkdir()
    config = write_config(
        tmp_path,
        api_url,
        settle_seconds=0.2,
        inboxes=[{"path": str(inbox), "conversation_id": "conv_a", **settings}],
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
