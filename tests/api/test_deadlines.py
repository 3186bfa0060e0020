"""Every request has a wall-clock deadline that covers the reply: a trickling server
(one byte a second, so no per-read timeout ever trips) cannot hold a worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from daemon.api.client import ApiClient
from daemon.errors import Stopped, TransportError, UploadDeadline
from tests.api.trickle import Mode, TrickleServer
from tests.helpers import TENANT, TOKEN

#: connect_timeout + read_timeout: the budget of a request without a body.
BUDGET_SECONDS = 2.0
#: Well past the budget: a client still waiting then has no deadline.
HANG_SECONDS = 15.0


def _call(client: ApiClient, endpoint: str, path: Path) -> object:
    if endpoint == "attachments":
        return client.upload(path, "scan.pdf", "application/pdf")
    return client.send("conv_1", "document", ["att_1"], None, "key-1")


def _outcome(client: ApiClient, endpoint: str, path: Path) -> tuple[BaseException | None, float]:
    """Run one request on a thread; (what it raised, seconds), or fail after HANG_SECONDS."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            _call(client, endpoint, path)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            raised.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_SECONDS)
    if thread.is_alive():
        pytest.fail(f"the request still waited after {HANG_SECONDS} s")
    return (raised[0] if raised else None), time.monotonic() - started


@pytest.mark.parametrize("mode", ["headers", "body"])
@pytest.mark.parametrize("endpoint", ["attachments", "messages"])
def test_a_trickling_reply_is_cut_off_at_the_deadline(
    tmp_path: Path, endpoint: str, mode: Mode
) -> None:
    """Headers or body at one byte a second: a TransportError just after the budget."""
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"%PDF-1.4\n" + b"x" * 1000)
    with TrickleServer(**{endpoint: mode}, every=0.5) as server:  # type: ignore[arg-type]
        client = ApiClient(server.url, TOKEN, TENANT, connect_timeout=1, read_timeout=1)
        try:
            error, took = _outcome(client, endpoint, path)
        finally:
            client.close()
    assert isinstance(error, TransportError), error
    assert isinstance(error, UploadDeadline) == (endpoint == "attachments")
    assert "deadline" in str(error)
    assert BUDGET_SECONDS - 0.1 <= took < BUDGET_SECONDS + 3


def test_a_deadline_does_not_cut_the_next_request_on_the_same_connection(
    tmp_path: Path,
) -> None:
    """A request that finished in time is never cut later, nor is the one after it."""
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"%PDF-1.4\n" + b"x" * 1000)
    with TrickleServer() as server:
        client = ApiClient(server.url, TOKEN, TENANT, connect_timeout=0.3, read_timeout=0.3)
        try:
            for _ in range(3):
                client.upload(path, "scan.pdf", "application/pdf")
                time.sleep(0.4)  # past the first request's deadline
                client.send("conv_1", "document", ["att_1"], None, "key-1")
        finally:
            client.close()
    assert server.requests == ["attachments", "messages"] * 3


def test_abort_cuts_a_request_in_flight_short(tmp_path: Path) -> None:
    """A stop that waits no longer: the request raises Stopped at once, not at its deadline."""
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"%PDF-1.4\n")
    with TrickleServer(messages="body", every=0.2) as server:
        client = ApiClient(server.url, TOKEN, TENANT, connect_timeout=1, read_timeout=600)
        timer = threading.Timer(1.0, client.abort)
        timer.start()
        try:
            error, took = _outcome(client, "messages", path)
        finally:
            timer.join()
            client.close()
    assert isinstance(error, Stopped), error
    assert took < 5
