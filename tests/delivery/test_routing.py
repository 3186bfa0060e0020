"""Routing by name: one folder for many conversations, the ``route`` regex picking each
file's conversation (order kept per conversation), other groups as caption placeholders,
``no_route`` for an empty capture, and a catastrophic pattern bounded."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from daemon.fake import FakeApi
from tests.helpers import Daemon, copy_sample, events, log_lines, run_cli, write_config

ROUTE = r"^(?P<conversation_id>conv_[^_]*)__(?P<invoice>[^.]+)"


def _drop(inbox: Path, name: str, mtime_s: int, sample: str = "document.pdf") -> Path:
    path = copy_sample(sample, inbox, name)
    os.utime(path, (mtime_s, mtime_s))
    return path


def _config(tmp_path: Path, api: FakeApi, inbox: Path, **inbox_keys: Any) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    entry = {"path": str(inbox), "conversation_id": "conv_erp", **inbox_keys}
    return write_config(tmp_path, api.url, inboxes=[entry], duplicates="send")


def _messages(api: FakeApi) -> dict[str, list[str | None]]:
    by_conversation: dict[str, list[str | None]] = {}
    for message in api.messages():
        if not message.duplicate:
            by_conversation.setdefault(message.conversation_id, []).append(message.text)
    return by_conversation


def test_one_folder_for_many_customers(api: FakeApi, tmp_path: Path) -> None:
    """Each file goes to the conversation its name says, in order within it, captioned
    from another group; a name that does not match goes to the inbox's own."""
    inbox = tmp_path / "erp"
    _drop(inbox, "conv_1__invoice-4711.pdf", 1_000_000)
    _drop(inbox, "conv_2__invoice-4712.pdf", 1_000_100, "image.png")
    _drop(inbox, "conv_1__invoice-4713.pdf", 1_000_200, "image.jpg")
    _drop(inbox, "summary.pdf", 1_000_300, "document.docx")
    config = _config(tmp_path, api, inbox, route=ROUTE, text="Invoice {invoice} ({filename})")

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert _messages(api) == {
        "conv_1": [
            "Invoice invoice-4711 (conv_1__invoice-4711.pdf)",
            "Invoice invoice-4713 (conv_1__invoice-4713.pdf)",
        ],
        "conv_2": ["Invoice invoice-4712 (conv_2__invoice-4712.pdf)"],
        "conv_erp": ["Invoice  (summary.pdf)"],
    }
    sent = {
        line["file"]: line["conversation_id"]
        for line in events(log_lines(result.stdout), "file_sent")
    }
    assert sent["conv_2__invoice-4712.pdf"] == "conv_2"
    assert len(list((inbox / "sent").iterdir())) == 4


def test_routing_in_watch_mode_keeps_order_per_conversation(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Dropped while the daemon runs, several files per routed conversation keep their
    order."""
    inbox = tmp_path / "erp"
    config = _config(tmp_path, api, inbox, route=ROUTE)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    samples = ["document.pdf", "image.png", "image.jpg", "document.docx"]
    for n, sample in enumerate(samples * 2):
        _drop(inbox, f"conv_{n % 2}__doc-{n}.bin", 1_000_000 + n, sample)
    daemon.wait_event("file_sent", count=8)
    assert daemon.stop() == 0
    order: dict[str, list[str]] = {}
    for line in events(daemon.lines, "file_sent"):
        order.setdefault(line["conversation_id"], []).append(line["file"])
    assert order == {
        "conv_0": [f"conv_0__doc-{n}.bin" for n in (0, 2, 4, 6)],
        "conv_1": [f"conv_1__doc-{n}.bin" for n in (1, 3, 5, 7)],
    }


def test_an_empty_conversation_group_is_no_route(api: FakeApi, tmp_path: Path) -> None:
    """A match whose conversation_id captured nothing fails as no_route, nothing sent."""
    inbox = tmp_path / "erp"
    _drop(inbox, "__invoice-1.pdf", 1_000_000)
    config = _config(tmp_path, api, inbox, route=r"^(?P<conversation_id>(conv_[0-9]+)?)__")

    result = run_cli("run", "-c", str(config), "--once")

    assert result.returncode == 0, result.stderr
    assert not api.messages()
    sidecar = json.loads((inbox / "failed" / "__invoice-1.pdf.error.json").read_text())
    assert sidecar["reason"] == "no_route"
    assert "empty" in sidecar["detail"]


def test_a_catastrophic_route_is_bounded(api: FakeApi, tmp_path: Path) -> None:
    """``(a+)+$`` on a long name gives up after the bound (no_route) instead of hanging;
    the other files of the inbox are sent."""
    inbox = tmp_path / "erp"
    long_name = "a" * 200 + ".pdf"
    _drop(inbox, long_name, 1_000_000)
    _drop(inbox, "conv_9.pdf", 1_000_100)
    config = _config(tmp_path, api, inbox, route=r"^(?P<conversation_id>conv_9|(a+)+$)")

    started = time.monotonic()
    result = run_cli("run", "-c", str(config), "--once", timeout=60)

    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    sidecar = json.loads((inbox / "failed" / f"{long_name}.error.json").read_text())
    assert sidecar["reason"] == "no_route"
    assert "took longer" in sidecar["detail"]
    assert _messages(api) == {"conv_9": [None]}


def test_check_config_refuses_a_caption_placeholder_the_route_lacks(tmp_path: Path) -> None:
    """A caption may use the route's groups, no other name."""
    inbox = tmp_path / "erp"
    inbox.mkdir()
    entry = {"path": str(inbox), "conversation_id": "c", "route": ROUTE, "text": "{customer}"}
    config = write_config(tmp_path, "http://127.0.0.1:9", inboxes=[entry])

    result = run_cli("check-config", "-c", str(config))

    assert result.returncode == 2
    assert "inboxes[0].text" in result.stderr
    assert "{customer}" in result.stderr
