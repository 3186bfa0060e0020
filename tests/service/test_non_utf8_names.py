"""A file name that is not UTF-8 (``Zo\\xeb.pdf``, Latin-1) is sent once and archived
under its own bytes, and every log line stays valid UTF-8 JSON."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from daemon.fake import FakeApi
from daemon.logs import printable
from daemon.store.archive import SENT_DIR, move_to_failed, sidecar_name
from daemon.store.claims import Owner
from daemon.store.journal import Journal
from tests.helpers import DATA, Daemon, clean_env, events, run_cli, write_config

#: ``Zoë.pdf`` written in Latin-1: not valid UTF-8.
LATIN1 = b"Zo\xeb.pdf"


def _drop(inbox: Path) -> None:
    """Copy a PDF into ``inbox`` under the Latin-1 name, the careful way."""
    temp = inbox / ".part"
    shutil.copyfile(DATA / "document.pdf", temp)
    temp.rename(inbox / os.fsdecode(LATIN1))


def _strict_lines(raw: bytes) -> list[dict[str, Any]]:
    """Every line decoded as strict UTF-8 and parsed as JSON."""
    return [json.loads(line.decode("utf-8")) for line in raw.splitlines() if line.strip()]


def test_printable_escapes_bytes_that_are_not_utf8() -> None:
    """A name's bad bytes become a visible escape; valid text is left as it is."""
    assert printable(os.fsdecode(LATIN1)) == "Zo\\xeb.pdf"
    assert printable("Zoë.pdf") == "Zoë.pdf"


def test_the_journal_keeps_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    """The journal stores and returns the name's exact bytes."""
    journal = Journal(tmp_path)
    name = os.fsdecode(LATIN1)
    journal.record_claim("sw-1", tmp_path, "conv", name, 1)
    journal.update("sw-1", archived_as=str(tmp_path / name))
    entry = journal.get("sw-1")
    journal.close()
    assert entry is not None and os.fsencode(entry.name) == LATIN1
    assert entry.archived_as == str(tmp_path / name)


def test_run_once_sends_a_latin1_name_once(api: FakeApi, tmp_path: Path) -> None:
    """`run --once`: one message, the file in sent/ under its bytes, strict UTF-8 lines."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    _drop(inbox)
    env = clean_env()
    env["PYTHONIOENCODING"] = "utf-8:strict"
    result = run_cli("run", "-c", str(config), "--once", env=env, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:]
    # text=True decoded stdout with the locale; take the bytes again to check them strictly
    lines = _strict_lines(result.stdout.encode("utf-8", "surrogateescape"))
    sent = events(lines, "file_sent")
    assert [line["file"] for line in sent] == ["Zo\\xeb.pdf"]
    assert [os.fsencode(p.name) for p in (inbox / SENT_DIR).iterdir()] == [LATIN1]
    messages = api.messages()
    assert len(messages) == 1
    assert messages[0].attachments[0].filename == "Zo\ufffd.pdf"


def test_watch_mode_sends_a_latin1_name_once(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """In watch mode the file is claimed, sent and archived once: no claim loop."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    _drop(inbox)
    daemon.wait_event("file_sent")
    time.sleep(1.5)  # a claim loop would claim it again within this
    assert daemon.stop() == 0
    raw = "".join(daemon.raw).encode("utf-8", "surrogateescape")
    lines = _strict_lines(raw)
    assert [line["event"] for line in lines if line.get("file")] == ["file_sent"]
    assert events(lines, "claim_failed") == []
    assert [os.fsencode(p.name) for p in (inbox / SENT_DIR).iterdir()] == [LATIN1]
    assert len(api.messages()) == 1


def test_a_failed_latin1_name_gets_a_sidecar_that_names_it_exactly(tmp_path: Path) -> None:
    """The sidecar is UTF-8 JSON whose `file` gives back the name's exact bytes."""
    name = os.fsdecode(LATIN1)
    (tmp_path / name).write_bytes(b"BM")
    owner = Owner()
    claim = owner.claim(tmp_path, name)
    assert claim is not None
    target = move_to_failed(claim, {"reason": "unsupported_type"})
    owner.release()
    text = (target.parent / sidecar_name(target.name)).read_bytes().decode("utf-8")
    assert os.fsencode(json.loads(text)["file"]) == LATIN1
