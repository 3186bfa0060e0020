"""The floor: what the steps of one file cost in this interpreter with no daemon around them.

    python bench/floor.py [--files 500]
    python bench/floor.py --sends 200 [--latency 0.02]

One thread does, for each of the ``cpu`` scenario's files (150 KB JPEGs, 10 conversations),
exactly the work the daemon must do for a file and nothing else: no threads, no queues, no
retries, no observer, no configuration:

- claim: ``rename`` into a claim folder made in advance, ``fsync`` of both folders;
- journal: the daemon's five commits (claimed, uploaded, sending, sent, archived) to sqlite
  in WAL mode with ``synchronous=FULL``, one statement each;
- classify: open, read the head, ``filetype`` on it;
- upload: the file read whole, hashed (sha256), posted as multipart/form-data through one
  kept-alive urllib3 pool (the layer under requests, as the daemon uses it);
- send: a JSON message through the same pool, with its Idempotency-Key;
- archive: ``link`` into ``sent/``, ``unlink`` the claim, ``fsync`` of ``sent/``;
- one JSON log line to a file.

Against the bundled fake API (its own process, 0 ms latency, as in the ``cpu`` scenario).
Prints the process's CPU per file (user + system) and each step's share (the thread's own
CPU clock around it). Whatever the daemon adds on top (threads, ordering, retries, the
observer, metrics) comes on top of this figure: it is the floor for the ``cpu`` target in
this interpreter on this machine. ``--sends`` measures the floor of one conversation's
ordered sends instead (see :func:`ordered_sends`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import filetype
import run as bench
import urllib3


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _journal(folder: Path, columns: str) -> sqlite3.Connection:
    """A journal as the daemon keeps it: sqlite, WAL, every commit synced."""
    db = sqlite3.connect(folder / "journal.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"CREATE TABLE claims ({columns})")
    return db


def _client(url: str) -> tuple[urllib3.HTTPConnectionPool, str, dict[str, str]]:
    """One kept-alive connection to the fake API: the pool, the URL's path, the headers."""
    pool = urllib3.connection_from_url(url, maxsize=1)
    headers = {
        "Authorization": f"Bearer {bench.TOKEN}",
        "X-Tenant-ID": bench.TENANT,
        "Accept": "application/json",
    }
    return pool, urllib3.util.parse_url(url).path or "", headers


def _post_message(
    pool: urllib3.HTTPConnectionPool,
    base: str,
    headers: dict[str, str],
    *,
    conversation_id: str,
    attachment: str,
    key: str,
) -> str:
    """POST one media message with its Idempotency-Key; the message id."""
    body = json.dumps(
        {"conversation_id": conversation_id, "message_type": "image", "attachments": [attachment]}
    ).encode()
    reply = pool.urlopen(
        "POST",
        base + "/messages",
        body=body,
        headers={**headers, "Content-Type": "application/json", "Idempotency-Key": key},
        retries=False,
    )
    if reply.status not in (200, 201):
        raise RuntimeError(f"send refused: {reply.status} {reply.data!r}")
    message: str = json.loads(reply.data)["id"]
    return message


def _one_file(
    path: Path,
    *,
    db: sqlite3.Connection,
    pool: urllib3.HTTPConnectionPool,
    base: str,
    headers: dict[str, str],
    log: TextIO,
    timed: Callable[[str, float], float],
) -> None:
    """The required steps of one file, each timed by this thread's CPU clock."""
    t = time.thread_time()
    claim_id = uuid.uuid4().hex
    claimed = path.parent / ".claims" / path.stem / path.name
    os.rename(path, claimed)
    _fsync_dir(path.parent)
    _fsync_dir(claimed.parent)
    t = timed("claim (rename, 2 fsync)", t)
    db.execute(
        "INSERT INTO claims VALUES (?, ?, ?, 'claimed', NULL, NULL, NULL, ?)",
        (claim_id, str(path.parent), path.name, time.time()),
    )
    t = timed("journal (5 commits)", t)
    with claimed.open("rb") as handle:
        kind = filetype.guess(handle.read(8192))
    assert kind is not None
    t = timed("classify", t)
    data = claimed.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    fields = {"file": (path.name, data, kind.mime)}
    reply = pool.request(
        "POST", base + "/attachments", fields=fields, headers=headers, retries=False
    )
    attachment = json.loads(reply.data)["id"]
    t = timed("upload (read, sha256, multipart POST)", t)
    for stage, column, value in (
        ("uploaded", "attachment_id", attachment),
        ("sending", "sha256", sha256),
    ):
        db.execute(
            f"UPDATE claims SET stage = ?, {column} = ?, updated_at = ?"  # noqa: S608
            " WHERE claim_id = ?",
            (stage, value, time.time(), claim_id),
        )
    t = timed("journal (5 commits)", t)
    message = _post_message(
        pool, base, headers, conversation_id=path.parent.name, attachment=attachment, key=claim_id
    )
    t = timed("send (JSON POST)", t)
    db.execute(
        "UPDATE claims SET stage = 'sent', message_id = ?, updated_at = ? WHERE claim_id = ?",
        (message, time.time(), claim_id),
    )
    t = timed("journal (5 commits)", t)
    target = path.parent / "sent" / path.name
    os.link(claimed, target)
    os.unlink(claimed)
    _fsync_dir(target.parent)
    t = timed("archive (link, unlink, fsync)", t)
    db.execute(
        "UPDATE claims SET stage = 'archived', updated_at = ? WHERE claim_id = ?",
        (time.time(), claim_id),
    )
    t = timed("journal (5 commits)", t)
    line = {"event": "file_sent", "file": path.name, "message_id": message}
    log.write(json.dumps(line) + "\n")
    log.flush()
    timed("log line", t)


