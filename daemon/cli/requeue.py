"""``requeue``: move failed files back into their inbox, without a daemon.

Each goes back under its original name (the next free variant when it is taken), and its
sidecar is dropped; a running daemon then takes it like any new file. Failed files are
found in every archive layout (and a mix of them); a dated folder emptied is removed. A file
failed as ``unconfirmed`` (its message may exist) keeps its Idempotency-Key: a marker left
before the move hands it to the file's next claim (:mod:`daemon.store.requeued`); so does a
file failed as ``duplicate``, which is then sent anyway.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from daemon.config import Config
from daemon.errors import ConfigError
from daemon.logs import get_logger
from daemon.states import Reason
from daemon.store.archive import FAILED_DIR, move_no_overwrite, sidecar_name
from daemon.store.folders import archived_files, mirrored_depth, remove_emptied
from daemon.store.requeued import leave_key
from daemon.watch.inboxes import all_inboxes


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def requeue(config: Config, *, inbox: str | None, reason: str | None) -> int:
    """Move failed files back into their inbox; print one JSON line per file moved."""
    log = get_logger()
    if reason is not None and reason not in tuple(Reason):
        raise ConfigError("--reason", f"{reason!r} is none of {', '.join(Reason)}")
    boxes = [
        box
        for box in all_inboxes(config)
        if inbox is None or inbox in (box.name, box.conversation_id, str(box.path))
    ]
    if not boxes and inbox is not None:  # a typo must not look like "nothing to requeue"
        known = ", ".join(sorted(box.name for box in all_inboxes(config))) or "none"
        raise ConfigError("--inbox", f"no inbox is named {inbox!r} (inboxes: {known})")
    moved = 0
    for box in boxes:
        failed = box.path / FAILED_DIR
        emptied: list[Path] = []
        for folder, name in list(archived_files(failed, mirrored=mirrored_depth(box))):
            sidecar_path = folder / sidecar_name(name)
            sidecar = _read_sidecar(sidecar_path)
            if reason is not None and sidecar.get("reason") != reason:
                continue
            original = sidecar.get("file") if isinstance(sidecar.get("file"), str) else name
            key = sidecar.get("idempotency_key")
            key = key if isinstance(key, str) else None
            anyway = sidecar.get("reason") == Reason.DUPLICATE  # requeued to be sent anyway
            # Before the move: the daemon may claim the file the moment it is back.
            marker = (
                leave_key(box.path, folder / name, key, send_anyway=anyway)
                if key is not None or anyway
                else None
            )
            try:
                target = move_no_overwrite(folder / name, *_back_where(box.path, str(original)))
            except BaseException:
                if marker is not None:
                    marker.unlink(missing_ok=True)
                raise
            sidecar_path.unlink(missing_ok=True)
            emptied.append(folder)
            moved += 1
            log.info(
                "file_requeued",
                inbox=box.name,
                file=(folder / name).relative_to(failed).as_posix(),
                to=target.name,
                reason=sidecar.get("reason"),
            )
        remove_emptied(failed, emptied)
    log.info("requeue_done", files=moved)
    return 0


def _back_where(inbox: Path, original: str) -> tuple[Path, str]:
    """The folder and name a failed file goes back to: where it was dropped, its subfolder
    made again if it is gone (a file of a recursive inbox, ``2026-11/scan.pdf``), else the
    inbox itself. Only a plain relative path is trusted from the sidecar."""
    relative = PurePosixPath(original)
    parts = relative.parts
    if len(parts) > 1 and not relative.is_absolute() and ".." not in parts:
        folder = inbox.joinpath(*parts[:-1])
        if not any(part.startswith(".") for part in parts[:-1]):
            folder.mkdir(parents=True, exist_ok=True)
            return folder, parts[-1]
    return inbox, relative.name or original
