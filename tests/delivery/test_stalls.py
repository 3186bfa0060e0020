"""Nothing stalls silently: a trickling reply is cut off and retried, a stop cuts requests
off, an inbox that cannot archive holds up only itself, and a claimed file without
progress turns /healthz 503 (but refused credentials say credentials)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.delivery.pipeline import Pipeline
from daemon.delivery.retry import WATCH
from daemon.fake.api import FakeApi
from daemon.states import Stage
from daemon.store.claims import Owner
from daemon.store.journal import JOURNAL_FILE, Journal
from daemon.watch.inboxes import all_inboxes
from tests.api.trickle import Mode, TrickleServer
from tests.helpers import (
    TOKEN,
    Daemon,
    events,
    inject,
    log_lines,
    run_cli,
    unarchivable_sent,
    wait_until,
    write_config,
)
from tests.service.test_metrics import free_port, health, scrape, value


def _drop(inbox: Path, name: str) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    temp = inbox / f".{name}.part"
    temp.write_bytes(b"%PDF-1.4\n" + name.encode())
    temp.rename(inbox / name)


def _for(lines: list[dict[str, object]], name: str, inbox: str) -> list[dict[str, object]]:
    return [line for line in events(lines, name) if line.get("inbox") == inbox]


@pytest.mark.parametrize(
    ("endpoint", "mode"),
    [
        ("attachments", "headers"),
        ("attachments", "body"),
        ("messages", "headers"),
        ("messages", "body"),
    ],
)
def test_the_daemon_retries_a_trickling_reply_with_the_same_key(
    tmp_path: Path, daemons: list[Daemon], endpoint: str, mode: Mode
) -> None:
    """One byte a second of headers or body: retry_scheduled after the deadline, every
    attempt at the message with one Idempotency-Key; SIGTERM still stops at once."""
    with TrickleServer(**{endpoint: mode}, every=0.5) as server:  # type: ignore[arg-type]
        config = write_config(tmp_path, server.url, api={"connect_timeout": 1, "read_timeout": 1})
        daemon = Daemon(config)
        daemons.append(daemon)
        daemon.wait_event("daemon_started")
        _drop(tmp_path / "spool" / "conv_1", "a.pdf")
        retries = daemon.wait_event("retry_scheduled", count=2, timeout=30)
        assert all("deadline" in str(line["error"]) for line in retries)
        if endpoint == "messages":
            assert len(set(server.keys)) == 1 and len(server.keys) >= 2
        started = time.monotonic()
        assert daemon.stop(timeout=30) == 0
        assert time.monotonic() - started < 15
    inbox = tmp_path / "spool" / "conv_1"
    assert not (inbox / "a.pdf").exists() and not (inbox / "sent").exists()  # still claimed


def test_a_stop_cuts_off_a_request_still_going_after_the_stop_timeout(tmp_path: Path) -> None:
    """A reply trickling within a deadline of minutes: stop(1 s) cuts it off, every
    worker ends, the file stays claimed at its stage for the next start."""
    with TrickleServer(messages="body", every=0.2) as server:
        config = load_config(
            write_config(tmp_path, server.url, api={"connect_timeout": 1, "read_timeout": 600})
        )
        inbox_path = tmp_path / "spool" / "conv_1"
        _drop(inbox_path, "a.pdf")
        journal = Journal(config.state_dir)
        owner = Owner()
        pipeline = Pipeline(config, journal, owner, policy=WATCH)
        [inbox] = all_inboxes(config)
        pipeline.start()
        try:
            assert pipeline.take(inbox, "a.pdf", 1)
            wait_until(lambda: "messages" in server.requests, timeout=20)
            started = time.monotonic()
            assert pipeline.stop(1.0)
            took = time.monotonic() - started
            [entry] = journal.open_entries()
        finally:
            pipeline.stop(1.0)
            owner.release()
            journal.close()
    assert took < 4
    assert entry.stage == Stage.SENDING
    assert not (inbox_path / "a.pdf").exists()
    assert not (inbox_path / "sent").exists()


def test_an_inbox_that_cannot_archive_holds_up_only_itself(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """conv_bad's sent/ cannot be made (a symlink to a file: root ignores modes): its
    files keep archive_failed, while all 12 files of conv_ok are sent; once sent/ can be
    made, conv_bad's files are archived too, each sent once."""
    config = write_config(tmp_path, api.url, workers=4)
    spool = tmp_path / "spool"
    bad, ok = spool / "conv_bad", spool / "conv_ok"
    bad.mkdir()
    ok.mkdir()
    unarchivable_sent(bad)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    for n in range(6):
        _drop(bad, f"b{n}.pdf")
    daemon.wait_for(lambda lines: len(_for(lines, "archive_failed", "conv_bad")) >= 4)
    started = time.monotonic()
    for n in range(12):
        _drop(ok, f"o{n:02}.pdf")
    daemon.wait_for(lambda lines: len(_for(lines, "file_sent", "conv_ok")) == 12, timeout=30)
    assert time.monotonic() - started < 20
    assert _for(daemon.lines, "file_sent", "conv_bad") == []
    assert sorted(p.name for p in (ok / "sent").iterdir()) == [f"o{n:02}.pdf" for n in range(12)]

    (bad / "sent").unlink()
    daemon.wait_for(lambda lines: len(_for(lines, "file_sent", "conv_bad")) == 6, timeout=30)
    assert daemon.stop() == 0
    assert sorted(p.name for p in (bad / "sent").iterdir()) == [f"b{n}.pdf" for n in range(6)]
    assert len(api.messages()) == 18


