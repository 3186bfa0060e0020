"""Nothing lost, nothing sent twice: flaky APIs, lost replies, SIGKILL, wrong tokens, two
daemons — each against the fake API's fault knobs over real HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from daemon.config import load_config
from daemon.fake.api import FakeApi
from daemon.fake.rules import Faults
from daemon.store.archive import SIDECAR_DRAFT
from daemon.store.claims import Owner
from daemon.store.journal import Journal
from tests.helpers import (
    TOKEN,
    Daemon,
    events,
    inject,
    log_lines,
    run_cli,
    wait_until,
    write_config,
)


def _drop_pdfs(inbox: Path, count: int, prefix: str = "doc", start_s: int = 1_000_000) -> list[str]:
    """``count`` small PDFs whose arrival order (mtime) is their name order."""
    inbox.mkdir(parents=True, exist_ok=True)
    names = [f"{prefix}-{n:03d}.pdf" for n in range(count)]
    for n, name in enumerate(names):
        path = inbox / name
        path.write_bytes(b"%PDF-1.4\n" + name.encode() * 20)
        os.utime(path, (start_s + n, start_s + n))
    return names


def _filename(api: FakeApi) -> dict[str, str]:
    return {a.id: a.filename for a in api.attachments()}


def _assert_each_file_sent_once(api: FakeApi, conversations: dict[str, list[str]]) -> None:
    """Every file has exactly one Idempotency-Key; repeats carry it; order is kept."""
    names = _filename(api)
    keys_by_file: dict[str, set[str | None]] = defaultdict(set)
    order: dict[str, list[str]] = defaultdict(list)
    for message in api.messages():
        name = names[message.attachment_ids[0]]
        keys_by_file[(message.conversation_id, name)].add(message.idempotency_key)  # type: ignore[index]
        if not message.duplicate:
            order[message.conversation_id].append(name)
    for conversation, expected in conversations.items():
        assert order[conversation] == expected, conversation
        for name in expected:
            assert len(keys_by_file[(conversation, name)]) == 1, name  # type: ignore[index]


def test_a_flaky_api_still_gets_every_file_once_and_in_order(api: FakeApi, tmp_path: Path) -> None:
    """20% 5xx, 10% dropped connections, 429 every 7th: 60 files all sent, in order."""
    api.faults = Faults(
        error_rate=0.2, drop_rate=0.1, rate_limit_every=7, retry_after_s=0.05, seed=7
    )
    config = write_config(
        tmp_path,
        api.url,
        workers=4,
        retry={"initial_delay": 0.02, "max_delay": 0.2, "give_up_after": 300},
    )
    conversations = {
        f"conv_{c}": _drop_pdfs(tmp_path / "spool" / f"conv_{c}", 20, prefix=f"c{c}")
        for c in range(3)
    }
    result = run_cli("run", "-c", str(config), "--once", timeout=180)
    assert result.returncode == 0, result.stderr
    for conversation, names in conversations.items():
        sent = tmp_path / "spool" / conversation / "sent"
        assert sorted(p.name for p in sent.iterdir()) == names
    _assert_each_file_sent_once(api, conversations)
    assert events(
        [__import__("json").loads(x) for x in result.stdout.splitlines()], "retry_scheduled"
    )


def test_a_lost_reply_is_repeated_once_with_the_same_key(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """The server accepted the send but the reply was lost: one repeat, same key."""
    api.faults = Faults(lose_reply_rate=1.0)
    config = write_config(tmp_path, api.url, retry={"initial_delay": 1.0, "max_delay": 2})
    _drop_pdfs(tmp_path / "spool" / "conv_1", 1)
    daemon = Daemon(config)
    daemons.append(daemon)
    wait_until(
        lambda: any(r.path.endswith("/messages") and r.status == 502 for r in api.requests()),
        timeout=30,
        step=0.01,
    )
    api.faults = Faults()
    daemon.wait_event("file_sent")
    assert daemon.stop() == 0
    messages = api.messages()
    assert len(messages) == 2
    assert messages[0].idempotency_key == messages[1].idempotency_key
    assert [m.duplicate for m in messages] == [False, True]
    [retry] = events(daemon.lines, "retry_scheduled")
    assert retry["status"] == 502


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon], seed: int
) -> None:
    """Killed -9 several times mid-batch: after a last run every file is sent exactly once."""
    rng = random.Random(seed)
    api.faults = Faults(latency_s=0.01, upload_latency_s=0.02, seed=seed)
    config = write_config(tmp_path, api.url, workers=3, settle_seconds=0.1)
    conversations = {
        "conv_a": _drop_pdfs(tmp_path / "spool" / "conv_a", 50, prefix="a"),
        "conv_b": _drop_pdfs(tmp_path / "spool" / "conv_b", 50, prefix="b"),
    }
    for _ in range(4):
        daemon = Daemon(config)
        daemons.append(daemon)
        time.sleep(rng.uniform(0.3, 1.5))
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(10)
    final = run_cli("run", "-c", str(config), "--once", timeout=120)
    assert final.returncode == 0, final.stderr
    for conversation, names in conversations.items():
        inbox = tmp_path / "spool" / conversation
        assert sorted(p.name for p in (inbox / "sent").iterdir()) == names
        assert not [p for p in inbox.iterdir() if p.is_file()]
        assert not (inbox / "failed").exists()
        leftovers = [p for p in (inbox / ".sendseven-watch").rglob("*") if p.is_file()]
        assert leftovers == []
    _assert_each_file_sent_once(api, conversations)


def test_a_refused_token_fails_nothing_and_recovers_without_restart(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """401: auth_failed is logged, no file fails; once the token works, all go out."""
    api.accept_tokens("the-new-token")
    config = write_config(tmp_path, api.url, retry={"initial_delay": 0.1, "max_delay": 0.5})
    names = _drop_pdfs(tmp_path / "spool" / "conv_1", 5)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("auth_failed")
    time.sleep(1.0)
    assert not events(daemon.lines, "file_sent") and not events(daemon.lines, "file_failed")
    api.accept_tokens(TOKEN)
    daemon.wait_event("file_sent", count=5)
    assert daemon.stop() == 0
    assert events(daemon.lines, "auth_restored")
    assert not events(daemon.lines, "file_failed")
    assert sorted(p.name for p in (tmp_path / "spool" / "conv_1" / "sent").iterdir()) == names


def test_two_daemons_on_one_spool_send_each_file_once(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Two processes racing on the same folders: 60 files, each sent exactly once."""
    api.faults = Faults(latency_s=0.005)
    config = write_config(tmp_path, api.url, settle_seconds=0.2)
    first, second = Daemon(config), Daemon(config)
    daemons.extend([first, second])
    first.wait_event("daemon_started")
    second.wait_event("daemon_started")
    conversations = {
        f"conv_{c}": _drop_pdfs(
            tmp_path / "spool" / f"conv_{c}", 20, prefix=f"c{c}", start_s=int(time.time()) - 100
        )
        for c in range(3)
    }
    wait_until(
        lambda: (
            sum(
                len(list((tmp_path / "spool" / c / "sent").glob("*")))
                for c in conversations
                if (tmp_path / "spool" / c / "sent").exists()
            )
            == 60
        ),
        timeout=60,
    )
    assert first.stop() == 0
    assert second.stop() == 0
    messages = [m for m in api.messages() if not m.duplicate]
    assert len(messages) == 60
    assert len({m.idempotency_key for m in messages}) == 60
    names = _filename(api)
    assert len({(m.conversation_id, names[m.attachment_ids[0]]) for m in messages}) == 60
    assert events(first.lines, "file_sent") and events(second.lines, "file_sent")


