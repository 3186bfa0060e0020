"""Shared fixtures: the fake API over loopback, daemons that are killed at the end, and a
guard against leaked threads. Helpers the tests import live in ``tests/helpers.py``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import structlog

from daemon.fake import FakeApi
from tests.helpers import TENANT, TOKEN, Daemon


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a non-daemon thread running."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leaked = [
            t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon
        ]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"leaked threads: {leaked}")


@pytest.fixture
def default_structlog() -> Iterator[None]:
    """structlog as it comes, whatever another test in this process configured, and
    restored after (``structlog.testing.capture_logs`` then sees every level)."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    """A fake SendSeven API on loopback that accepts TOKEN for TENANT."""
    server = FakeApi(token=TOKEN, tenant_id=TENANT).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons started in a test; whatever is still running at the end is killed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.kill()
        else:
            for stream in (daemon.process.stdout, daemon.process.stderr):
                if stream is not None and not stream.closed:
                    stream.close()
