"""``status`` and ``requeue``: the installed command reading real folders and the journal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from daemon.fake.api import FakeApi
from daemon.fake.rules import Faults
from tests.helpers import (
    COMMAND,
    TENANT,
    TOKEN,
    Daemon,
    clean_env,
    events,
    run_cli,
    write_config,
)


def drop_pdf(inbox: Path, name: str) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    path.write_bytes(b"%PDF-1.4\n" + name.encode())
    return path


def status_json(config: Path) -> dict[str, dict[str, Any]]:
    """``status --json``, per inbox name."""
    result = run_cli("status", "-c", str(config), "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document = json.loads(result.stdout)
    return {row["inbox"]: row for row in document["inboxes"]}


def test_status_json_after_a_run_with_sent_failed_waiting_and_unfinished_files(
    tmp_path: Path,
) -> None:
    """Counts per inbox, the last error with the API's own words, no daemon running."""
    with FakeApi(token=TOKEN, tenant_id=TENANT, conversations={"conv_a", "conv_c"}) as api:
        config = write_config(tmp_path, api.url)
        spool = tmp_path / "spool"
        drop_pdf(spool / "conv_a", "a1.pdf")
        drop_pdf(spool / "conv_a", "a2.pdf")
        (spool / "conv_a" / "logo.bmp").write_bytes(b"BM" + bytes(100))
        drop_pdf(spool / "conv_b", "b1.pdf")  # the API knows no conv_b: 404
        assert run_cli("run", "-c", str(config), "--once").returncode == 0

        # A second run whose token is refused leaves its file claimed (exit 3).
        drop_pdf(spool / "conv_c", "c1.pdf")
        api.accept_tokens("someone-else")
        assert run_cli("run", "-c", str(config), "--once").returncode == 3

    # Dropped after the runs: waiting. Ignored and hidden names are not counted.
    drop_pdf(spool / "conv_a", "a3.pdf")
    (spool / "conv_a" / "a4.pdf.part").write_bytes(b"half")
    (spool / "conv_a" / ".hidden.pdf").write_bytes(b"%PDF")

    rows = status_json(config)
    assert set(rows) == {"conv_a", "conv_b", "conv_c"}
    a, b, c = rows["conv_a"], rows["conv_b"], rows["conv_c"]
    assert (a["waiting"], a["in_progress"], a["sent"], a["failed"]) == (1, 0, 2, 1)
    assert a["path"] == str(spool / "conv_a")
    assert a["conversation_id"] == "conv_a"
    assert a["last_error"]["file"] == "logo.bmp"
    assert a["last_error"]["reason"] == "unsupported_type"
    assert a["last_error"]["retrying"] is False
    assert a["last_error"]["at"].endswith("Z")

    assert (b["waiting"], b["in_progress"], b["sent"], b["failed"]) == (0, 0, 0, 1)
    assert b["last_error"]["file"] == "b1.pdf"
    assert b["last_error"]["reason"] == "conversation_not_found"
    assert b["last_error"]["status"] == 404
    assert b["last_error"]["detail"] == "Conversation conv_b not found"

    assert (c["waiting"], c["in_progress"], c["sent"], c["failed"]) == (0, 1, 0, 0)
    assert c["last_error"] is None

    text = run_cli("status", "-c", str(config))
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["inbox", "conversation", "waiting", "in", "prog", "sent", "failed"]
    assert lines[1].split() == ["conv_a", "conv_a", "1", "0", "2", "1"]
    assert "last error: logo.bmp: unsupported_type" in lines[2]
    assert any("Conversation conv_b not found" in line for line in lines)
    assert TOKEN not in text.stdout + text.stderr


