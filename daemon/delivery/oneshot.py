"""``send``: files sent once through the same classify/upload/send steps; they stay put.

No claim, no journal, no archive: the files are the caller's. One JSON line per file on
stdout (``file`` and ``message_id``, or ``reason``); exit 0 when every file was sent.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from daemon.api.client import ApiClient
from daemon.config import Config
from daemon.config.caption import render_caption
from daemon.delivery.retry import Attempts, AuthGate, Backoff, RetryPolicy
from daemon.errors import AuthRefused, FileRejected
from daemon.logs import get_logger
from daemon.media.classify import classify_file, extension_mismatch
from daemon.store.claims import new_claim_id


def send_files(config: Config, conversation_id: str, files: list[Path], text: str | None) -> int:
    """Send each file to ``conversation_id``; 0 when all were sent, else 1."""
    client = ApiClient.from_config(config.api)
    template = text if text is not None else config.text
    all_sent = True
    try:
        for path in files:
            result: dict[str, object] = {"file": str(path)}
            try:
                policy = _policy(config, path)
                result["message_id"] = _send_one(client, policy, path, conversation_id, template)
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


def _policy(config: Config, path: Path) -> RetryPolicy:
    """The retry policy for one file: its give-up clock starts with it."""
    log = get_logger()

    def on_retry(attempt: int, delay: float, error: Exception) -> None:
        status = getattr(error, "status", None)
        fields: dict[str, object] = {"status": status} if status else {"error": str(error)}
        log.warning(
            "retry_scheduled", file=str(path), attempt=attempt, delay_s=round(delay, 3), **fields
        )

    return RetryPolicy(
        Backoff(config.retry.initial_delay, config.retry.max_delay),
        config.retry.give_up_after,
        AuthGate(),
        threading.Event(),
        once=True,
        on_retry=on_retry,
    )


def _send_one(
    client: ApiClient,
    policy: RetryPolicy,
    path: Path,
    conversation_id: str,
    template: str | None,
) -> str:
    kind = classify_file(path)
    if kind.reason is not None or kind.message_type is None or kind.content_type is None:
        raise FileRejected(kind.reason or "unsupported_type", kind.detail or "")
    attempts = Attempts()
    content_type = kind.content_type
    mismatch = extension_mismatch(path.name, content_type)
    if mismatch is not None:
        get_logger().warning(
            "extension_mismatch", file=str(path), extension=mismatch, content_type=content_type
        )
    attachment = policy.call(lambda: client.upload(path, path.name, content_type), attempts)
    caption = render_caption(
        template,
        name=path.name,
        message_type=kind.message_type,
        content_type=content_type,
        size=kind.size,
        inbox=path.parent.name,
    )
    message_type = kind.message_type
    key = new_claim_id()
    message = policy.call(
        lambda: client.send(conversation_id, message_type, [attachment.id], caption, key),
        attempts,
    )
    return message.id