def ordered_sends(sends: int, latency: float) -> int:
    """``--sends``: one conversation's sends one after another on one kept-alive
    connection, each after the previous reply, bare and then with the two synced journal
    commits around each (``sending`` before, ``sent`` after): the wall per send that no
    ordered sender gets under (the ``busy`` scenario's floor with this fake API)."""
    work = Path(tempfile.mkdtemp(prefix="sendseven-floor-"))
    try:
        db = _journal(work, "claim_id TEXT PRIMARY KEY, stage TEXT")
        with bench.fake_server(latency) as server:
            pool, base, headers = _client(server.url)
            data = (bench.DATA / "image.jpg").read_bytes()
            fields = {"file": ("image.jpg", data, "image/jpeg")}
            reply = pool.request(
                "POST", base + "/attachments", fields=fields, headers=headers, retries=False
            )
            attachment = json.loads(reply.data)["id"]
            for journaled in (False, True):
                started = time.monotonic()
                for _ in range(sends):
                    key = uuid.uuid4().hex
                    if journaled:
                        db.execute("INSERT INTO claims VALUES (?, 'sending')", (key,))
                    _post_message(
                        pool,
                        base,
                        headers,
                        conversation_id="conv_00",
                        attachment=attachment,
                        key=key,
                    )
                    if journaled:
                        db.execute("UPDATE claims SET stage = 'sent' WHERE claim_id = ?", (key,))
                per_send = (time.monotonic() - started) / sends
                what = "with 2 synced commits each" if journaled else "bare"
                print(
                    f"{sends} ordered sends at {latency * 1000:.0f} ms, {what}: "
                    f"{per_send * 1000:.2f} ms per send ({per_send / latency:.2f}x latency)"
                )
        db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500, help="files, over 10 conversations")
    parser.add_argument(
        "--sends", type=int, default=0, help="instead: this many ordered sends (busy's floor)"
    )
    parser.add_argument("--latency", type=float, default=0.02, help="for --sends, seconds")
    args = parser.parse_args()
    if args.sends:
        return ordered_sends(args.sends, args.latency)
    work = Path(tempfile.mkdtemp(prefix="sendseven-floor-"))
    steps: Counter[str] = Counter()

    def timed(step: str, started: float) -> float:
        now = time.thread_time()
        steps[step] += now - started
        return now

    try:
        bench.make_sides(work, ["floor"], conversations=10, per_conversation=args.files // 10)
        spool = work / "floor" / "spool"
        files = sorted(path for inbox in spool.iterdir() for path in inbox.iterdir())
        for path in files:  # made in advance: the daemon makes one per claim, too
            (path.parent / ".claims" / path.stem).mkdir(parents=True)
            (path.parent / "sent").mkdir(exist_ok=True)
        db = _journal(
            work,
            "claim_id TEXT PRIMARY KEY, inbox TEXT, name TEXT, stage TEXT, attachment_id TEXT,"
            " message_id TEXT, sha256 TEXT, updated_at REAL",
        )
        log = (work / "daemon.log").open("a", encoding="utf-8")
        with bench.fake_server(0.0) as server:
            pool, base, headers = _client(server.url)
            cpu0, wall0 = _cpu(), time.monotonic()
            for path in files:
                _one_file(path, db=db, pool=pool, base=base, headers=headers, log=log, timed=timed)
            cpu, wall = _cpu() - cpu0, time.monotonic() - wall0
            sent = server.count()
        log.close()
        db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(steps.values())
    print(f"{sent} sent, one thread: wall {wall:.2f} s; CPU {cpu / sent * 1000:.2f} ms per file")
    for step, seconds in steps.most_common():
        print(f"  {seconds / sent * 1000:6.3f} ms  {seconds / total * 100:5.1f}%  {step}")
    return 0 if sent == len(files) else 1


if __name__ == "__main__":
    sys.exit(main())