def test_status_shows_the_error_of_a_file_still_being_retried(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """While the daemon retries a 5xx, status shows the file in progress and its last error."""
    with FakeApi(token=TOKEN, tenant_id=TENANT, faults=Faults(error_rate=1.0)) as api:
        config = write_config(tmp_path, api.url)
        daemon = Daemon(config)
        daemons.append(daemon)
        daemon.wait_event("daemon_started")
        drop_pdf(tmp_path / "spool" / "conv_1", "slow.pdf")
        daemon.wait_event("retry_scheduled", count=2)
        row = status_json(config)["conv_1"]
        assert daemon.stop() == 0
    assert (row["waiting"], row["in_progress"], row["sent"], row["failed"]) == (0, 1, 0, 0)
    error = row["last_error"]
    assert error["file"] == "slow.pdf"
    assert error["reason"] is None
    assert error["retrying"] is True
    assert error["status"] in (500, 502, 503)
    assert error["detail"]


def test_status_without_a_journal_counts_folders_and_creates_nothing(
    api: FakeApi, tmp_path: Path
) -> None:
    """A daemon that never ran: files are waiting, there is no last error, no state is made."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    drop_pdf(inbox, "a.pdf")
    drop_pdf(inbox, "b.pdf")
    (tmp_path / "spool" / ".hidden").mkdir()
    row = status_json(config)["conv_1"]
    assert (row["waiting"], row["in_progress"], row["sent"], row["failed"]) == (2, 0, 0, 0)
    assert row["last_error"] is None
    assert not (tmp_path / "spool" / ".state").exists()
    assert sorted(p.name for p in inbox.iterdir()) == ["a.pdf", "b.pdf"]


def test_a_failed_file_named_like_a_sidecar_is_still_counted(api: FakeApi, tmp_path: Path) -> None:
    """failed/ holds notes.error.json (a failed text file) and its own sidecar: two files."""
    config = write_config(tmp_path, api.url)
    failed = tmp_path / "spool" / "conv_1" / "failed"
    failed.mkdir(parents=True)
    for name in ("x.pdf", "x.pdf.error.json", "notes.error.json", "notes.error.json.error.json"):
        (failed / name).write_text("{}")
    (failed / "link.pdf").symlink_to(failed / "x.pdf")
    assert status_json(config)["conv_1"]["failed"] == 2


def test_requeue_moves_failed_files_back_and_status_sees_them_waiting(
    api: FakeApi, tmp_path: Path
) -> None:
    """requeue --reason puts matching files back under their names and drops the sidecars."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    (inbox / "logo.bmp").write_bytes(b"BM" + bytes(100))
    (inbox / "empty.pdf").write_bytes(b"")
    assert run_cli("run", "-c", str(config), "--once").returncode == 0
    assert status_json(config)["conv_1"]["failed"] == 2

    result = run_cli("requeue", "-c", str(config), "--reason", "empty_file")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    (moved,) = events(lines, "file_requeued")
    assert (moved["file"], moved["to"], moved["reason"]) == ("empty.pdf", "empty.pdf", "empty_file")
    assert events(lines, "requeue_done")[0]["files"] == 1
    assert (inbox / "empty.pdf").exists()
    assert not (inbox / "failed" / "empty.pdf.error.json").exists()
    assert (inbox / "failed" / "logo.bmp.error.json").exists()
    row = status_json(config)["conv_1"]
    assert (row["waiting"], row["failed"]) == (1, 1)


def test_status_says_when_it_cannot_read_an_inbox(api: FakeApi, tmp_path: Path) -> None:
    """An inbox it may not list shows why, instead of a 0 that reads as "nothing there"."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: every folder is readable")
        prefix = [  # root reads any folder whatever its mode; without these it cannot
            "setpriv",
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
        ]
    config = write_config(tmp_path, api.url)
    private = tmp_path / "spool" / "private"
    drop_pdf(private, "a.pdf")
    (tmp_path / "spool" / "open").mkdir()
    private.chmod(0o300)  # may be written into and entered, not listed
    try:
        result = subprocess.run(
            [*prefix, COMMAND, "status", "-c", str(config), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=clean_env(),
        )
    finally:
        private.chmod(0o755)
    assert result.returncode == 0, result.stderr
    rows = {row["inbox"]: row for row in json.loads(result.stdout)["inboxes"]}
    assert rows["private"]["unreadable"] == "Permission denied"
    assert rows["open"]["unreadable"] is None


#: Run as root, a command reads and writes any folder: drop that power for the command.
_NO_DAC_OVERRIDE = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


def test_status_reads_a_journal_in_a_read_only_state_dir(api: FakeApi, tmp_path: Path) -> None:
    """status only reads: a state_dir it may not write to still gives the last error."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: every folder is writable")
        prefix = _NO_DAC_OVERRIDE
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    (inbox / "logo.bmp").write_bytes(b"BM" + bytes(100))
    assert run_cli("run", "-c", str(config), "--once").returncode == 0
    state = tmp_path / "spool" / ".state"
    for path in state.iterdir():
        path.chmod(0o444)
    state.chmod(0o555)
    try:
        result = subprocess.run(
            [*prefix, COMMAND, "status", "-c", str(config), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
            check=False,
        )
        after = sorted(p.name for p in state.iterdir())
    finally:
        state.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    (row,) = json.loads(result.stdout)["inboxes"]
    assert (row["failed"], row["last_error"]["reason"]) == (1, "unsupported_type")
    assert after == ["journal.sqlite3"]


def test_a_damaged_journal_is_named_with_what_to_do_by_run_and_check_config(
    api: FakeApi, tmp_path: Path
) -> None:
    """A journal that is not a database: run and check-config say which file and what to
    do in one command_failed line, exit 1; a sound one is checked ok."""
    config = write_config(tmp_path, api.url)
    state = tmp_path / "spool" / ".state"
    assert (
        run_cli("check-config", "-c", str(config))
        .stdout.splitlines()[-1]
        .endswith("(none yet: the first run makes it)")
    )
    assert run_cli("run", "-c", str(config), "--once").returncode == 0
    checked = run_cli("check-config", "-c", str(config))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[-1] == (
        f"journal: {state / 'journal.sqlite3'} (ok, 0 claims unfinished)"
    )
    (state / "journal.sqlite3").write_bytes(b"this is not a database" * 500)
    for f in state.glob("journal.sqlite3-*"):
        f.unlink()

    for command in (["run", "--once"], ["check-config"]):
        result = run_cli(command[0], "-c", str(config), *command[1:])
        assert result.returncode == 1, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        (failed,) = events(lines, "command_failed")
        assert not events(lines, "unhandled_exception")
        assert str(state / "journal.sqlite3") in failed["error"]
        assert "file is not a database" in failed["error"]
        assert "mv " in failed["error"]


def test_status_names_a_spool_that_is_not_there(api: FakeApi, tmp_path: Path) -> None:
    """No folder checks for writing, but a missing spool is still a usage error (exit 2)."""
    config = write_config(tmp_path, api.url, spool=str(tmp_path / "nowhere"))
    result = run_cli("status", "-c", str(config))
    assert result.returncode == 2
    assert "spool" in result.stderr and "nowhere" in result.stderr
