"""The long-running daemon: the installed command watching real folders, real signals."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
import yaml

from daemon.fake.api import FakeApi
from daemon.fake.rules import Faults
from tests.helpers import Daemon, clean_env, copy_sample, events, wait_until, write_config


def _sent_names(inbox: Path) -> list[str]:
    sent = inbox / "sent"
    return sorted(p.name for p in sent.iterdir()) if sent.exists() else []


def test_files_present_before_start_and_dropped_later_are_sent(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A backlog is sent at start; a file dropped while running is sent too."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    copy_sample("document.pdf", inbox, "before.pdf")
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    daemon.wait_event("file_sent")
    copy_sample("image.png", inbox, "after.png")
    daemon.wait_event("file_sent", count=2)
    assert daemon.stop() == 0
    assert _sent_names(inbox) == ["after.png", "before.pdf"]
    assert events(daemon.lines, "daemon_stopping")[0]["signal"] == "SIGTERM"


def test_a_slow_writer_is_sent_once_and_whole(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A file written in chunks over several seconds is taken only when finished."""
    config = write_config(tmp_path, api.url, settle_seconds=1.0)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir(parents=True)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    digest = hashlib.sha256()
    with (inbox / "scan.pdf").open("wb") as handle:  # a scanner writing page by page
        for page in range(8):
            chunk = (b"%PDF-1.4\n" if page == 0 else b"") + bytes([page]) * 50_000
            handle.write(chunk)
            handle.flush()
            digest.update(chunk)
            time.sleep(0.5)
    [sent] = daemon.wait_event("file_sent")
    assert daemon.stop() == 0
    assert len(api.messages()) == 1
    assert sent["sha256"] == digest.hexdigest() == api.attachments()[0].sha256


