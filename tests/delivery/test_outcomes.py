"""Outcomes hands every outcome to each listener; a listener that raises stops nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from daemon.config import InboxConfig
from daemon.delivery.outcomes import Outcomes
from daemon.states import Reason, Stage
from daemon.store.journal import Entry


@pytest.fixture(autouse=True)
def _default_structlog() -> Iterator[None]:
    """capture_logs sees every level, whatever another test configured in this process."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)


class Heard:
    """An OutcomeListener that writes down what it hears."""

    def __init__(self) -> None:
        self.heard: list[tuple[object, ...]] = []

    def queued(self, inbox: InboxConfig) -> None:
        self.heard.append(("queued", inbox.name))

    def sent(self, inbox: InboxConfig, entry: Entry) -> None:
        self.heard.append(("sent", inbox.name, entry.name))

    def failed(self, inbox: InboxConfig, reason: Reason, message_type: str | None) -> None:
        self.heard.append(("failed", inbox.name, reason, message_type))

    def retried(self, inbox: InboxConfig) -> None:
        self.heard.append(("retried", inbox.name))

    def request(self, endpoint: str, status: int | None, seconds: float) -> None:
        self.heard.append(("request", endpoint, status))


class Broken(Heard):
    """A listener with a bug in every method."""

    def __getattribute__(self, name: str) -> object:
        if name in {"queued", "sent", "failed", "retried", "request"}:
            raise RuntimeError(f"bug in {name}")
        return super().__getattribute__(name)


def test_every_listener_hears_each_outcome_even_after_one_that_raises() -> None:
    """A listener that raises is logged (outcome_listener_failed) and the next one hears."""
    inbox = InboxConfig(Path("/spool/conv_1"), "conv_1", None, "conv_1")
    entry = Entry(
        claim_id="sw-1", inbox="/spool/conv_1", conversation_id="conv_1", name="a.pdf",
        stage=Stage.ARCHIVED, arrived_ns=0, claimed_at=0.0, updated_at=0.0,
    )  # fmt: skip
    heard = Heard()
    outcomes = Outcomes(Broken())
    outcomes.subscribe(heard)
    with capture_logs() as logs:
        outcomes.queued(inbox)
        outcomes.sent(inbox, entry)
        outcomes.failed(inbox, Reason.TOO_LARGE, "video")
        outcomes.retried(inbox)
        outcomes.request("messages", None, 0.1)
    assert heard.heard == [
        ("queued", "conv_1"),
        ("sent", "conv_1", "a.pdf"),
        ("failed", "conv_1", Reason.TOO_LARGE, "video"),
        ("retried", "conv_1"),
        ("request", "messages", None),
    ]
    failures = [line for line in logs if line["event"] == "outcome_listener_failed"]
    assert [line["outcome"] for line in failures] == [
        "queued", "sent", "failed", "retried", "request",
    ]  # fmt: skip