def test_sighup_with_a_new_token_resumes_the_paused_files(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Files paused behind a refused token go out after a reload brings the right one."""
    import yaml

    api.accept_tokens("rotated-token-2")
    config = write_config(tmp_path, api.url, retry={"initial_delay": 5, "max_delay": 30})
    names = _drop_pdfs(tmp_path / "spool" / "conv_1", 3)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("auth_failed")
    data = yaml.safe_load(config.read_text())
    data["api"]["token"] = "rotated-token-2"
    config.write_text(yaml.safe_dump(data))
    daemon.signal(signal.SIGHUP)
    [reloaded] = daemon.wait_event("config_reloaded")
    assert reloaded["changed"] == ["api"]
    daemon.wait_event("file_sent", count=3, timeout=20)
    assert daemon.stop() == 0
    assert sorted(p.name for p in (tmp_path / "spool" / "conv_1" / "sent").iterdir()) == names
    assert "rotated-token-2" not in "".join(daemon.raw)


def test_a_reload_whose_token_is_refused_too_says_so_again(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """auth_failed once per refusal, and again when the reloaded token is refused too."""
    import yaml

    api.accept_tokens("the-right-token")
    config = write_config(tmp_path, api.url, retry={"initial_delay": 5, "max_delay": 30})
    _drop_pdfs(tmp_path / "spool" / "conv_1", 1)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("auth_failed")
    data = yaml.safe_load(config.read_text())
    for count, token in ((2, "another-wrong-token"), (None, "the-right-token")):
        data["api"]["token"] = token
        config.write_text(yaml.safe_dump(data))
        daemon.signal(signal.SIGHUP)
        if count is not None:
            daemon.wait_event("auth_failed", count=count)
    daemon.wait_event("file_sent", timeout=20)
    assert daemon.stop() == 0
    assert len(events(daemon.lines, "auth_failed")) == 2
    assert len(events(daemon.lines, "auth_restored")) == 1


#: A bug in the classifier that hits one file name only (see ``inject``).
_BUG_FOR_BOOM = (
    "import daemon.media.classify as classify\n"
    "real = classify.classify_file\n"
    "def classify_file(path):\n"
    "    if path.name == 'boom.pdf':\n"
    "        raise RuntimeError('injected bug')\n"
    "    return real(path)\n"
    "classify.classify_file = classify_file\n"
)


def test_once_leaves_a_file_that_hits_a_bug_claimed_and_exits_1(
    api: FakeApi, tmp_path: Path
) -> None:
    """--once does not wait forever on a broken file: the rest goes out, it stays claimed."""
    spool = tmp_path / "spool"
    _drop_pdfs(spool / "conv_1", 1, prefix="boom")  # boom-000.pdf, renamed below
    (spool / "conv_1" / "boom-000.pdf").rename(spool / "conv_1" / "boom.pdf")
    later = _drop_pdfs(spool / "conv_1", 2, prefix="later", start_s=2_000_000)
    others = _drop_pdfs(spool / "conv_2", 3)
    config = write_config(tmp_path, api.url)
    env = inject(tmp_path / "inject", _BUG_FOR_BOOM)

    result = run_cli("run", "-c", str(config), "--once", env=env)

    assert result.returncode == 1, result.stderr
    (error,) = events(log_lines(result.stdout), "file_error")
    assert (error["file"], error["attempt"], error["retry_in_s"]) == ("boom.pdf", 1, None)
    assert sorted(p.name for p in (spool / "conv_2" / "sent").iterdir()) == others
    # Order is kept: nothing after the broken file went out; nothing was failed or lost.
    assert not any(m.conversation_id == "conv_1" for m in api.messages())
    assert not (spool / "conv_1" / "failed").exists()
    claimed = {p.name for p in (spool / "conv_1" / ".sendseven-watch").rglob("*.pdf")}
    assert "boom.pdf" in claimed

    # Once the bug is gone, the next run sends what was left, in order.
    again = run_cli("run", "-c", str(config), "--once")
    assert again.returncode == 0, again.stderr
    _assert_each_file_sent_once(api, {"conv_1": ["boom.pdf", *later], "conv_2": others})


def test_a_file_that_keeps_hitting_a_bug_fails_after_give_up_after(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Retried with a growing wait; after give_up_after it is failed, and its conversation
    goes on."""
    inbox = tmp_path / "spool" / "conv_1"
    _drop_pdfs(inbox, 1, prefix="boom")
    (inbox / "boom-000.pdf").rename(inbox / "boom.pdf")
    later = _drop_pdfs(inbox, 2, prefix="later", start_s=2_000_000)
    config = write_config(tmp_path, api.url, retry={"give_up_after": 1})
    daemon = Daemon(config, env=inject(tmp_path / "inject", _BUG_FOR_BOOM))
    daemons.append(daemon)

    (failed,) = daemon.wait_event("file_failed", timeout=30)
    daemon.wait_event("file_sent", count=2)
    assert daemon.stop() == 0

    (error, *_) = events(daemon.lines, "file_error")
    assert (error["file"], error["attempt"]) == ("boom.pdf", 1)
    assert 2.5 <= error["retry_in_s"] <= 5.0  # RETRY_BROKEN_SECONDS, with jitter
    assert (failed["file"], failed["reason"]) == ("boom.pdf", "retries_exhausted")
    sidecar = json.loads((inbox / "failed" / "boom.pdf.error.json").read_text())
    assert sidecar["reason"] == "retries_exhausted"
    assert "RuntimeError: injected bug" in sidecar["detail"]
    assert [p.name for p in sorted((inbox / "sent").iterdir())] == later
    _assert_each_file_sent_once(api, {"conv_1": later})


#: The same bug, but only the first time the file is looked at.
_BUG_ONCE_FOR_BOOM = _BUG_FOR_BOOM.replace(
    "    if path.name == 'boom.pdf':\n",
    "    if path.name == 'boom.pdf' and not getattr(classify, 'hit', False):\n"
    "        classify.hit = True\n",
)


def test_an_oldest_file_that_hit_a_bug_once_is_retried_while_later_ones_hold_the_slots(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """The retry of a conversation's oldest file runs even when its later files, uploaded
    meanwhile, hold every in-flight slot: the conversation (and the others) go on."""
    inbox = tmp_path / "spool" / "conv_1"
    _drop_pdfs(inbox, 1, prefix="boom")
    (inbox / "boom-000.pdf").rename(inbox / "boom.pdf")
    later = _drop_pdfs(inbox, 8, prefix="later", start_s=2_000_000)
    config = write_config(tmp_path, api.url, workers=4)
    daemon = Daemon(config, env=inject(tmp_path / "inject", _BUG_ONCE_FOR_BOOM))
    daemons.append(daemon)

    daemon.wait_event("file_error")
    daemon.wait_event("file_sent", count=9, timeout=30)
    other = tmp_path / "spool" / "conv_2"
    others = _drop_pdfs(other, 1)
    daemon.wait_event("file_sent", count=10, timeout=30)
    assert daemon.stop() == 0
    _assert_each_file_sent_once(api, {"conv_1": ["boom.pdf", *later], "conv_2": others})


def _uploads(api: FakeApi) -> int:
    """Upload requests the API answered (whatever it answered)."""
    return sum(1 for r in api.requests() if r.path.endswith("/attachments"))


def test_a_retry_after_longer_than_give_up_after_is_waited_out(
    api: FakeApi, tmp_path: Path
) -> None:
    """One 429 whose Retry-After outlasts give_up_after: waited out, tried again, sent."""
    api.faults = Faults(retry_after_s=2.0)
    api.force(429)
    config = write_config(tmp_path, api.url, retry={"give_up_after": 1})
    inbox = tmp_path / "spool" / "conv_1"
    _drop_pdfs(inbox, 1)
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    lines = log_lines(result.stdout)
    [retry] = events(lines, "retry_scheduled")
    assert (retry["status"], retry["delay_s"]) == (429, 2.0)
    assert not events(lines, "file_failed")
    assert [p.name for p in (inbox / "sent").iterdir()] == ["doc-000.pdf"]


def test_a_backoff_longer_than_give_up_after_is_cut_to_the_deadline(
    api: FakeApi, tmp_path: Path
) -> None:
    """A 503 whose backoff would outlast give_up_after is retried at the deadline: sent."""
    api.force(503)
    retry = {"initial_delay": 20, "max_delay": 40, "give_up_after": 1}
    config = write_config(tmp_path, api.url, retry=retry)
    inbox = tmp_path / "spool" / "conv_1"
    _drop_pdfs(inbox, 1)
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    lines = log_lines(result.stdout)
    [scheduled] = events(lines, "retry_scheduled")
    assert scheduled["status"] == 503
    assert 0 < scheduled["delay_s"] <= 1
    assert not events(lines, "file_failed")
    assert [p.name for p in (inbox / "sent").iterdir()] == ["doc-000.pdf"]


def test_a_file_gives_up_only_after_a_last_attempt_at_the_deadline(
    api: FakeApi, tmp_path: Path
) -> None:
    """Constant 503s and a long backoff: one more attempt at give_up_after, then failed."""
    api.faults = Faults(error_rate=1.0)
    retry = {"initial_delay": 20, "max_delay": 40, "give_up_after": 1}
    config = write_config(tmp_path, api.url, retry=retry)
    inbox = tmp_path / "spool" / "conv_1"
    _drop_pdfs(inbox, 1)
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    [failed] = events(log_lines(result.stdout), "file_failed")
    assert failed["reason"] == "retries_exhausted"
    assert failed["attempts"] == _uploads(api) == 2
    sidecar = json.loads((inbox / "failed" / "doc-000.pdf.error.json").read_text())
    assert (sidecar["reason"], sidecar["attempts"]) == ("retries_exhausted", 2)


def test_the_give_up_clock_survives_a_sigkill(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Killed -9 while retrying: the next run keeps the first failure's time and gives up."""
    api.faults = Faults(error_rate=1.0)
    retry = {"initial_delay": 1, "max_delay": 1, "give_up_after": 3}
    config = write_config(tmp_path, api.url, retry=retry)
    inbox = tmp_path / "spool" / "conv_1"
    _drop_pdfs(inbox, 1)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("retry_scheduled")
    daemon.kill()
    time.sleep(3.5)  # give_up_after has passed since the first failure
    api.faults = Faults()
    api.force(503)
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    [failed] = events(log_lines(result.stdout), "file_failed")
    assert failed["reason"] == "retries_exhausted"
    assert failed["attempts"] == _uploads(api)
    assert not api.messages()
    sidecar = json.loads((inbox / "failed" / "doc-000.pdf.error.json").read_text())
    assert sidecar["reason"] == "retries_exhausted"


def test_time_behind_a_refused_token_does_not_count_after_a_sigkill(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A 503, then a refused token for longer than give_up_after, then kill -9: the next
    run still retries the file instead of giving it up."""
    api.accept_tokens("some-other-token")
    api.force(503)  # answered before the token is looked at
    retry = {"initial_delay": 0.3, "max_delay": 0.5, "give_up_after": 4}
    config = write_config(tmp_path, api.url, retry=retry)
    inbox = tmp_path / "spool" / "conv_1"
    _drop_pdfs(inbox, 1)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("auth_failed")
    time.sleep(5.5)  # behind the closed gate, longer than give_up_after
    daemon.kill()
    assert not events(daemon.lines, "file_failed")
    api.accept_tokens(TOKEN)
    api.force(503)
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stderr
    lines = log_lines(result.stdout)
    assert not events(lines, "file_failed")
    assert [r["status"] for r in events(lines, "retry_scheduled")] == [503]
    assert [p.name for p in (inbox / "sent").iterdir()] == ["doc-000.pdf"]


def test_a_file_changed_during_its_upload_is_classified_and_uploaded_again(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Written to while it uploads: it waits to stand still, is re-classified and uploaded
    again, and that is no failed attempt (no retry_scheduled)."""
    api.faults = Faults(upload_latency_s=3.0)  # holds the first upload open
    # Polling: on inotify a file still open for writing is not even claimed.
    config = write_config(tmp_path, api.url, retry={"give_up_after": 1}, observer="polling")
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir(parents=True)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    claims = inbox / ".sendseven-watch"
    with (inbox / "scan.pdf").open("wb") as writer:  # open across the claim's rename
        writer.write(b"a first draft, plain text\n" * 40)
        writer.flush()
        wait_until(lambda: claims.exists() and any(claims.rglob("scan.pdf")))
        time.sleep(0.5)  # the draft's upload has started and waits for its reply
        writer.seek(0)
        writer.write(b"%PDF-1.4\n")  # now it is a PDF, and a longer one
        writer.seek(0, os.SEEK_END)
        writer.write(b"the final page\n" * 40)
        writer.flush()
    api.faults = Faults()
    [sent] = daemon.wait_event("file_sent")
    assert daemon.stop() == 0
    assert not events(daemon.lines, "retry_scheduled")
    assert not events(daemon.lines, "file_failed")
    final = (inbox / "sent" / "scan.pdf").read_bytes()
    assert (sent["content_type"], sent["message_type"]) == ("application/pdf", "document")
    assert sent["size"] == len(final)
    assert sent["attempts"] == 3  # the changed upload, the upload, the send
    draft, upload = api.attachments()
    assert draft.content_type == "text/plain"
    assert upload.content_type == "application/pdf"
    assert upload.sha256 == hashlib.sha256(final).hexdigest() == sent["sha256"]
    [message] = api.messages()
    assert message.attachment_ids == (upload.id,)


def test_a_file_failed_just_before_a_crash_keeps_its_reason_and_status(
    api: FakeApi, tmp_path: Path
) -> None:
    """Journaled as failed, killed before the move: the next run archives it as failed."""
    config_path = write_config(tmp_path, api.url)
    config = load_config(config_path)
    inbox = tmp_path / "spool" / "conv_1"
    _drop_pdfs(inbox, 1)
    # What a run killed inside fail() leaves: the claim, journaled as failed, not moved.
    owner, journal = Owner(), Journal(config.state_dir)
    claim = owner.claim(inbox, "doc-000.pdf")
    assert claim is not None
    journal.record_claim(claim.claim_id, inbox, "conv_1", "doc-000.pdf", 1)
    journal.update(
        claim.claim_id,
        stage="failed",
        reason="conversation_not_found",
        detail="no conversation conv_1",
        status=404,
    )
    journal.close()
    owner.release()

    result = run_cli("run", "-c", str(config_path), "--once")

    assert result.returncode == 0, result.stdout
    sidecar = json.loads((inbox / "failed" / "doc-000.pdf.error.json").read_text())
    assert (sidecar["reason"], sidecar["status"]) == ("conversation_not_found", 404)
    (failed,) = events(log_lines(result.stdout), "file_failed")
    assert (failed["reason"], failed["status"]) == ("conversation_not_found", 404)
    assert api.requests() == []


def _crashed_after_archiving(tmp_path: Path, api: FakeApi, stage: str, **journaled: Any) -> Path:
    """What a run killed between archiving a file and logging it leaves: an empty claim
    folder, the journal at ``stage``, the file already in sent/ or failed/."""
    config_path = write_config(tmp_path, api.url)
    config = load_config(config_path)
    inbox = tmp_path / "spool" / "conv_1"
    _drop_pdfs(inbox, 1)
    owner, journal = Owner(), Journal(config.state_dir)
    claim = owner.claim(inbox, "doc-000.pdf")
    assert claim is not None
    journal.record_claim(claim.claim_id, inbox, "conv_1", "doc-000.pdf", 1)
    journal.update(claim.claim_id, stage=stage, **journaled)
    if stage == "failed":
        (claim.folder / SIDECAR_DRAFT).write_text('{"reason": "conversation_not_found"}\n')
    (inbox / stage).mkdir()
    claim.path.rename(inbox / stage / "doc-000.pdf")
    journal.close()
    owner.release()
    return config_path


def test_a_send_archived_just_before_a_crash_is_still_reported_once(
    api: FakeApi, tmp_path: Path
) -> None:
    """The file reached sent/, the run died before saying so: the next run logs it."""
    config = _crashed_after_archiving(
        tmp_path, api, "sent", attachment_id="att_1", message_id="msg_1", size=42, attempts=2
    )
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stdout
    (sent,) = events(log_lines(result.stdout), "file_sent")
    assert (sent["file"], sent["message_id"], sent["recovered"]) == ("doc-000.pdf", "msg_1", True)
    assert api.requests() == []  # nothing is sent again
    again = run_cli("run", "-c", str(config), "--once")
    assert not events(log_lines(again.stdout), "file_sent")  # and said only once
    assert not list((tmp_path / "spool" / "conv_1" / ".sendseven-watch").rglob("sw-*"))


def test_a_failure_archived_just_before_a_crash_gets_its_sidecar_and_its_line(
    api: FakeApi, tmp_path: Path
) -> None:
    """The file reached failed/ without its sidecar: the next run puts it there."""
    config = _crashed_after_archiving(
        tmp_path, api, "failed", reason="conversation_not_found", status=404, detail="gone"
    )
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0, result.stdout
    (failed,) = events(log_lines(result.stdout), "file_failed")
    assert (failed["reason"], failed["status"], failed["recovered"]) == (
        "conversation_not_found",
        404,
        True,
    )
    assert failed["archived_as"] == "doc-000.pdf"
    sidecar = tmp_path / "spool" / "conv_1" / "failed" / "doc-000.pdf.error.json"
    assert json.loads(sidecar.read_text())["reason"] == "conversation_not_found"
    assert api.requests() == []


def test_a_journal_that_refuses_a_claim_leaves_the_file_in_its_inbox(
    api: FakeApi, tmp_path: Path
) -> None:
    """The journal cannot record the claim: the file goes back, --once exits 1."""
    config_path = write_config(tmp_path, api.url)
    state = load_config(config_path).state_dir
    Journal(state).close()
    with sqlite3.connect(state / "journal.sqlite3") as db:  # every new claim is refused
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON claims"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    inbox = tmp_path / "spool" / "conv_1"
    _drop_pdfs(inbox, 1)
    result = run_cli("run", "-c", str(config_path), "--once")
    assert result.returncode == 1, result.stdout
    (failed,) = events(log_lines(result.stdout), "claim_failed")
    assert failed["file"] == "doc-000.pdf"
    assert (inbox / "doc-000.pdf").exists()  # back where it was dropped, not stuck
    assert not list((inbox / ".sendseven-watch").rglob("*.pdf"))
    assert api.requests() == []


def test_an_unconfirmed_send_is_requeued_under_its_own_key(api: FakeApi, tmp_path: Path) -> None:
    """Every reply to the send lost: the file fails as unconfirmed (the sidecar names the
    key), and after requeue the API sees that key again and keeps one message; identical
    bytes dropped later are another file with another key."""
    api.faults = Faults(lose_reply_rate=1.0)
    config = write_config(
        tmp_path,
        api.url,
        retry={"initial_delay": 0.05, "max_delay": 0.1, "give_up_after": 1},
        duplicates="send",  # identical bytes dropped again below: a new file, sent
    )
    inbox = tmp_path / "spool" / "conv_1"
    _drop_pdfs(inbox, 1)

    first = run_cli("run", "-c", str(config), "--once")

    assert first.returncode == 0, first.stderr
    (failed,) = events(log_lines(first.stdout), "file_failed")
    assert (failed["reason"], failed["status"]) == ("unconfirmed", 502)
    sidecar = json.loads((inbox / "failed" / "doc-000.pdf.error.json").read_text())
    keys = {m.idempotency_key for m in api.messages()}
    assert len(api.messages()) >= 5 and len(keys) == 1
    assert sidecar["reason"] == "unconfirmed"
    assert sidecar["idempotency_key"] in keys
    assert sidecar["attachment_id"] == api.messages()[0].attachment_ids[0]

    api.faults = Faults()
    requeued = run_cli("requeue", "-c", str(config), "--reason", "unconfirmed")
    assert requeued.returncode == 0, requeued.stderr
    again = run_cli("run", "-c", str(config), "--once")

    assert again.returncode == 0, again.stderr
    (sent,) = events(log_lines(again.stdout), "file_sent")
    assert {m.idempotency_key for m in api.messages()} == keys
    assert [m.duplicate for m in api.messages()].count(False) == 1
    assert sent["message_id"] == api.messages()[0].id
    assert [p.name for p in (inbox / "sent").iterdir()] == ["doc-000.pdf"]
    assert not list((inbox / ".sendseven-watch").glob("requeued-*"))  # the marker is gone

    _drop_pdfs(inbox, 1, start_s=2_000_000)  # the same bytes, dropped again: a new file
    third = run_cli("run", "-c", str(config), "--once")
    assert third.returncode == 0, third.stderr
    newest = api.messages()[-1]
    assert not newest.duplicate and newest.idempotency_key not in keys


#: The journal refuses to record the first archive move (a full disk, a locked database).
_JOURNAL_FULL_ONCE = (
    "import sqlite3\n"
    "from daemon.store import journal\n"
    "real = journal.Journal.update\n"
    "def update(self, claim_id, **changes):\n"
    "    if changes.get('stage') == 'archived' and not getattr(journal, 'hit', False):\n"
    "        journal.hit = True\n"
    "        raise sqlite3.OperationalError('database or disk is full')\n"
    "    return real(self, claim_id, **changes)\n"
    "journal.Journal.update = update\n"
    "real_each = journal.Journal.update_each\n"
    "def update_each(self, changes):\n"
    "    for claim_id, each in changes:\n"
    "        if each.get('stage') == 'archived' and not getattr(journal, 'hit', False):\n"
    "            journal.hit = True\n"
    "            raise sqlite3.OperationalError('database or disk is full')\n"
    "    return real_each(self, changes)\n"
    "journal.Journal.update_each = update_each\n"
)


def test_a_journal_that_refuses_the_archive_move_still_gets_one_file_sent(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """The file reached sent/ but journaling that failed: the retry finishes the
    bookkeeping and logs file_sent once, never file_vanished."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    _drop_pdfs(inbox, 1)
    daemon = Daemon(config, env=inject(tmp_path / "inject", _JOURNAL_FULL_ONCE))
    daemons.append(daemon)

    daemon.wait_event("file_error")
    (sent,) = daemon.wait_event("file_sent", timeout=30)
    assert daemon.stop() == 0

    assert sent["archived_as"] == "doc-000.pdf"
    assert not events(daemon.lines, "file_vanished")
    assert [p.name for p in (inbox / "sent").iterdir()] == ["doc-000.pdf"]
    assert not list((inbox / ".sendseven-watch").rglob("sw-*"))
    journal = Journal(load_config(config).state_dir)
    assert [e.stage for e in journal.open_entries()] == []
    journal.close()
    assert len(api.messages()) == 1
