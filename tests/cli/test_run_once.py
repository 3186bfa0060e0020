"""`run --once` end to end: the installed command, a real spool, the fake API over HTTP."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from daemon.fake.api import FakeApi
from daemon.fake.rules import Faults
from tests.helpers import DATA, TOKEN, Daemon, events, log_lines, run_cli, write_config

EXPECTED: dict[str, dict[str, str | None]] = json.loads((DATA / "expected.json").read_text())


def test_the_whole_corpus_ends_in_sent_or_failed(api: FakeApi, tmp_path: Path) -> None:
    """Every sample is sent with its real type, or failed with the right reason."""
    config = write_config(tmp_path, api.url, duplicates="send")
    inbox = tmp_path / "spool" / "conv_corpus"
    inbox.mkdir()
    for name in EXPECTED:
        shutil.copyfile(DATA / name, inbox / name)
    result = run_cli("run", "-c", str(config), "--once", timeout=120)
    assert result.returncode == 0, result.stderr
    lines = log_lines(result.stdout)
    received = {a.filename: a for a in api.attachments()}
    messages = {m.attachment_ids[0]: m for m in api.messages()}
    for name, expected in EXPECTED.items():
        if expected["reason"] is None:
            assert (inbox / "sent" / name).exists(), name
            attachment = received[name]
            assert attachment.content_type == expected["content_type"], name
            assert messages[attachment.id].message_type == expected["message_type"], name
            assert attachment.sha256 == _sha256(DATA / name)
        else:
            assert (inbox / "failed" / name).exists(), name
            sidecar = json.loads((inbox / "failed" / f"{name}.error.json").read_text())
            assert sidecar["reason"] == expected["reason"], name
            assert set(sidecar) >= {
                "reason",
                "detail",
                "status",
                "file",
                "conversation_id",
                "message_type",
                "content_type",
                "size",
                "sha256",
                "attempts",
                "failed_at",
            }
            assert sidecar["conversation_id"] == "conv_corpus"
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []
    sent = events(lines, "file_sent")
    failed = events(lines, "file_failed")
    assert len(sent) + len(failed) == len(EXPECTED)
    assert len(sent) == len(api.messages()) == sum(1 for e in EXPECTED.values() if not e["reason"])
    assert TOKEN not in result.stdout + result.stderr


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pdf(folder: Path, name: str, body: bytes = b"hello") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"%PDF-1.4\n" + body)
    return path


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, "rejected"),
        (404, "conversation_not_found"),
        (413, "too_large"),
        (415, "unsupported_type"),
        (422, "rejected"),
    ],
)
def test_api_rejections_fail_the_file_with_their_reason(
    api: FakeApi, tmp_path: Path, status: int, reason: str
) -> None:
    """A 4xx from the API puts the file in failed/ with the matching reason and status."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    _pdf(inbox, "scan.pdf")
    # A 404 means an unknown conversation only from /messages (from /attachments it is a
    # wrong api.url, which fails no file: tests/api).
    api.force(status, endpoint="send" if status == 404 else None)
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((inbox / "failed" / "scan.pdf.error.json").read_text())
    assert (sidecar["reason"], sidecar["status"]) == (reason, status)
    [failed] = events(log_lines(result.stdout), "file_failed")
    assert (failed["reason"], failed["status"]) == (reason, status)
    assert failed["detail"]


def test_unknown_conversation_is_conversation_not_found(tmp_path: Path) -> None:
    """The API's real 404 for an unknown conversation fails the file, not the run."""
    with FakeApi(token=TOKEN, tenant_id="test-tenant", conversations={"conv_ok"}) as api:
        config = write_config(tmp_path, api.url)
        _pdf(tmp_path / "spool" / "conv_ok", "a.pdf")
        _pdf(tmp_path / "spool" / "conv_gone", "b.pdf")
        result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "spool" / "conv_ok" / "sent" / "a.pdf").exists()
    sidecar = json.loads(
        (tmp_path / "spool" / "conv_gone" / "failed" / "b.pdf.error.json").read_text()
    )
    assert sidecar["reason"] == "conversation_not_found"


