"""``send``: files sent once through the daemon's own steps; they stay put.

No claim, no journal, no archive: the files are the caller's, so nothing is recorded
(:class:`~daemon.delivery.steps.NotRecorded`). Refused credentials stop the command, as
they stop ``run --once``. One JSON line per file on stdout (``file`` and ``message_id``,
or ``reason``); exit 0 when every file was sent.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from daemon.config import Config
from daemon.delivery.retry import ONCE, ApiGate, Attempts
from daemon.delivery.steps import NotRecorded, OutgoingFile, RunContext, api_client, send, upload
from daemon.errors import ApiMisconfigured, AuthError, AuthRefused, FileRejected, TransientError
from daemon.logs import get_logger
from daemon.store.claims import new_claim_id


class SendEvents:
    """What ``send`` says about the retries of one file: ``retry_scheduled``, naming the
    file by the path as given. Refused credentials stop ``send`` before the gate would
    close, and there is no journal to keep the give-up clock in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._log = get_logger()

    def retry_scheduled(self, attempts: Attempts, delay: float, error: TransientError) -> None:
        fields: dict[str, object] = (
            {"status": error.status} if error.status else {"error": str(error)}
        )
        self._log.warning(
            "retry_scheduled",
            file=str(self.path),
            attempt=attempts.count,
            delay_s=round(delay, 3),
            **fields,
        )

    def auth_failed(self, error: AuthError) -> None:
        """Never said: :data:`~daemon.delivery.retry.ONCE` raises AuthRefused instead."""

    def auth_restored(self) -> None:
        """Nothing to say: the gate of a ``send`` never closes."""

    def api_misconfigured(self, error: ApiMisconfigured) -> None:
        """Never said: :data:`~daemon.delivery.retry.ONCE` raises the error instead."""

    def api_restored(self) -> None:
        """Nothing to say: the gate of a ``send`` never closes."""

    def clock_moved(self, attempts: Attempts) -> None:
        """Nothing to keep: the give-up clock of a ``send`` lives as long as the command."""


def send_files(config: Config, conversation_id: str, files: list[Path], text: str | None) -> int:
    """Send each file to ``conversation_id``; 0 when all were sent, else 1."""
    client = api_client(config.api)
    context = RunContext(
        config=lambda: config,
        client=lambda: client,
        gate=ApiGate(),
        stop=threading.Event(),
        policy=ONCE,
    )
    template = text if text is not None else config.text
    all_sent = True
    try:
        for path in files:
            result: dict[str, object] = {"file": str(path)}
            try:
                result["message_id"] = _send_one(context, path, conversation_id, template)
            except FileRejected as rejected:
                result.update(
                    reason=rejected.reason, detail=rejected.detail, status=rejected.status
                )
            except AuthRefused as refused:
                result.update(
                    reason="auth_failed", detail=refused.error.detail, status=refused.error.status
                )
            all_sent = all_sent and "message_id" in result
            print(json.dumps(result, ensure_ascii=False), flush=True)
    finally:
        client.close()
    sys.stdout.flush()
    return 0 if all_sent else 1


def _send_one(context: RunContext, path: Path, conversation_id: str, template: str | None) -> str:
    """Upload and send one file; its message id. Its give-up clock starts with it."""
    file = OutgoingFile(
        path=path,
        name=path.name,
        label=str(path),
        conversation_id=conversation_id,
        caption=template,
        inbox=path.parent.name,
        idempotency_key=new_claim_id(),
        recorder=NotRecorded(),
        events=SendEvents(path),
    )
    attempts = Attempts()
    uploaded = upload(context, file, attempts)
    return send(context, file, uploaded, attempts).id
