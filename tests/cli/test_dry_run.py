"""``run --dry-run``: one line per file present (would_send / would_fail / would_ignore)
with conversation, message type, caption or reason; nothing claimed, moved, deleted or
requested."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.fake import FakeApi
from tests.helpers import DATA, copy_sample, events, log_lines, run_cli, write_config

ROUTE = r"^(?P<conversation_id>conv_[^_]+)__(?P<invoice>[^.]+)"


def _tree(top: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``top`` with its size, mtime and mode."""
    found: dict[str, tuple[int, int, int]] = {}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(folder) / name
            st = path.lstat()
            found[str(path.relative_to(top))] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return found


@pytest.mark.parametrize("once", [False, True])
def test_dry_run_lists_every_file_and_touches_nothing(
    api: FakeApi, tmp_path: Path, once: bool
) -> None:
    """Each file gets its line; the tree (paths, sizes, mtimes) and the API stay as they
    were, with or without --once."""
    spool = tmp_path / "spool"
    copy_sample("document.pdf", spool / "conv_1", "scan.pdf")
    copy_sample("image.bmp", spool / "conv_1", "logo.bmp")
    copy_sample("image.png", spool / "conv_1", "draft.tmp")
    (spool / "conv_1" / "empty.pdf").write_bytes(b"")
    os.mkfifo(spool / "conv_1" / "pipe")
    copy_sample("image.gif", spool / "conv_1" / "2026-11", "nested.gif")
    erp = tmp_path / "erp"
    copy_sample("document.pdf", erp, "conv_7__invoice-4711.pdf")
    copy_sample("image.jpg", erp, "__nobody.jpg")
    entry = {
        "path": str(erp),
        "conversation_id": "conv_erp",
        "route": r"^(?P<conversation_id>(conv_[0-9]+)?)__(?P<invoice>[^.]+)",
        "text": "Invoice {invoice}",
    }
    config = write_config(tmp_path, api.url, inboxes=[entry])
    before = _tree(tmp_path)

    result = run_cli("run", "-c", str(config), "--dry-run", *(["--once"] if once else []))

    assert result.returncode == 0, result.stderr
    assert _tree(tmp_path) == before
    assert api.requests() == []
    lines = log_lines(result.stdout)
    by_file = {line["file"]: line for line in lines if str(line["event"]).startswith("would_")}
    assert set(by_file) == {
        "scan.pdf", "logo.bmp", "draft.tmp", "empty.pdf", "pipe", "2026-11/nested.gif",
        "conv_7__invoice-4711.pdf", "__nobody.jpg",
    }  # fmt: skip
    send = by_file["conv_7__invoice-4711.pdf"]
    assert (send["event"], send["conversation_id"], send["message_type"], send["caption"]) == (
        "would_send", "conv_7", "document", "Invoice invoice-4711",
    )  # fmt: skip
    assert (by_file["scan.pdf"]["event"], by_file["scan.pdf"]["conversation_id"]) == (
        "would_send",
        "conv_1",
    )
    assert by_file["scan.pdf"]["caption"] is None
    assert (by_file["logo.bmp"]["event"], by_file["logo.bmp"]["reason"]) == (
        "would_fail",
        "unsupported_type",
    )
    assert by_file["empty.pdf"]["reason"] == "empty_file"
    assert by_file["__nobody.jpg"]["reason"] == "no_route"
    assert (by_file["draft.tmp"]["event"], by_file["draft.tmp"]["why"]) == (
        "would_ignore",
        "ignored",
    )
    assert by_file["pipe"]["why"] == "not_a_regular_file"
    assert by_file["2026-11/nested.gif"]["why"] == "in_subfolder"  # not recursive
    assert not events(lines, "daemon_started")


def test_dry_run_names_a_duplicate_of_a_file_sent_before(api: FakeApi, tmp_path: Path) -> None:
    """After a real run, identical bytes would fail as duplicate, naming the earlier send;
    the journal is only read."""
    inbox = tmp_path / "spool" / "conv_1"
    copy_sample("document.pdf", inbox, "a.pdf")
    config = write_config(tmp_path, api.url)
    assert run_cli("run", "-c", str(config), "--once").returncode == 0
    (message,) = api.messages()
    copy_sample("document.pdf", inbox, "b.pdf")
    requests = len(api.requests())
    before = _tree(tmp_path)

    result = run_cli("run", "-c", str(config), "--dry-run")

    assert result.returncode == 0, result.stderr
    assert _tree(tmp_path) == before
    assert len(api.requests()) == requests
    (line,) = events(log_lines(result.stdout), "would_fail")
    assert (line["file"], line["reason"]) == ("b.pdf", "duplicate")
    assert line["duplicate_of"]["message_id"] == message.id
    assert (DATA / "document.pdf").exists()


def test_dry_run_walks_subfolders_and_knows_done_markers(api: FakeApi, tmp_path: Path) -> None:
    """A recursive inbox's subfolder files would be sent; with done markers, a file without
    its marker waits, one with it would be sent, and the marker itself never is."""
    scans, erp = tmp_path / "scans", tmp_path / "erp"
    copy_sample("document.pdf", scans / "2026-11", "scan.pdf")
    copy_sample("image.png", erp, "a.png")
    copy_sample("image.gif", erp, "b.gif")
    (erp / "b.gif.done").write_bytes(b"")
    config = write_config(
        tmp_path,
        api.url,
        inboxes=[
            {"path": str(scans), "conversation_id": "conv_s", "recursive": True},
            {"path": str(erp), "conversation_id": "conv_e", "done_marker": "{name}.done"},
        ],
    )
    before = _tree(tmp_path)

    result = run_cli("run", "-c", str(config), "--dry-run")

    assert result.returncode == 0, result.stderr
    assert _tree(tmp_path) == before
    lines = log_lines(result.stdout)
    seen = {
        (line["file"], line["event"], line.get("why"))
        for line in lines
        if str(line["event"]).startswith("would_")
    }
    assert seen == {
        ("2026-11/scan.pdf", "would_send", None),
        ("a.png", "would_ignore", "waiting_for_marker"),
        ("b.gif", "would_send", None),
        ("b.gif.done", "would_ignore", "done_marker"),
    }