def test_5xx_is_retried_then_sent(api: FakeApi, tmp_path: Path) -> None:
    """500/502/503 are retried with backoff (a retry_scheduled line each) until sent."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    _pdf(inbox, "scan.pdf")
    api.force(500, 502, 503)
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    lines = log_lines(result.stdout)
    assert len(events(lines, "retry_scheduled")) == 3
    [sent] = events(lines, "file_sent")
    assert sent["attempts"] == 5  # 3 failed uploads + the upload + the send
    assert (inbox / "sent" / "scan.pdf").exists()


def test_transient_errors_give_up_after_the_window(api: FakeApi, tmp_path: Path) -> None:
    """A file that keeps meeting 503s fails with retries_exhausted after give_up_after."""
    config = write_config(tmp_path, api.url, retry={"give_up_after": 1})
    inbox = tmp_path / "spool" / "conv_1"
    _pdf(inbox, "scan.pdf")
    api.faults = Faults(error_rate=1.0)
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((inbox / "failed" / "scan.pdf.error.json").read_text())
    assert sidecar["reason"] == "retries_exhausted"
    assert sidecar["attempts"] >= 2


def _uploads(api: FakeApi) -> int:
    """Upload requests the API answered (whatever it answered)."""
    return sum(1 for r in api.requests() if r.path.endswith("/attachments"))


@pytest.mark.parametrize(
    ("faults", "reason"),
    [(Faults(force_status=[413]), "too_large"), (Faults(error_rate=1.0), "retries_exhausted")],
)
def test_a_file_failed_at_its_upload_counts_its_attempts(
    api: FakeApi, tmp_path: Path, faults: Faults, reason: str
) -> None:
    """A file that fails at the upload: sidecar and file_failed count every upload request."""
    config = write_config(tmp_path, api.url, retry={"give_up_after": 0.5})
    inbox = tmp_path / "spool" / "conv_1"
    _pdf(inbox, "scan.pdf")
    api.faults = faults
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    [failed] = events(log_lines(result.stdout), "file_failed")
    sidecar = json.loads((inbox / "failed" / "scan.pdf.error.json").read_text())
    assert sidecar["reason"] == failed["reason"] == reason
    assert sidecar["attempts"] == failed["attempts"] == _uploads(api) >= 1
    if reason == "retries_exhausted":
        assert f"gave up after {_uploads(api)} attempts" in sidecar["detail"]


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_exit_3_and_keep_the_files(
    api: FakeApi, tmp_path: Path, status: int
) -> None:
    """401/403 fail no file: --once exits 3, the file stays claimed and goes out next run."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    _pdf(inbox, "scan.pdf")
    if status == 401:
        api.accept_tokens("some-other-token")
    else:
        api.force(403)
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 3, result.stderr
    lines = log_lines(result.stdout)
    assert events(lines, "auth_failed")
    assert not events(lines, "file_failed")
    assert not (inbox / "failed").exists()
    api.accept_tokens(TOKEN)
    again = run_cli("run", "-c", str(config), "--once")
    assert again.returncode == 0, again.stderr
    assert (inbox / "sent" / "scan.pdf").exists()
    assert len(api.messages()) == 1


def test_order_within_a_conversation_is_arrival_order(api: FakeApi, tmp_path: Path) -> None:
    """Files of one conversation are sent oldest mtime first, then by name."""
    import os

    config = write_config(tmp_path, api.url, workers=4, duplicates="send")
    inbox = tmp_path / "spool" / "conv_1"
    names = [f"{n:03d}.pdf" for n in range(30)]
    for n, name in enumerate(names):  # the higher the name, the older the file
        path = _pdf(inbox, name)
        os.utime(path, ns=(1_000_000_000 * (1000 + n), 1_000_000_000 * (1000 - n)))
    api.faults = Faults(latency_s=0.01, upload_latency_s=0.03)
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    sent_order = [api_attachment_name(api, m.attachment_ids[0]) for m in api.messages()]
    expected = sorted(names, key=lambda n: ((inbox / "sent" / n).stat().st_mtime_ns, n))
    assert sent_order == expected
    assert sent_order == list(reversed(names))


def api_attachment_name(api: FakeApi, attachment_id: str) -> str:
    return next(a.filename for a in api.attachments() if a.id == attachment_id)


def test_caption_template_renders(api: FakeApi, tmp_path: Path) -> None:
    """The inbox's caption template is rendered with the file's fields."""
    config = write_config(tmp_path, api.url, text="{stem} is a {message_type} ({ext})")
    _pdf(tmp_path / "spool" / "conv_1", "invoice-7.pdf")
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    assert [m.text for m in api.messages()] == ["invoice-7 is a document (pdf)"]


def test_ignored_hidden_and_odd_entries_stay(api: FakeApi, tmp_path: Path) -> None:
    """Temporary, hidden and ignored names, folders and symlinks are never taken."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    outside = _pdf(tmp_path, "outside.pdf")
    for name in ("a.part", "b.tmp", ".hidden.pdf", "c.pdf~", "~$d.docx", "Thumbs.db"):
        _pdf(inbox, name)
    (inbox / "sub").mkdir()
    _pdf(inbox / "sub", "nested.pdf")
    (inbox / "link.pdf").symlink_to(outside)
    import os

    os.mkfifo(inbox / "pipe.pdf")
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    assert api.attachments() == []
    assert (inbox / "a.part").exists() and (inbox / "sub" / "nested.pdf").exists()
    assert (inbox / "link.pdf").is_symlink() and outside.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_once_with_exit_1_and_the_next_run_finishes(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon], signum: signal.Signals
) -> None:
    """SIGTERM/SIGINT mid-run: daemon_stopping, exit 1; the next run sends the rest, once."""
    api.faults = Faults(latency_s=0.5)  # a send a second: most files are left at the signal
    config = write_config(tmp_path, api.url, workers=2)
    inbox = tmp_path / "spool" / "conv_1"
    names = [f"doc-{n:02d}.pdf" for n in range(8)]
    for name in names:
        _pdf(inbox, name, name.encode())
    run = Daemon(config, "--once")
    daemons.append(run)
    run.wait_event("file_sent")
    run.signal(signum)
    code = run.process.wait(60)  # before stop(): it would send a SIGTERM of its own
    run.stop()
    assert code == 1, run.stderr
    [stopping] = events(run.lines, "daemon_stopping")
    assert stopping["signal"] == signum.name
    assert len(list((inbox / "sent").iterdir())) < len(names)
    api.faults = Faults()
    again = run_cli("run", "-c", str(config), "--once")
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (inbox / "sent").iterdir()) == names
    keys = [m.idempotency_key for m in api.messages() if not m.duplicate]
    assert len(keys) == len(set(keys)) == len(names)
