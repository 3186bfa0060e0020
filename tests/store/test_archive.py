"""Claims and archive moves: atomic, never overwriting, crash-safe."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from daemon.store.archive import (
    FAILED_DIR,
    SENT_DIR,
    SIDECAR_DRAFT,
    move_no_overwrite,
    move_to_failed,
    move_to_sent,
    place_sidecar_draft,
)
from daemon.store.claims import WORK_DIR, Owner


def _drop(inbox: Path, name: str, data: bytes = b"%PDF-1.4 test") -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    path.write_bytes(data)
    return path


def test_claim_moves_the_file_into_a_hidden_claim_folder(tmp_path: Path) -> None:
    """A claimed file leaves the inbox at once, so a new file of that name can arrive."""
    _drop(tmp_path, "scan.pdf")
    owner = Owner()
    claim = owner.claim(tmp_path, "scan.pdf")
    assert claim is not None
    assert not (tmp_path / "scan.pdf").exists()
    assert claim.path.read_bytes() == b"%PDF-1.4 test"
    assert claim.path.parent.parent.parent.name == WORK_DIR
    _drop(tmp_path, "scan.pdf", b"second")
    again = owner.claim(tmp_path, "scan.pdf")
    assert again is not None and again.claim_id != claim.claim_id
    owner.release()


def test_a_file_claimed_twice_is_taken_once(tmp_path: Path) -> None:
    """Of two owners racing for one file, exactly one wins."""
    _drop(tmp_path, "a.pdf")
    first, second = Owner(), Owner()
    assert first.claim(tmp_path, "a.pdf") is not None
    assert second.claim(tmp_path, "a.pdf") is None
    first.release()
    second.release()


def test_a_vanished_claim_folder_is_made_and_locked_again_without_waiting(
    tmp_path: Path,
) -> None:
    """A deleted claim folder is made and locked anew; a lock held by another fails at once."""
    owner = Owner()
    _drop(tmp_path, "a.pdf")
    assert owner.claim(tmp_path, "a.pdf") is not None
    shutil.rmtree(tmp_path / WORK_DIR)
    squatter = Owner(owner.owner_id)  # stands for whoever locks the new folder first
    squatter.folder(tmp_path)
    _drop(tmp_path, "b.pdf")
    with pytest.raises(BlockingIOError):
        owner.claim(tmp_path, "b.pdf")
    assert (tmp_path / "b.pdf").exists()
    squatter.release()
    claim = owner.claim(tmp_path, "b.pdf")
    assert claim is not None and claim.path.read_bytes() == b"%PDF-1.4 test"
    owner.release()


def test_sent_never_overwrites(tmp_path: Path) -> None:
    """A name already in sent/ gets a numbered variant; the old file is untouched."""
    owner = Owner()
    (tmp_path / SENT_DIR).mkdir()
    (tmp_path / SENT_DIR / "scan.pdf").write_bytes(b"older")
    _drop(tmp_path, "scan.pdf", b"newer")
    claim = owner.claim(tmp_path, "scan.pdf")
    assert claim is not None
    target = move_to_sent(claim)
    assert target.name == "scan (1).pdf"
    assert (tmp_path / SENT_DIR / "scan.pdf").read_bytes() == b"older"
    assert target.read_bytes() == b"newer"
    # Empty, and kept until the outcome is journaled and logged (then dropped).
    assert list(claim.folder.iterdir()) == []
    owner.release()


def test_failed_gets_a_sidecar_next_to_it(tmp_path: Path) -> None:
    """failed/<name> comes with <name>.error.json carrying the original name."""
    owner = Owner()
    _drop(tmp_path, "logo.bmp", b"BM....")
    (tmp_path / FAILED_DIR).mkdir()
    (tmp_path / FAILED_DIR / "logo.bmp.error.json").write_text("{}")  # an orphan sidecar
    claim = owner.claim(tmp_path, "logo.bmp")
    assert claim is not None
    target = move_to_failed(claim, {"reason": "unsupported_type", "detail": "BMP"})
    assert target.name == "logo (1).bmp"
    sidecar = json.loads((tmp_path / FAILED_DIR / "logo (1).bmp.error.json").read_text())
    assert sidecar == {"reason": "unsupported_type", "detail": "BMP", "file": "logo.bmp"}
    owner.release()


def test_a_sidecar_draft_left_by_a_crash_is_put_next_to_its_file(tmp_path: Path) -> None:
    """The failed file moved, its sidecar not yet: the draft goes to the first variant
    of the name in failed/ that has no sidecar."""
    owner = Owner()
    failed = tmp_path / FAILED_DIR
    failed.mkdir()
    (failed / "logo.bmp").write_bytes(b"an older failure")
    (failed / "logo.bmp.error.json").write_text("{}")
    _drop(tmp_path, "logo.bmp", b"BM....")
    claim = owner.claim(tmp_path, "logo.bmp")
    assert claim is not None
    assert place_sidecar_draft(claim, "logo.bmp") is None  # no draft: nothing to place
    (claim.folder / SIDECAR_DRAFT).write_text('{"reason": "unsupported_type"}')
    os.rename(claim.path, failed / "logo (1).bmp")  # what the crashed run got done

    target = place_sidecar_draft(claim, "logo.bmp")

    assert target == failed / "logo (1).bmp"
    assert json.loads((failed / "logo (1).bmp.error.json").read_text()) == {
        "reason": "unsupported_type"
    }
    assert (failed / "logo.bmp.error.json").read_text() == "{}"
    assert list(claim.folder.iterdir()) == []
    owner.release()


def test_long_names_keep_room_for_the_suffix(tmp_path: Path) -> None:
    """A 255-byte name that is taken still gets a variant within the limit."""
    name = "é" * 120 + ".pdf"  # 244 bytes
    (tmp_path / "sent").mkdir()
    (tmp_path / "sent" / name).write_bytes(b"x")
    source = tmp_path / "src"
    source.write_bytes(b"y")
    target = move_no_overwrite(source, tmp_path / "sent", name)
    assert target.name.endswith(" (1).pdf")
    assert len(target.name.encode()) <= 255
    assert target.read_bytes() == b"y"


def test_a_crash_between_link_and_unlink_is_finished_not_duplicated(tmp_path: Path) -> None:
    """If the file is already linked into sent/, the move completes without a second copy."""
    sent = tmp_path / "sent"
    sent.mkdir()
    source = tmp_path / "src.pdf"
    source.write_bytes(b"data")
    os.link(source, sent / "src.pdf")  # what a SIGKILL after link(2) leaves behind
    target = move_no_overwrite(source, sent, "src.pdf")
    assert target == sent / "src.pdf"
    assert sorted(p.name for p in sent.iterdir()) == ["src.pdf"]
    assert not source.exists()


def test_a_dead_owners_claims_are_adopted(tmp_path: Path) -> None:
    """Claims of an owner whose lock is gone move to the adopter; a live owner's stay."""
    _drop(tmp_path, "a.pdf")
    _drop(tmp_path, "b.pdf")
    dead, live, adopter = Owner(), Owner(), Owner()
    claim_a = dead.claim(tmp_path, "a.pdf")
    claim_b = live.claim(tmp_path, "b.pdf")
    assert claim_a is not None and claim_b is not None
    dead.release()  # the process died: its flock is gone
    adopted = adopter.adopt_orphans(tmp_path)
    assert [(c.claim_id, c.name) for c in adopted] == [(claim_a.claim_id, "a.pdf")]
    assert adopted[0].path.read_bytes() == b"%PDF-1.4 test"
    assert claim_b.path.exists()
    live.release()
    adopter.release()
