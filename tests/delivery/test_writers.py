"""Real writers that pause longer than settle_seconds while the file stays open, the way
rate-limited clients write (curl --limit-rate, sftp -l, rsync --bwlimit): each file is sent
once and whole; a writer that appends after the send is changed_after_send, never silent."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from daemon.fake import FakeApi
from daemon.fake.rules import Faults
from tests.helpers import Daemon, events, run_cli, wait_until, write_config

#: Shorter than every writer's pause below: the quiet period alone would take them torn.
SETTLE_SECONDS = 0.3
#: A writer's pause between bursts, in seconds.
PAUSE_SECONDS = 1.0
#: Bytes per burst (curl's upload buffer).
BURST_BYTES = 64 * 1024


def pdf_bytes(size: int, seed: str) -> bytes:
    """``size`` bytes that classify as a PDF and differ per ``seed``."""
    body = hashlib.sha256(seed.encode()).digest() * (size // 32 + 1)
    return (b"%PDF-1.4\n" + body)[:size]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BurstWriter(threading.Thread):
    """Writes ``data`` into ``path`` in bursts with pauses, holding the file open throughout
    (``empty_first``: created empty and written only after a pause, as rsync --inplace does)."""

    def __init__(self, path: Path, data: bytes, *, empty_first: bool = False) -> None:
        super().__init__(name=f"writer-{path.name}")
        self.path, self.data, self.empty_first = path, data, empty_first

    def run(self) -> None:
        with self.path.open("wb") as handle:
            if self.empty_first:
                time.sleep(PAUSE_SECONDS)
            for start in range(0, len(self.data), BURST_BYTES):
                if start:
                    time.sleep(PAUSE_SECONDS)
                handle.write(self.data[start : start + BURST_BYTES])
                handle.flush()


def received_whole(api: FakeApi, data: bytes) -> None:
    """The API received ``data`` exactly once, as one attachment of one message."""
    [message] = api.messages()
    [attachment] = [a for a in api.attachments() if a.id in message.attachment_ids]
    assert (attachment.size, attachment.sha256) == (len(data), sha256(data))
    assert [a.sha256 for a in api.attachments()].count(sha256(data)) == 1


@pytest.mark.parametrize("empty_first", [False, True], ids=["bursts", "created-empty"])
def test_a_writer_pausing_longer_than_settle_is_sent_once_and_whole(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon], empty_first: bool
) -> None:
    """Watch mode: bursts with pauses > settle_seconds while the file stays open; it is
    taken only after its close, and sent once, whole."""
    config = write_config(tmp_path, api.url, settle_seconds=SETTLE_SECONDS)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    data = pdf_bytes(3 * BURST_BYTES + 1000, "bursts")

    writer = BurstWriter(inbox / "scan.pdf", data, empty_first=empty_first)
    writer.start()
    writer.join()
    [sent] = daemon.wait_event("file_sent")
    assert daemon.stop() == 0

    received_whole(api, data)
    assert (inbox / "sent" / "scan.pdf").read_bytes() == data
    assert sent["sha256"] == sha256(data)
    assert not events(daemon.lines, "file_failed")
    assert not events(daemon.lines, "file_changed")


@contextmanager
def once_running(config: Path, first: Path) -> Iterator[Daemon]:
    """A ``run --once`` that has claimed ``first`` (it is busy) for the block; then its
    exit, which must be 0."""
    once = Daemon(config, "--once")
    try:
        wait_until(lambda: not first.exists())
        yield once
        assert once.process.wait(60) == 0
    finally:
        if once.process.poll() is None:
            once.kill()
        else:
            once.stop()


def test_once_leaves_a_file_written_while_it_runs_to_the_next_run_whole(
    api: FakeApi, tmp_path: Path
) -> None:
    """run --once takes the files present when it starts: one a writer creates while it
    runs is neither taken nor sent torn; it stays in the inbox, and the next run, after the
    writer closed it, sends it once and whole."""
    api.faults = Faults(upload_latency_s=1.0)  # keeps the run busy with the first file
    config = write_config(tmp_path, api.url, settle_seconds=SETTLE_SECONDS)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    (inbox / "first.pdf").write_bytes(pdf_bytes(2000, "first"))
    data = pdf_bytes(3 * BURST_BYTES, "slow")
    writer = BurstWriter(inbox / "slow.pdf", data)
    with once_running(config, inbox / "first.pdf"):
        writer.start()
    writer.join()
    assert len(api.messages()) == 1  # first.pdf only
    assert (inbox / "slow.pdf").read_bytes() == data  # left where the writer put it

    assert run_cli("run", "-c", str(config), "--once").returncode == 0
    assert len(api.messages()) == 2
    slow = next(a for a in api.attachments() if a.filename == "slow.pdf")
    assert (slow.size, slow.sha256) == (len(data), sha256(data))
    assert (inbox / "sent" / "slow.pdf").read_bytes() == data


def test_once_waits_for_a_writer_it_sees_still_writing_a_file_present_at_its_start(
    api: FakeApi, tmp_path: Path
) -> None:
    """run --once and a file still being written when it starts: once the run has seen a
    write, it waits for the close, however long the writer then pauses (longer than
    settle_seconds here), and sends the file whole."""
    config = write_config(tmp_path, api.url, settle_seconds=SETTLE_SECONDS)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    data = pdf_bytes(22 * 512, "present")
    started = threading.Event()

    def write() -> None:
        with (inbox / "present.pdf").open("wb") as handle:
            for n, pause in enumerate([0.1] * 20 + [2 * PAUSE_SECONDS, 0]):
                handle.write(data[n * 512 : (n + 1) * 512])
                handle.flush()
                started.set()
                time.sleep(pause)  # short pauses first (the run sees writes), then a long one

    writer = threading.Thread(target=write)
    writer.start()
    try:
        started.wait(5)
        result = run_cli("run", "-c", str(config), "--once", timeout=60)
    finally:
        writer.join()
    assert result.returncode == 0, result.stderr
    received_whole(api, data)
    assert (inbox / "sent" / "present.pdf").read_bytes() == data


def test_once_sends_the_files_present_at_its_start_and_leaves_newcomers(
    api: FakeApi, tmp_path: Path
) -> None:
    """Files complete and settled while a run --once goes on, but dropped after it
    started, are left in the inbox for the next run: an inbox that keeps receiving files
    cannot keep a run going."""
    api.faults = Faults(upload_latency_s=0.5)  # the run lasts well past the newcomers
    config = write_config(tmp_path, api.url, settle_seconds=SETTLE_SECONDS)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    present = [f"present-{n}.pdf" for n in range(3)]
    for name in present:
        (inbox / name).write_bytes(pdf_bytes(2000, name))
    with once_running(config, inbox / present[0]):
        for n in range(3):
            (inbox / f".new-{n}").write_bytes(pdf_bytes(2000, f"new-{n}"))
            (inbox / f".new-{n}").rename(inbox / f"new-{n}.pdf")  # complete at once
    assert sorted(path.name for path in (inbox / "sent").iterdir()) == present
    assert len(api.messages()) == 3
    assert sorted(p.name for p in inbox.glob("new-*")) == ["new-0.pdf", "new-1.pdf", "new-2.pdf"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def ftp_inbox(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """pyftpdlib serving the inbox conv_1 (write access, user/password ``u``/``p``): the
    URL of the folder, and the folder."""
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir(parents=True)
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", str(port)),
            *("-w", "-d", str(inbox), "-u", "u", "-P", "p"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=20)
        yield f"ftp://u:p@127.0.0.1:{port}/", inbox
    finally:
        server.terminate()
        server.wait(10)


def test_curl_with_a_rate_limit_through_a_real_ftp_server_is_sent_whole(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon], ftp_inbox: tuple[str, Path]
) -> None:
    """curl -T --limit-rate into pyftpdlib writes 64 KiB bursts with pauses longer than
    settle_seconds: the file is sent once, whole, after the upload ends."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("the curl binary is not installed (the FTP client of this test)")
    url, inbox = ftp_inbox
    config = write_config(tmp_path, api.url, settle_seconds=SETTLE_SECONDS)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    data = pdf_bytes(3 * BURST_BYTES + 5000, "curl")
    source = tmp_path / "scan.pdf"
    source.write_bytes(data)

    # 64 KiB / 40 KB/s: pauses of about 1.6 s, five times settle_seconds.
    done = subprocess.run(
        [curl, "-sS", "-T", str(source), "--limit-rate", "40k", url + "scan.pdf"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [sent] = daemon.wait_event("file_sent")
    assert daemon.stop() == 0

    received_whole(api, data)
    assert sent["size"] == len(data)
    assert (inbox / "sent" / "scan.pdf").read_bytes() == data


def test_a_write_after_the_send_is_changed_after_send_and_requeue_sends_it_whole(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Polling (no events): a writer pausing longer than settle_seconds has its file taken
    and sent; its append during the send moves it to failed/ as changed_after_send (error
    line, sidecar with message_id and size_sent), not file_sent; requeue sends it whole."""
    api.faults = Faults(send_latency_s=2.0)
    config = write_config(tmp_path, api.url, settle_seconds=SETTLE_SECONDS, observer="polling")
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    first, rest = pdf_bytes(BURST_BYTES, "part"), b"\nmore pages" * 100

    with (inbox / "scan.pdf").open("wb") as handle:
        handle.write(first)
        handle.flush()
        wait_until(lambda: len(api.attachments()) == 1)
        time.sleep(0.3)  # the send is in flight (it takes 2 s)
        handle.write(rest)
    [line] = daemon.wait_event("changed_after_send")
    [failed] = daemon.wait_event("file_failed")

    assert line["level"] == "error"
    assert "partial" in line["detail"]
    assert failed["reason"] == "changed_after_send"
    assert not events(daemon.lines, "file_sent")
    [message] = api.messages()
    sidecar = json.loads((inbox / "failed" / "scan.pdf.error.json").read_text())
    assert sidecar["reason"] == "changed_after_send"
    assert sidecar["message_id"] == message.id == line["message_id"]
    assert sidecar["size_sent"] == len(first) == line["size_sent"]
    assert sidecar["size"] == len(first + rest)
    assert sidecar["sha256"] == sha256(first + rest)

    api.faults = Faults()
    assert run_cli("requeue", "-c", str(config)).returncode == 0
    [sent] = daemon.wait_event("file_sent")
    assert daemon.stop() == 0
    assert sent["sha256"] == sha256(first + rest)
    assert (inbox / "sent" / "scan.pdf").read_bytes() == first + rest
    assert not any((inbox / "failed").iterdir())


def test_a_file_written_and_closed_at_once_goes_settle_seconds_after_its_last_write(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Waiting for the close adds no delay: a file written and closed at once is uploaded
    settle_seconds after its last write (plus the daemon's few milliseconds)."""
    settle = 0.5
    config = write_config(tmp_path, api.url, settle_seconds=settle)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")

    with (inbox / "quick.pdf").open("wb") as handle:
        handle.write(pdf_bytes(5000, "quick"))
    closed = time.monotonic()
    daemon.wait_event("file_sent")
    assert daemon.stop() == 0

    upload = next(r for r in api.requests() if r.path.endswith("/attachments"))
    assert settle - 0.05 <= upload.at - closed < settle + 0.5  # generous: a shared machine
