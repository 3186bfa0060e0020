"""Hostile input: links, odd file types, odd names, files that change or cannot be read,
a full disk — each gets a clear outcome and nothing is lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.delivery.pipeline import Pipeline
from daemon.delivery.retry import ONCE
from daemon.fake.api import FakeApi
from daemon.fake.rules import Faults
from daemon.logs import configure
from daemon.store import archive
from daemon.store.claims import Owner
from daemon.store.journal import Journal
from daemon.watch.inboxes import all_inboxes
from tests.helpers import (
    COMMAND,
    DATA,
    TOKEN,
    Daemon,
    clean_env,
    events,
    inject,
    log_lines,
    run_cli,
    wait_until,
    write_config,
)


def test_symlinks_fifos_sockets_and_folders_are_never_taken(api: FakeApi, tmp_path: Path) -> None:
    """Links (to files outside or inside the inbox) and special files stay, untouched."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    secret = tmp_path / "secret.pdf"
    secret.write_bytes(b"%PDF-1.4 outside the inbox")
    (inbox / "outside.pdf").symlink_to(secret)
    (inbox / "real.pdf").write_bytes(b"%PDF-1.4 inside")
    (inbox / "inside.pdf").symlink_to(inbox / "real.pdf")
    (inbox / "dangling.pdf").symlink_to(tmp_path / "nowhere.pdf")
    os.mkfifo(inbox / "fifo.pdf")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_path = inbox / "s.sock"
    if len(str(sock_path)) < 100:  # AF_UNIX paths are short
        server.bind(str(sock_path))
    (inbox / "folder.pdf").mkdir()
    result = run_cli("run", "-c", str(config), "--once")
    server.close()
    assert result.returncode == 0, result.stderr
    assert [a.filename for a in api.attachments()] == ["real.pdf"]
    assert api.attachments()[0].head.startswith(b"%PDF-1.4 inside")
    assert (inbox / "outside.pdf").is_symlink() and secret.exists()
    assert (inbox / "inside.pdf").is_symlink()
    ignored = {line["file"] for line in events(log_lines(result.stdout), "file_ignored")}
    assert {"outside.pdf", "inside.pdf", "dangling.pdf", "fifo.pdf"} <= ignored


def test_odd_names_are_sent_and_archived_as_they_are(api: FakeApi, tmp_path: Path) -> None:
    """Spaces, unicode, a newline and a 255-byte name survive the whole trip."""
    config = write_config(tmp_path, api.url, duplicates="send")
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    names = [
        "Rechnung März 2026.pdf",
        "报告 final.pdf",
        "two\nlines.pdf",
        "x" * 251 + ".pdf",
    ]
    for name in names:
        shutil.copyfile(DATA / "document.pdf", inbox / name)
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (inbox / "sent").iterdir()) == sorted(names)
    sent = events(log_lines(result.stdout), "file_sent")
    assert sorted(line["file"] for line in sent) == sorted(names)
    assert len(api.messages()) == 4


def test_a_name_taken_in_sent_gets_a_suffix_and_nothing_is_overwritten(
    api: FakeApi, tmp_path: Path
) -> None:
    """The same name sent twice ends as scan.pdf and scan (1).pdf, both intact."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.4 first")
    assert run_cli("run", "-c", str(config), "--once").returncode == 0
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.4 second")
    assert run_cli("run", "-c", str(config), "--once").returncode == 0
    assert (inbox / "sent" / "scan.pdf").read_bytes() == b"%PDF-1.4 first"
    assert (inbox / "sent" / "scan (1).pdf").read_bytes() == b"%PDF-1.4 second"
    keys = {m.idempotency_key for m in api.messages()}
    assert len(keys) == 2  # identical names, two drops: two files, two keys


def test_a_file_changed_during_its_upload_is_not_sent_torn(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A writer that appends while the upload runs: the torn upload is not sent; the
    whole file is, once it is stable again."""
    api.faults = Faults(upload_latency_s=1.5)
    # Polling: on inotify a file still open for writing is not even claimed.
    config = write_config(tmp_path, api.url, settle_seconds=0.3, observer="polling")
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    with (inbox / "scan.pdf").open("wb") as handle:
        handle.write(b"%PDF-1.4\n" + b"a" * 10_000)
        handle.flush()
        deadline = time.monotonic() + 20
        while (inbox / "scan.pdf").exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # wait for the claim (the open handle follows the file)
        time.sleep(0.5)  # the upload is in flight now
        handle.write(b"b" * 10_000)
    [sent] = daemon.wait_event("file_sent", timeout=30)
    assert daemon.stop() == 0
    whole = b"%PDF-1.4\n" + b"a" * 10_000 + b"b" * 10_000
    [message] = api.messages()
    final = next(a for a in api.attachments() if a.id == message.attachment_ids[0])
    assert final.size == len(whole)
    assert (tmp_path / "spool" / "conv_1" / "sent" / "scan.pdf").read_bytes() == whole
    assert sent["size"] == len(whole)
    assert len(api.attachments()) == 2