def test_status_shows_the_stuck_file_and_why(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A file sent but not archivable, journaled an hour ago: ``status`` names it, its
    stage and why; a file only just stuck is not shown yet."""
    config = write_config(tmp_path, api.url)
    bad = tmp_path / "spool" / "conv_bad"
    unarchivable_sent(bad)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    _drop(bad, "a.pdf")
    daemon.wait_event("archive_failed")
    assert daemon.stop() == 0

    fresh = run_cli("status", "-c", str(config), "--json")
    assert '"stuck": null' in fresh.stdout
    state_dir = load_config(config).state_dir
    with sqlite3.connect(state_dir / JOURNAL_FILE) as db:
        db.execute("UPDATE claims SET updated_at = updated_at - 3600")
    [row] = json.loads(run_cli("status", "-c", str(config), "--json").stdout)["inboxes"]
    stuck = row["stuck"]
    assert (stuck["file"], stuck["stage"]) == ("a.pdf", "sent")
    assert stuck["idle_s"] >= 3600
    assert "sent/" in stuck["why"]
    text = run_cli("status", "-c", str(config)).stdout
    assert "stuck: a.pdf: no progress for" in text


_TINY_BOUND = "import daemon.delivery.stalls as stalls\nstalls.STALL_FLOOR_SECONDS = 2.0\n"


def _metered(tmp_path: Path, api: FakeApi, daemons: list[Daemon]) -> tuple[Daemon, str, Path]:
    port = free_port()
    config = write_config(
        tmp_path,
        api.url,
        metrics={"listen": f"127.0.0.1:{port}"},
        retry={"initial_delay": 0.05, "max_delay": 0.5, "give_up_after": 60},
    )
    daemon = Daemon(config, env=inject(tmp_path / "site", _TINY_BOUND))
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir(exist_ok=True)
    return daemon, f"http://127.0.0.1:{port}", inbox


def test_a_claim_without_progress_past_the_bound_turns_healthz_503(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """An upload taking longer than the bound (2 s here): /healthz 503 naming the inbox
    and the file, the gauge past the bound; 200 again once it is sent."""
    daemon, base, inbox = _metered(tmp_path, api, daemons)
    assert health(base)[0] == 200
    api.faults.upload_latency_s = 6.0
    _drop(inbox, "slow.pdf")
    wait_until(lambda: health(base)[0] == 503, timeout=15)
    _, body = health(base)
    reason = str(body["reason"])
    assert "no progress" in reason and "conv_1" in reason and "slow.pdf" in reason
    assert body["stuck_claims"][0]["file"] == "slow.pdf"  # type: ignore[index]
    assert value(scrape(base), "sendseven_oldest_claim_age_seconds", inbox="conv_1") > 2.0
    daemon.wait_event("file_sent", timeout=20)
    wait_until(lambda: health(base)[0] == 200, timeout=10)
    assert value(scrape(base), "sendseven_oldest_claim_age_seconds", inbox="conv_1") == 0
    assert daemon.stop() == 0


def test_refused_credentials_say_credentials_not_stuck(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Files held behind refused credentials are not stuck: /healthz names the
    credentials only, the gauge stays below the bound, and the file goes out after."""
    daemon, base, inbox = _metered(tmp_path, api, daemons)
    api.accept_tokens("other")
    _drop(inbox, "held.pdf")
    daemon.wait_event("auth_failed")
    deadline = time.monotonic() + 4  # twice the bound
    while time.monotonic() < deadline:
        status, body = health(base)
        assert status == 503
        assert "credentials" in str(body["reason"])
        assert "no progress" not in str(body["reason"]) and "stuck_claims" not in body
        assert value(scrape(base), "sendseven_oldest_claim_age_seconds", inbox="conv_1") < 2
        time.sleep(0.3)
    api.accept_tokens(TOKEN)
    daemon.wait_event("file_sent", timeout=20)
    wait_until(lambda: health(base)[0] == 200, timeout=10)
    assert daemon.stop() == 0
    assert not events(log_lines("".join(daemon.raw)), "file_error")
