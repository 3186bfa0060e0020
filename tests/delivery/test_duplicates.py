"""Duplicates: identical bytes already sent to a conversation within ``duplicate_window``
go to failed/ as ``duplicate`` without an upload, across restarts and a SIGKILL; ``requeue
--reason duplicate`` sends them anyway; ``duplicates: send`` turns the check off."""

from __future__ import annotations

import json
import os
from pathlib import Path

from daemon.fake import FakeApi
from tests.helpers import Daemon, copy_sample, events, inject, log_lines, run_cli, write_config


def _uploads(api: FakeApi) -> int:
    return sum(1 for r in api.requests() if r.path.endswith("/attachments"))


def _sent_once(api: FakeApi) -> list[str]:
    """The ids of the messages created (repeats under the same key left out)."""
    return [m.id for m in api.messages() if not m.duplicate]


def _drop(inbox: Path, name: str, mtime_s: int) -> Path:
    path = copy_sample("document.pdf", inbox, name)
    os.utime(path, (mtime_s, mtime_s))
    return path


def test_the_same_pdf_exported_twice_is_sent_once(api: FakeApi, tmp_path: Path) -> None:
    """Two names, same bytes, one run: one message; the later one is failed as duplicate,
    its sidecar naming the first's message_id, file and time; no second upload."""
    inbox = tmp_path / "spool" / "conv_1"
    _drop(inbox, "export-1.pdf", 1_000_000)
    _drop(inbox, "export-2.pdf", 1_000_100)
    config = write_config(tmp_path, api.url)

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    (message_id,) = _sent_once(api)
    assert [p.name for p in (inbox / "sent").iterdir()] == ["export-1.pdf"]
    sidecar = json.loads((inbox / "failed" / "export-2.pdf.error.json").read_text())
    assert sidecar["reason"] == "duplicate"
    assert sidecar["duplicate_of"]["message_id"] == message_id
    assert sidecar["duplicate_of"]["file"] == "export-1.pdf"
    assert sidecar["duplicate_of"]["sent_at"].endswith("Z")
    (failed,) = events(log_lines(result.stdout), "file_failed")
    assert (failed["file"], failed["reason"]) == ("export-2.pdf", "duplicate")


def test_a_duplicate_is_caught_across_a_restart_without_an_upload(
    api: FakeApi, tmp_path: Path
) -> None:
    """The memory of sent bytes survives the process: a later run uploads nothing for the
    twin; another conversation is not concerned."""
    spool = tmp_path / "spool"
    _drop(spool / "conv_1", "a.pdf", 1_000_000)
    config = write_config(tmp_path, api.url)
    assert run_cli("run", "-c", str(config), "--once").returncode == 0
    uploads = _uploads(api)
    _drop(spool / "conv_1", "b.pdf", 1_000_100)
    _drop(spool / "conv_2", "b.pdf", 1_000_100)

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert _uploads(api) == uploads + 1  # only conv_2's
    assert len(_sent_once(api)) == 2
    assert (spool / "conv_1" / "failed" / "b.pdf").exists()
    assert (spool / "conv_2" / "sent" / "b.pdf").exists()


def test_duplicates_send_and_a_short_window_let_it_through(api: FakeApi, tmp_path: Path) -> None:
    """``duplicates: send`` sends identical bytes again; so does an expired window."""
    spool = tmp_path / "spool"
    _drop(spool / "conv_1", "a.pdf", 1_000_000)
    _drop(spool / "conv_1", "b.pdf", 1_000_100)
    config = write_config(tmp_path, api.url, duplicates="send")
    assert run_cli("run", "-c", str(config), "--once").returncode == 0
    assert len(_sent_once(api)) == 2

    _drop(spool / "conv_1", "c.pdf", 1_000_200)
    config = write_config(tmp_path, api.url, duplicate_window=0.001)
    assert run_cli("run", "-c", str(config), "--once").returncode == 0
    assert len(_sent_once(api)) == 3


#: SIGKILL right after the API accepted the first send, before the journal heard of it.
_KILL_AFTER_SEND = (
    "import os, signal\n"
    "import daemon.api.client as client\n"
    "real = client.ApiClient.send\n"
    "def send(self, *args, **kwargs):\n"
    "    message = real(self, *args, **kwargs)\n"
    "    os.kill(os.getpid(), signal.SIGKILL)\n"
    "    return message\n"
    "client.ApiClient.send = send\n"
)


def test_sigkill_between_send_and_journal_sends_neither_twice(api: FakeApi, tmp_path: Path) -> None:
    """Killed after the send reached the API: the next run repeats it under the same key
    (one message), and its twin, dropped meanwhile, is failed as its duplicate."""
    inbox = tmp_path / "spool" / "conv_1"
    _drop(inbox, "a.pdf", 1_000_000)
    config = write_config(tmp_path, api.url)
    killed = run_cli(
        "run", "-c", str(config), "--once", env=inject(tmp_path / "inj", _KILL_AFTER_SEND)
    )
    assert killed.returncode == -9
    (message_id,) = _sent_once(api)
    _drop(inbox, "b.pdf", 1_000_100)

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert _sent_once(api) == [message_id]
    assert (inbox / "sent" / "a.pdf").exists()
    sidecar = json.loads((inbox / "failed" / "b.pdf.error.json").read_text())
    assert (sidecar["reason"], sidecar["duplicate_of"]["message_id"]) == ("duplicate", message_id)


def test_requeue_reason_duplicate_sends_it_anyway(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A duplicate requeued by hand is sent, in watch mode, and not failed again."""
    inbox = tmp_path / "spool" / "conv_1"
    _drop(inbox, "a.pdf", 1_000_000)
    _drop(inbox, "b.pdf", 1_000_100)
    config = write_config(tmp_path, api.url)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("file_sent")
    daemon.wait_event("file_failed")

    requeued = run_cli("requeue", "-c", str(config), "--reason", "duplicate")

    assert requeued.returncode == 0, requeued.stderr
    (_, second) = daemon.wait_event("file_sent", count=2)
    assert second["file"] == "b.pdf"
    assert daemon.stop() == 0
    assert len(_sent_once(api)) == 2
    assert len(events(daemon.lines, "file_failed")) == 1
    assert sorted(p.name for p in (inbox / "sent").iterdir()) == ["a.pdf", "b.pdf"]