#: Root reads any file whatever its mode; without these capabilities it cannot.
DROP_READ_OVERRIDE = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


def test_an_unreadable_file_fails_as_unreadable(api: FakeApi, tmp_path: Path) -> None:
    """A file the daemon may not read goes to failed/ with reason unreadable and its size."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: every file is readable")
        prefix = DROP_READ_OVERRIDE
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    locked = inbox / "locked.pdf"
    locked.write_bytes(b"%PDF-1.4 private")
    locked.chmod(0o000)
    result = subprocess.run(
        [*prefix, COMMAND, "run", "-c", str(config), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((inbox / "failed" / "locked.pdf.error.json").read_text())
    assert sidecar["reason"] == "unreadable"
    assert "denied" in sidecar["detail"].lower()
    assert sidecar["size"] == len(b"%PDF-1.4 private")
    (failed,) = events(log_lines(result.stdout), "file_failed")
    assert failed["size"] == len(b"%PDF-1.4 private")
    assert api.attachments() == []


def test_a_full_disk_keeps_the_file_claimed_until_archiving_works(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while archiving (a full disk, faked: it cannot be made real here) keeps the
    file claimed and retries; it is archived once there is room, and sent only once."""
    configure("error")
    config = load_config(write_config(tmp_path, api.url))
    inbox_path = tmp_path / "spool" / "conv_1"
    inbox_path.mkdir()
    (inbox_path / "scan.pdf").write_bytes(b"%PDF-1.4 full disk")
    failures = {"left": 3}
    real_link = os.link

    def full_disk_link(source: object, target: object) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        real_link(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(archive.os, "link", full_disk_link)
    monkeypatch.setattr("daemon.delivery.finish.LOCAL_RETRY_SECONDS", 0.05)
    journal = Journal(config.state_dir)
    owner = Owner()
    pipeline = Pipeline(config, journal, owner, policy=ONCE)
    [inbox] = all_inboxes(config)
    pipeline.start()
    try:
        assert pipeline.take(inbox, "scan.pdf", 1)
        assert pipeline.wait_idle(timeout=20)
    finally:
        pipeline.stop(10)
        owner.release()
        journal.close()
    assert failures["left"] == 0
    assert (inbox_path / "sent" / "scan.pdf").read_bytes() == b"%PDF-1.4 full disk"
    assert len(api.messages()) == 1


def test_the_token_appears_nowhere(api: FakeApi, tmp_path: Path) -> None:
    """Not in logs, sidecars, status output or error messages — even on failures."""
    config = write_config(tmp_path, api.url, log={"level": "debug"})
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    shutil.copyfile(DATA / "image.bmp", inbox / "logo.bmp")
    shutil.copyfile(DATA / "document.pdf", inbox / "scan.pdf")
    api.force(400)
    outputs = [run_cli("run", "-c", str(config), "--once")]
    outputs.append(run_cli("status", "-c", str(config)))
    outputs.append(run_cli("status", "-c", str(config), "--json"))
    outputs.append(run_cli("check-config", "-c", str(config)))
    api.accept_tokens("other")
    outputs.append(run_cli("run", "-c", str(config), "--once"))
    for output in outputs:
        assert TOKEN not in output.stdout + output.stderr
    for sidecar in (inbox / "failed").glob("*.error.json"):
        assert TOKEN not in sidecar.read_text()


def test_a_file_deleted_while_it_is_uploaded_is_reported_and_the_daemon_goes_on(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Someone deletes a claimed file mid-upload: one file_vanished line and no other outcome
    for it (it was sent or it failed, depending on when it went), no crash, next file sent."""
    api.faults = Faults(upload_latency_s=1.0)
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    shutil.copyfile(DATA / "document.pdf", inbox / "doomed.pdf")
    claimed: list[Path] = []

    def is_claimed() -> bool:
        claimed[:] = list((inbox / ".sendseven-watch").glob("*/*/doomed.pdf"))
        return bool(claimed)

    wait_until(is_claimed, timeout=20, step=0.01)
    claimed[0].unlink()
    [vanished] = daemon.wait_event("file_vanished", timeout=20)
    assert vanished["file"] == "doomed.pdf"
    assert vanished["conversation_id"] == "conv_1"
    api.faults = Faults()
    shutil.copyfile(DATA / "image.png", inbox / "next.png")
    [sent] = daemon.wait_event("file_sent", timeout=20)
    assert sent["file"] == "next.png"
    assert daemon.stop() == 0
    outcomes = [
        line
        for line in daemon.lines
        if line["event"] in ("file_sent", "file_failed") and line["file"] == "doomed.pdf"
    ]
    assert outcomes == []
    if vanished["message_id"] is not None:  # it went out before it vanished
        assert [m.id for m in api.messages()] == [vanished["message_id"], sent["message_id"]]
    assert sorted(p.name for p in (inbox / "sent").iterdir()) == ["next.png"]
    assert not list((inbox / ".sendseven-watch").glob("*/*/*"))


#: Writes the process's read counters (``/proc/self/io``) to $READ_COUNTERS at exit.
_COUNT_READS = (
    "import atexit, os\n"
    "def _save():\n"
    "    with open('/proc/self/io') as io, open(os.environ['READ_COUNTERS'], 'w') as out:\n"
    "        out.write(io.read())\n"
    "atexit.register(_save)\n"
)


def test_a_huge_sparse_file_is_failed_as_too_large_without_reading_it(
    api: FakeApi, tmp_path: Path
) -> None:
    """A 2 GB (sparse) PDF goes to failed/ as too_large, sha256 null, read no further than
    its type needed."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    huge = inbox / "huge.pdf"
    with huge.open("wb") as handle:
        handle.write(b"%PDF-1.4\n")
        handle.truncate(2 * 1024**3)
    counters = tmp_path / "io.txt"
    env = inject(tmp_path / "inject", _COUNT_READS) | {"READ_COUNTERS": str(counters)}

    result = run_cli("run", "-c", str(config), "--once", env=env)

    assert result.returncode == 0, result.stderr
    sidecar = json.loads((inbox / "failed" / "huge.pdf.error.json").read_text())
    assert (sidecar["reason"], sidecar["size"], sidecar["sha256"]) == (
        "too_large",
        2 * 1024**3,
        None,
    )
    io = dict(line.split(": ") for line in counters.read_text().splitlines())
    assert int(io["rchar"]) < 100 * 1024**2  # all the process read, the interpreter included
    assert api.attachments() == []


def test_two_hard_links_in_an_inbox_are_two_files_each_archived_under_its_name(
    api: FakeApi, tmp_path: Path
) -> None:
    """h1.pdf and h2.pdf, one inode: both sent, each in sent/ and logged under its own name."""
    config = write_config(tmp_path, api.url, workers=1, duplicates="send")
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    (inbox / "h1.pdf").write_bytes(b"%PDF-1.4 linked twice")
    os.link(inbox / "h1.pdf", inbox / "h2.pdf")

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    sent = events(log_lines(result.stdout), "file_sent")
    assert sorted((line["file"], line["archived_as"]) for line in sent) == [
        ("h1.pdf", "h1.pdf"),
        ("h2.pdf", "h2.pdf"),
    ]
    assert sorted(p.name for p in (inbox / "sent").iterdir()) == ["h1.pdf", "h2.pdf"]


@pytest.mark.parametrize("tamper", ["directory", "renamed"])
def test_a_claimed_file_tampered_with_is_file_vanished_once(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon], tamper: str
) -> None:
    """The claimed file replaced by a directory, or renamed, in the hidden claim folder
    while it is sent: one file_vanished, never archived, nothing more after a restart."""
    api.faults = Faults(send_latency_s=1.5)
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    (inbox / "q.pdf").write_bytes(b"%PDF-1.4 tampered with")
    daemon = Daemon(config)
    daemons.append(daemon)
    wait_until(lambda: bool(api.attachments()), timeout=30, step=0.01)
    (claimed,) = (inbox / ".sendseven-watch").rglob("q.pdf")
    if tamper == "directory":
        claimed.unlink()
        claimed.mkdir()
    else:
        claimed.rename(claimed.with_name("r.pdf"))

    (vanished,) = daemon.wait_event("file_vanished")
    assert daemon.stop() == 0
    again = Daemon(config)
    daemons.append(again)
    again.wait_event("daemon_started")
    time.sleep(1.0)
    assert again.stop() == 0

    # Gone before its send (the check before sending sees it): nothing went out; gone
    # during the send: the message it got is named.
    sent = [m.id for m in api.messages()]
    assert vanished["file"] == "q.pdf"
    assert sent == ([] if vanished["message_id"] is None else [vanished["message_id"]])
    for lines in (daemon.lines, again.lines):
        assert not events(lines, "file_sent") and not events(lines, "file_failed")
    assert not (inbox / "sent").exists() or not list((inbox / "sent").iterdir())
    assert not (inbox / "failed").exists()
