"""Running out of file descriptors is transient: the file is retried, never failed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from daemon.fake import FakeApi
from tests.helpers import DATA, Daemon, copy_sample, events, inject, wait_until, write_config

#: A sitecustomize for the daemon: a low RLIMIT_NOFILE, and a thread that uses up every
#: descriptor while ``<folder>/hog`` exists and gives them back when ``<folder>/release``
#: appears (both looked at by path: a check must not need a descriptor).
_HOG = """
import os, resource, threading, time
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
FOLDER = {folder!r}

def hog():
    while not os.path.exists(os.path.join(FOLDER, "hog")):
        time.sleep(0.02)
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    os.rename(os.path.join(FOLDER, "hog"), os.path.join(FOLDER, "hogging"))
    while not os.path.exists(os.path.join(FOLDER, "release")):
        time.sleep(0.02)
    for fd in held:
        os.close(fd)

threading.Thread(target=hog, daemon=True).start()
"""


def test_classify_raises_on_emfile_instead_of_calling_the_file_unreadable(tmp_path: Path) -> None:
    """With every descriptor in use, classify_file raises EMFILE (no `unreadable` verdict)."""
    code = f"""
import errno, os, resource
from pathlib import Path
from daemon.media.classify import classify_file
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
try:
    verdict = classify_file(Path({str(DATA / "document.pdf")!r}))
except OSError as error:
    print("raised", errno.errorcode[error.errno])
else:
    print("verdict", verdict.reason)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "raised EMFILE", result.stderr


def test_a_file_met_by_emfile_is_retried_and_sent(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A file whose open hits EMFILE gets file_error and is sent once descriptors are back."""
    config = write_config(tmp_path, api.url, duplicates="send")
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    signals = tmp_path / "signals"
    signals.mkdir()
    env = inject(tmp_path / "site", _HOG.format(folder=str(signals)))
    daemon = Daemon(config, env=env)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    copy_sample("document.pdf", inbox, "first.pdf")  # the inbox's claim folder is locked now
    daemon.wait_event("file_sent")
    (signals / "hog").touch()
    wait_until((signals / "hogging").exists)
    copy_sample("document.pdf", inbox, "scan.pdf")
    daemon.wait_for(lambda ls: bool(events(ls, "file_error") or events(ls, "file_failed")))
    time.sleep(0.2)
    (signals / "release").touch()
    sent = daemon.wait_event("file_sent", count=2, timeout=60)
    assert [line["file"] for line in sent] == ["first.pdf", "scan.pdf"]
    assert events(daemon.lines, "file_failed") == []
    assert daemon.stop() == 0
    assert (inbox / "sent" / "scan.pdf").exists()
    assert len(api.messages()) == 2
