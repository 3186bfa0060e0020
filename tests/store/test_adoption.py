"""A running daemon adopts the claims of a peer that died, without a restart."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections import defaultdict
from pathlib import Path

import pytest

from daemon.fake import FakeApi
from daemon.store.claims import WORK_DIR, Owner
from tests.helpers import DATA, Daemon, events, wait_until, write_config

INBOXES = 4
FILES_PER_INBOX = 20
#: How long the survivor may take to finish everything after its peer died, in seconds.
BOUND_SECONDS = 45.0


def _drop_all(spool: Path) -> dict[str, str]:
    """80 PDFs, each with its own bytes, dropped the careful way; sha256 -> name."""
    pdf = DATA.joinpath("document.pdf").read_bytes()
    made: dict[str, str] = {}
    for i in range(FILES_PER_INBOX):
        for box in range(INBOXES):
            inbox = spool / f"conv_{box}"
            data = pdf + f"\n%{box}-{i}\n".encode()
            temp = inbox / f".f{i:02d}.part"
            temp.write_bytes(data)
            temp.rename(inbox / f"f{i:02d}.pdf")
            made[hashlib.sha256(data).hexdigest()] = f"conv_{box}/f{i:02d}.pdf"
    return made


def _dead_owners(spool: Path) -> dict[str, int]:
    """Owner folders nobody holds a lock on, each with its number of claims."""
    dead: dict[str, int] = {}
    for box in range(INBOXES):
        for owner in (spool / f"conv_{box}" / WORK_DIR).glob("*"):
            try:
                fd = os.open(owner, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue  # adopted meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            else:
                with contextlib.suppress(FileNotFoundError):
                    dead[owner.name] = dead.get(owner.name, 0) + len(list(owner.iterdir()))
            finally:
                os.close(fd)
    return dead


def _sent(spool: Path) -> int:
    return sum(len(list((spool / f"conv_{box}" / "sent").glob("*.pdf"))) for box in range(INBOXES))


@pytest.mark.parametrize("shared_state", [False, True], ids=["own_state_dirs", "shared_state"])
def test_a_survivor_sends_every_claim_of_a_killed_peer_exactly_once(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon], shared_state: bool
) -> None:
    """SIGKILL one of two daemons mid-batch: the other adopts its claims on a rescan and
    every file goes out once (a repeat only under the same Idempotency-Key)."""
    spool = tmp_path / "spool"
    spool.mkdir()
    for box in range(INBOXES):
        (spool / f"conv_{box}").mkdir()
    configs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        state = {} if shared_state else {"state_dir": str(folder / "state")}
        configs.append(write_config(folder, api.url, spool=str(spool), rescan_interval=1, **state))
    api.faults.latency_s = 0.03
    victim, survivor = Daemon(configs[0]), Daemon(configs[1])
    daemons += [victim, survivor]
    victim.wait_event("daemon_started")
    survivor.wait_event("daemon_started")
    made = _drop_all(spool)
    victim.wait_event("file_sent", count=2)
    victim.process.kill()
    victim.process.wait(10)
    killed_at = time.monotonic()
    dead = _dead_owners(spool)
    assert sum(dead.values()) > 0, "the victim died with nothing claimed: the test proves nothing"

    wait_until(lambda: _sent(spool) == len(made), timeout=BOUND_SECONDS)
    assert time.monotonic() - killed_at < BOUND_SECONDS
    adopted = events(survivor.lines, "claims_adopted")
    assert sum(line["count"] for line in adopted) == sum(dead.values())
    assert {line["from_owner"] for line in adopted} == set(dead)
    assert survivor.process.poll() is None  # no restart
    assert survivor.stop() == 0
    assert _dead_owners(spool) == {}

    keys: dict[str, set[str | None]] = defaultdict(set)
    for message in api.messages():
        for attachment in message.attachments:
            keys[attachment.sha256].add(message.idempotency_key)
    assert set(keys) == set(made), "every file went out"
    assert all(len(k) == 1 for k in keys.values()), "a repeat used another key"


def test_adopt_leaves_a_live_owner_alone_and_names_a_dead_one(tmp_path: Path) -> None:
    """adopt() takes a released owner's claims (by owner id) and never a locked owner's."""
    (tmp_path / "a.pdf").write_bytes(b"a")
    (tmp_path / "b.pdf").write_bytes(b"b")
    live, dead, adopter = Owner("live"), Owner("dead"), Owner("adopter")
    assert live.claim(tmp_path, "a.pdf") is not None
    claim = dead.claim(tmp_path, "b.pdf")
    assert claim is not None
    assert adopter.adopt(tmp_path) == {}
    dead.release(tmp_path)  # as if it had died: its lock is gone, its claim stays
    adopted = adopter.adopt(tmp_path)
    assert list(adopted) == ["dead"]
    assert [(c.claim_id, c.name) for c in adopted["dead"]] == [(claim.claim_id, "b.pdf")]
    live.release()
    adopter.release()
