"""Failed files whose names are near 255 bytes: the sidecar name is shortened, still findable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from daemon.fake import FakeApi
from daemon.store.archive import (
    FAILED_DIR,
    NAME_MAX,
    SIDECAR_SUFFIX,
    move_to_failed,
    sidecar_name,
)
from daemon.store.claims import Owner
from daemon.store.folders import count_archived, is_sidecar
from tests.helpers import DATA, events, log_lines, run_cli, write_config

#: 255 bytes: 3-byte characters, then ASCII up to the limit.
LONG = "ü" * 60 + "x" * (NAME_MAX - 120 - 4) + ".bmp"


def test_a_sidecar_name_is_shortened_to_fit_and_keeps_a_hash_of_the_whole_name() -> None:
    """Short names get `<name>.error.json`; long ones a cut name + hash within 255 bytes."""
    assert len(LONG.encode()) == NAME_MAX
    assert sidecar_name("scan.pdf") == "scan.pdf" + SIDECAR_SUFFIX
    short = sidecar_name(LONG)
    assert len(short.encode()) <= NAME_MAX and short.endswith(SIDECAR_SUFFIX)
    assert short.startswith(LONG[:50])
    other = LONG[:-5] + "y.bmp"  # same start, another name: another sidecar
    assert sidecar_name(other) != short
    assert is_sidecar(short, {LONG, short}) and not is_sidecar(short, {other, short})


def test_a_failed_file_with_a_255_byte_name_reaches_failed_with_its_sidecar(
    tmp_path: Path,
) -> None:
    """Two failed files of a 255-byte name each land in failed/ with their own sidecar."""
    owner = Owner()
    for data in (b"first", b"second"):
        (tmp_path / LONG).write_bytes(data)
        claim = owner.claim(tmp_path, LONG)
        assert claim is not None
        target = move_to_failed(claim, {"reason": "unsupported_type"})
        sidecar = json.loads((target.parent / sidecar_name(target.name)).read_text("utf-8"))
        assert sidecar["file"] == LONG
        assert target.read_bytes() == data
    owner.release()
    names = sorted(p.name for p in (tmp_path / FAILED_DIR).iterdir())
    assert len(names) == 4 and all(len(n.encode()) <= NAME_MAX for n in names)
    assert count_archived(tmp_path / FAILED_DIR) == 2


def test_run_fails_a_255_byte_name_once_and_requeue_finds_its_sidecar(
    api: FakeApi, tmp_path: Path
) -> None:
    """`run --once` fails a 255-byte BMP with one file_failed; requeue moves it back."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    shutil.copyfile(DATA / "image.bmp", inbox / LONG)
    result = run_cli("run", "-c", str(config), "--once", timeout=60)
    assert result.returncode == 0, result.stdout[-2000:]
    failed = events(log_lines(result.stdout), "file_failed")
    assert [(line["file"], line["reason"]) for line in failed] == [(LONG, "unsupported_type")]
    assert events(log_lines(result.stdout), "archive_failed") == []
    assert (inbox / FAILED_DIR / sidecar_name(LONG)).exists()
    requeued = run_cli("requeue", "-c", str(config))
    assert requeued.returncode == 0, requeued.stderr
    assert (inbox / LONG).exists()
    assert list((inbox / FAILED_DIR).iterdir()) == []
