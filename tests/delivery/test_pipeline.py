"""The pipeline's own bookkeeping, in process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.config import load_config
from daemon.delivery.pipeline import Pipeline
from daemon.delivery.retry import ONCE
from daemon.errors import AuthError, AuthRefused
from daemon.store.claims import Owner
from daemon.store.journal import Journal
from tests.helpers import write_config

#: capture_logs sees every level, whatever another test configured in this process.
pytestmark = pytest.mark.usefixtures("default_structlog")


class SlowToRead:
    """``Pipeline.auth_refused``, slow to read: it widens the window between checking it
    and setting it, so that a check-then-set outside the lock is caught."""

    def __get__(self, pipeline: object, owner: type | None = None) -> object:
        value = vars(pipeline).get("_auth_refused")
        time.sleep(0.02)
        return value

    def __set__(self, pipeline: object, value: object) -> None:
        vars(pipeline)["_auth_refused"] = value


def test_workers_refused_at_once_say_auth_failed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers hearing a 401 at the same moment (--once): one auth_failed line."""
    monkeypatch.setattr(Pipeline, "auth_refused", SlowToRead(), raising=False)
    config = load_config(write_config(tmp_path, "http://127.0.0.1:9"))
    journal = Journal(config.state_dir)
    owner = Owner()
    pipeline = Pipeline(config, journal, owner, policy=ONCE)
    start = threading.Barrier(2)

    def refuse() -> None:
        start.wait()
        pipeline._refuse(AuthRefused(AuthError("Invalid token", status=401)))

    try:
        with capture_logs() as logs:
            threads = [threading.Thread(target=refuse) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
    finally:
        pipeline.stop(5)
        owner.release()
        journal.close()
    assert [line["event"] for line in logs].count("auth_failed") == 1
    assert pipeline.auth_refused is not None