def test_a_part_file_renamed_is_sent_under_its_final_name(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """x.pdf.part → x.pdf is sent as x.pdf; .tmp and hidden files are left alone."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir(parents=True)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    (inbox / "upload.tmp").write_bytes(b"%PDF-1.4 tmp")
    (inbox / ".hidden.pdf").write_bytes(b"%PDF-1.4 hidden")
    part = inbox / "invoice.pdf.part"
    part.write_bytes(b"%PDF-1.4 invoice")
    time.sleep(1.0)  # longer than settle: a .part must still not be taken
    part.rename(inbox / "invoice.pdf")
    daemon.wait_event("file_sent")
    time.sleep(0.5)
    assert daemon.stop() == 0
    assert [a.filename for a in api.attachments()] == ["invoice.pdf"]
    assert (inbox / "upload.tmp").exists() and (inbox / ".hidden.pdf").exists()


def test_a_conversation_folder_created_while_running_is_watched(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A new spool subfolder becomes an inbox without a restart."""
    config = write_config(tmp_path, api.url)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    inbox = tmp_path / "spool" / "conv_new"
    inbox.mkdir()
    daemon.wait_event("inbox_added")
    copy_sample("audio.mp3", inbox)
    [sent] = daemon.wait_event("file_sent")
    assert daemon.stop() == 0
    assert (sent["conversation_id"], sent["message_type"]) == ("conv_new", "audio")
    assert api.messages()[0].conversation_id == "conv_new"


def test_polling_mode_works_on_its_own(api: FakeApi, tmp_path: Path, daemons: list[Daemon]) -> None:
    """observer: polling (for NFS/SMB) finds new files and new folders."""
    config = write_config(tmp_path, api.url, observer="polling")
    daemon = Daemon(config)
    daemons.append(daemon)
    [started] = daemon.wait_event("daemon_started")
    assert started["observer"] == "polling"
    copy_sample("image.gif", tmp_path / "spool" / "conv_poll")
    daemon.wait_event("file_sent")
    assert daemon.stop() == 0
    assert _sent_names(tmp_path / "spool" / "conv_poll") == ["image.gif"]


def test_sigterm_during_a_batch_loses_nothing(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """SIGTERM mid-batch exits 0; the next run finishes the rest; each file is sent once."""
    api.faults = Faults(latency_s=0.2)
    config = write_config(tmp_path, api.url, workers=2, duplicates="send")
    inbox = tmp_path / "spool" / "conv_1"
    names = [f"doc-{n:02d}.pdf" for n in range(12)]
    for name in names:
        copy_sample("document.pdf", inbox, name)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("file_sent")
    started = time.monotonic()
    assert daemon.stop(timeout=30) == 0
    assert time.monotonic() - started < 30
    assert len(_sent_names(inbox)) < len(names)
    again = Daemon(config, "--once")
    daemons.append(again)
    assert again.process.wait(60) == 0
    again.stop()
    assert _sent_names(inbox) == names
    keys = [m.idempotency_key for m in api.messages() if not m.duplicate]
    assert len(keys) == len(set(keys)) == len(names)


def test_sighup_adds_an_inbox_and_a_bad_config_is_refused(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """SIGHUP reloads: a new inbox is watched; an invalid file is refused, the old kept."""
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.mkdir()
    second.mkdir()
    config = write_config(
        tmp_path,
        api.url,
        spool=None,
        state_dir=str(tmp_path / "state"),
        inboxes=[{"path": str(first), "conversation_id": "conv_first"}],
    )
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    data = yaml.safe_load(config.read_text())
    data["inboxes"].append({"path": str(second), "conversation_id": "conv_second"})
    config.write_text(yaml.safe_dump(data))
    daemon.signal(signal.SIGHUP)
    [reloaded] = daemon.wait_event("config_reloaded")
    assert "inboxes" in reloaded["changed"]
    copy_sample("document.pdf", second)
    daemon.wait_event("file_sent")
    config.write_text("api: [this is not: valid\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_invalid")
    copy_sample("image.png", first)
    daemon.wait_event("file_sent", count=2)
    assert daemon.stop() == 0
    assert sorted(m.conversation_id for m in api.messages()) == ["conv_first", "conv_second"]


def test_systemd_notifications_arrive_on_a_real_socket(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """READY=1, WATCHDOG=1 and STOPPING=1 reach $NOTIFY_SOCKET as datagrams."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(20)
        env = clean_env() | {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
        daemon = Daemon(write_config(tmp_path, api.url), env=env)
        daemons.append(daemon)
        received: list[str] = []

        def until(word: str) -> None:
            while not any(word in message for message in received):
                received.append(sock.recv(4096).decode())

        until("READY=1")
        until("WATCHDOG=1")
        daemon.signal(signal.SIGTERM)
        until("STOPPING=1")
        assert daemon.stop() == 0
    assert any("STATUS=" in message for message in received)


def test_refused_credentials_do_not_stop_the_watchdog_pings(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """While the API refuses the token the daemon waits, pinging: systemd must not kill it."""
    path = tmp_path / "notify.sock"
    api.accept_tokens()  # every request is 401
    copy_sample("document.pdf", tmp_path / "spool" / "conv_1")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(20)
        env = clean_env() | {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
        daemon = Daemon(write_config(tmp_path, api.url), env=env)
        daemons.append(daemon)
        daemon.wait_event("auth_failed")
        sock.settimeout(0)
        with contextlib.suppress(BlockingIOError):
            while True:  # what was sent before the refusal
                sock.recv(4096)
        sock.settimeout(5)  # no ping for 5 s (the interval is 0.2 s): recv raises
        pings = 0
        while pings < 3:
            pings += "WATCHDOG=1" in sock.recv(4096).decode()
        assert events(daemon.lines, "auth_failed") and not events(daemon.lines, "file_sent")
        assert daemon.stop() == 0


def test_a_dead_observer_is_restarted_and_the_rescan_finds_missed_files(tmp_path: Path) -> None:
    """Events lost while the observer was down are caught by the restart's rescan."""
    from daemon.config import InboxConfig
    from daemon.watch.watcher import Watcher

    inbox = tmp_path / "conv_1"
    inbox.mkdir()
    seen: list[str] = []
    box = InboxConfig(
        path=inbox, conversation_id="conv_1", text=None, name="conv_1", from_spool=False
    )
    watcher = Watcher("inotify", None, [box], lambda _, names: seen.extend(names), lambda _: None)
    watcher.start()
    try:
        (inbox / "live.pdf").write_bytes(b"%PDF")
        wait_until(lambda: "live.pdf" in seen)
        assert watcher._observer is not None
        watcher._observer.stop()  # the observer thread dies
        watcher._observer.join()
        assert not watcher.alive()
        (inbox / "missed.pdf").write_bytes(b"%PDF")
        time.sleep(0.3)
        assert "missed.pdf" not in seen
        assert watcher.supervise()
        assert watcher.alive()
        watcher.scan()
        assert "missed.pdf" in seen
    finally:
        watcher.stop()


def test_sighup_applies_a_new_caption_to_a_watched_inbox(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A reload that changes the caption of an inbox already watched takes effect."""
    config = write_config(tmp_path, api.url, text="before {filename}", duplicates="send")
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir(parents=True)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    copy_sample("document.pdf", inbox, "one.pdf")
    daemon.wait_event("file_sent")
    data = yaml.safe_load(config.read_text())
    data["text"] = "after {filename}"
    config.write_text(yaml.safe_dump(data))
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")
    copy_sample("document.pdf", inbox, "two.pdf")
    daemon.wait_event("file_sent", count=2)
    assert daemon.stop() == 0
    assert [m.text for m in api.messages()] == ["before one.pdf", "after two.pdf"]


@pytest.mark.parametrize("observer", ["inotify", "polling"])
def test_an_inbox_deleted_and_created_again_is_watched_again(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon], observer: str
) -> None:
    """A spool subfolder deleted and created again while running is an inbox again."""
    # No rescan within the test: only events (or the folder poller) can find the files.
    config = write_config(tmp_path, api.url, observer=observer, rescan_interval=3600)
    inbox = tmp_path / "spool" / "conv_a"
    copy_sample("document.pdf", inbox, "a.pdf")
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("file_sent")  # the inbox's claim folder exists and is locked
    shutil.rmtree(inbox)
    inbox.mkdir()
    copy_sample("image.png", inbox, "b.png")  # before the daemon can have noticed
    if observer == "inotify":
        [added] = daemon.wait_event("inbox_added")
        assert (added["inbox"], added["recreated"]) == ("conv_a", True)
    daemon.wait_event("file_sent", count=2)
    copy_sample("audio.mp3", inbox, "c.mp3")  # a live event in the new folder
    daemon.wait_event("file_sent", count=3)
    assert daemon.stop() == 0
    assert _sent_names(inbox) == ["b.png", "c.mp3"]
    assert not events(daemon.lines, "claim_failed")
    assert [m.conversation_id for m in api.messages()] == ["conv_a"] * 3


def test_an_explicit_inbox_deleted_and_created_again_is_watched_again(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """An inbox named in the config, deleted and made again: the rescan watches it anew."""
    inbox = tmp_path / "scanner"
    config = write_config(
        tmp_path,
        api.url,
        spool=None,
        state_dir=str(tmp_path / "state"),
        inboxes=[{"path": str(inbox), "conversation_id": "conv_x"}],
        rescan_interval=1,
    )
    copy_sample("document.pdf", inbox, "a.pdf")
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("file_sent")
    shutil.rmtree(inbox)
    inbox.mkdir()
    [added] = daemon.wait_event("inbox_added")
    assert (added["inbox"], added["recreated"]) == ("scanner", True)
    copy_sample("image.png", inbox, "b.png")  # found by its event, or by a rescan
    daemon.wait_event("file_sent", count=2)
    assert daemon.stop() == 0
    assert _sent_names(inbox) == ["b.png"]
    assert not events(daemon.lines, "claim_failed")


def test_a_claim_folder_deleted_by_hand_is_made_again(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Deleting an inbox's .sendseven-watch while running does not block its next files."""
    config = write_config(tmp_path, api.url, rescan_interval=3600)
    inbox = tmp_path / "spool" / "conv_a"
    copy_sample("document.pdf", inbox, "a.pdf")
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("file_sent")
    shutil.rmtree(inbox / ".sendseven-watch")
    copy_sample("image.png", inbox, "b.png")
    daemon.wait_event("file_sent", count=2)
    assert daemon.stop() == 0
    assert _sent_names(inbox) == ["a.pdf", "b.png"]
    assert not events(daemon.lines, "claim_failed")


def test_a_reload_reaches_files_still_settling(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A file dropped before a SIGHUP that moved its inbox's conversation goes to the new one."""
    inbox = tmp_path / "scanner"
    inbox.mkdir()

    def configure(conversation: str) -> Path:
        return write_config(
            tmp_path,
            api.url,
            spool=None,
            state_dir=str(tmp_path / "state"),
            inboxes=[{"path": str(inbox), "conversation_id": conversation}],
            settle_seconds=3,
        )

    daemon = Daemon(configure("conv_old"))
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    copy_sample("document.pdf", inbox, "a.pdf")  # settles for 3 s
    configure("conv_new")
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")
    (sent,) = daemon.wait_event("file_sent")
    assert daemon.stop() == 0
    assert sent["conversation_id"] == "conv_new"
    assert [m.conversation_id for m in api.messages()] == ["conv_new"]


def test_a_reload_that_moves_the_spool_watches_the_new_one(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """After a SIGHUP to another spool, a folder made there is an inbox at once."""
    state = str(tmp_path / "state")  # the default lives in the spool: moving it is a restart
    config = write_config(tmp_path, api.url, rescan_interval=3600, state_dir=state)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    moved = tmp_path / "new-spool"
    moved.mkdir()
    data = yaml.safe_load(config.read_text())
    data["spool"] = str(moved)
    config.write_text(yaml.safe_dump(data))
    daemon.signal(signal.SIGHUP)
    [reloaded] = daemon.wait_event("config_reloaded")
    assert "spool" in reloaded["changed"] and reloaded["restart_required"] == []
    copy_sample("document.pdf", moved / "conv_new", "a.pdf")  # found by its event only
    (sent,) = daemon.wait_event("file_sent")
    assert daemon.stop() == 0
    assert sent["conversation_id"] == "conv_new"
