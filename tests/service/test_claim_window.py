"""The claim window end to end: the installed command, real folders, the fake API slowed
down. A backlog bigger than the window is claimed a window at a time, oldest first."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from daemon.fake.api import FakeApi
from daemon.fake.rules import Faults
from daemon.service.service import (
    CLAIM_WINDOW_ENV,
    CLAIM_WINDOW_LEAST,
    CLAIM_WINDOWS_IN_ALL,
    inbox_window,
)
from daemon.store.claims import WORK_DIR
from tests.helpers import DATA, Daemon, clean_env, inject, run_cli, write_config

WINDOW = 3


def window_env(size: int = WINDOW) -> dict[str, str]:
    env = clean_env()
    env[CLAIM_WINDOW_ENV] = str(size)
    return env


def backlog(inbox: Path, count: int) -> list[str]:
    """``count`` PDFs whose arrival order (mtime) is the reverse of their names; returned
    in arrival order."""
    inbox.mkdir(parents=True, exist_ok=True)
    pdf = (DATA / "document.pdf").read_bytes()
    names = [f"{n:03d}.pdf" for n in range(count)]
    for n, name in enumerate(names):
        path = inbox / name
        path.write_bytes(pdf + name.encode())
        os.utime(path, (1_000_000 - n, 1_000_000 - n))
    return list(reversed(names))


def claimed(inbox: Path) -> int:
    """Files claimed now: claim folders under ``<inbox>/.sendseven-watch/<owner>/``."""
    try:
        return sum(1 for owner in (inbox / WORK_DIR).iterdir() for _ in owner.iterdir())
    except FileNotFoundError:
        return 0


def waiting(inbox: Path) -> int:
    """Files still in the inbox itself, unclaimed."""
    return sum(1 for entry in inbox.iterdir() if entry.is_file())


class Watch:
    """Samples the claim folders of some inboxes until stopped: the most claimed at once."""

    def __init__(self, *inboxes: Path) -> None:
        self.inboxes = inboxes
        self.most = dict.fromkeys(inboxes, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            for inbox in self.inboxes:
                self.most[inbox] = max(self.most[inbox], claimed(inbox))

    def stop(self) -> dict[Path, int]:
        self._stop.set()
        self._thread.join()
        return self.most


def sent_names(api: FakeApi, conversation_id: str) -> list[str]:
    names = {a.id: a.filename for a in api.attachments()}
    return [
        names[m.attachment_ids[0]] for m in api.messages() if m.conversation_id == conversation_id
    ]


def test_a_backlog_bigger_than_the_window_is_sent_in_order_a_window_at_a_time(
    api: FakeApi, tmp_path: Path
) -> None:
    """run --once: every file of two inboxes is sent in arrival order, never more than the
    window claimed at once in either."""
    config = write_config(tmp_path, api.url, workers=4)
    inboxes = [tmp_path / "spool" / "conv_a", tmp_path / "spool" / "conv_b"]
    arrivals = [backlog(inbox, 12) for inbox in inboxes]
    api.faults = Faults(latency_s=0.02)
    watch = Watch(*inboxes)
    try:
        result = run_cli("run", "-c", str(config), "--once", env=window_env())
    finally:
        most = watch.stop()
    assert result.returncode == 0, result.stderr
    for inbox, arrival in zip(inboxes, arrivals, strict=True):
        assert sent_names(api, inbox.name) == arrival
        assert sorted(entry.name for entry in (inbox / "sent").iterdir()) == sorted(arrival)
        assert 1 <= most[inbox] <= WINDOW
    assert len({m.idempotency_key for m in api.messages()}) == 24


def test_the_first_send_comes_before_the_last_file_is_claimed(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Watch mode: a large inbox sends its oldest file while most of it is still unclaimed,
    and then sends all of it, in order."""
    config = write_config(tmp_path, api.url, workers=4)
    inbox = tmp_path / "spool" / "conv_1"
    arrival = backlog(inbox, 30)
    api.faults = Faults(latency_s=0.03)
    daemon = Daemon(config, env=window_env(4))
    daemons.append(daemon)
    first = daemon.wait_event("file_sent")[0]
    still_waiting = waiting(inbox)
    assert first["file"] == arrival[0]
    assert still_waiting >= 30 - 4 - 4  # the window, and a few more taken meanwhile
    daemon.wait_event("file_sent", count=30, timeout=60)
    assert daemon.stop() == 0
    assert sent_names(api, "conv_1") == arrival


def test_a_kill_mid_backlog_leaves_the_rest_unclaimed_and_the_next_run_sends_each_once(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """SIGKILL mid-backlog: files never claimed stay in the inbox (status counts them as
    waiting), the claimed ones are resumed; every file is sent, none twice."""
    config = write_config(tmp_path, api.url, workers=2)
    inbox = tmp_path / "spool" / "conv_1"
    arrival = backlog(inbox, 20)
    api.faults = Faults(latency_s=0.05)
    daemon = Daemon(config, env=window_env())
    daemons.append(daemon)
    daemon.wait_event("file_sent")
    daemon.kill()
    left, taken = waiting(inbox), claimed(inbox)
    assert taken <= WINDOW
    assert left >= 20 - 1 - WINDOW - 2  # a few more may have gone before the kill landed
    status = run_cli("status", "-c", str(config), "--json")
    assert status.returncode == 0, status.stderr
    assert f'"waiting": {left}' in status.stdout
    again = run_cli("run", "-c", str(config), "--once", env=window_env())
    assert again.returncode == 0, again.stderr
    assert sorted(entry.name for entry in (inbox / "sent").iterdir()) == sorted(arrival)
    assert waiting(inbox) == 0
    sent = sent_names(api, "conv_1")
    assert list(dict.fromkeys(sent)) == arrival  # a repeat only where the kill fell mid-send
    keys = [m.idempotency_key for m in api.messages() if not m.duplicate]
    assert len(keys) == len(set(keys)) == 20


_BUG_FOR_BOOM = (
    "import daemon.media.classify as classify\n"
    "real = classify.classify_file\n"
    "def classify_file(path):\n"
    "    if path.name == '019.pdf':\n"
    "        raise RuntimeError('injected bug')\n"
    "    return real(path)\n"
    "classify.classify_file = classify_file\n"
)


def test_once_ends_when_a_file_error_leaves_its_inbox_window_full(
    api: FakeApi, tmp_path: Path
) -> None:
    """run --once: a file error stalls its conversation with its window full; the run still
    ends (exit 1), the other inbox is sent, and the next run sends the rest in order."""
    config = write_config(tmp_path, api.url, workers=2)
    broken, fine = tmp_path / "spool" / "conv_a", tmp_path / "spool" / "conv_b"
    arrival = backlog(broken, 8)
    for path in broken.iterdir():  # make its oldest file the broken one
        if path.name == arrival[0]:
            path.rename(broken / "019.pdf")
    arrival[0] = "019.pdf"
    others = backlog(fine, 6)
    env = window_env()
    env.update(inject(tmp_path / "inject", _BUG_FOR_BOOM))
    result = run_cli("run", "-c", str(config), "--once", env=env, timeout=60)
    assert result.returncode == 1, result.stderr
    assert sent_names(api, "conv_b") == others
    assert sent_names(api, "conv_a") == []
    assert claimed(broken) == WINDOW
    assert waiting(broken) == 8 - WINDOW
    again = run_cli("run", "-c", str(config), "--once", env=window_env())
    assert again.returncode == 0, again.stderr
    assert sent_names(api, "conv_a") == arrival


def test_many_inboxes_share_the_windows_of_all() -> None:
    """Up to CLAIM_WINDOWS_IN_ALL inboxes, each has the whole window; beyond, an even share
    of that many windows, never below CLAIM_WINDOW_LEAST (nor above the window itself)."""
    window = 512
    assert inbox_window(window, 1) == window
    assert inbox_window(window, CLAIM_WINDOWS_IN_ALL) == window
    assert inbox_window(window, 100) == window * CLAIM_WINDOWS_IN_ALL // 100
    assert inbox_window(window, 100_000) == CLAIM_WINDOW_LEAST
    assert inbox_window(2, 100_000) == 2  # a window smaller than the least stays as it is


def test_a_backlog_in_many_inboxes_claims_each_inbox_its_share(
    api: FakeApi, tmp_path: Path
) -> None:
    """run --once over twice CLAIM_WINDOWS_IN_ALL inboxes with a backlog each: no inbox ever
    has more than its share claimed (half the window here), and every file is sent, in
    order."""
    window, inboxes_count, per_inbox = 2 * CLAIM_WINDOW_LEAST, 2 * CLAIM_WINDOWS_IN_ALL, 6
    share = inbox_window(window, inboxes_count)
    assert share == CLAIM_WINDOW_LEAST < per_inbox < window
    config = write_config(tmp_path, api.url, workers=4)
    inboxes = [tmp_path / "spool" / f"conv_{n:02d}" for n in range(inboxes_count)]
    arrivals = [backlog(inbox, per_inbox) for inbox in inboxes]
    api.faults = Faults(latency_s=0.02)
    watch = Watch(*inboxes)
    try:
        result = run_cli("run", "-c", str(config), "--once", env=window_env(window), timeout=90)
    finally:
        most = watch.stop()
    assert result.returncode == 0, result.stderr
    assert 1 <= max(most.values()) <= share
    for inbox, arrival in zip(inboxes, arrivals, strict=True):
        assert sent_names(api, inbox.name) == arrival
